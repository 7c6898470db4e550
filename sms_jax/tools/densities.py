"""Layerwise densities of a model's prunable kernels for a density distribution.

  python -m sms_jax.tools.densities --model=resnet18 --dataset=cifar10 \\
      --distribution=pyramidal --density=0.01 [--json]

Prints a table (layer, shape, size, density, nonzero) in forward order and the achieved global
density (exact nonzero counts, `round(density_l * size_l)`); with --json one JSON object:
{"model", "distribution", "density", "achieved_density", "layers": [{"name", "shape", "size",
"density"}, ...]}. Nothing is trained and no data is loaded: shapes are traced abstractly.
"""

import argparse
import json
import sys
from typing import Any

import jax
import jax.numpy as jnp

from sms_jax import data, models
from sms_jax.sparsity import distributions, masks


def prunable_kernels(model_name: str, dataset_name: str) -> list[tuple[str, tuple[int, ...]]]:
  """`(path, shape)` of every prunable kernel of the model for the dataset, in forward order."""
  source = data.DATASETS[dataset_name]
  model = models.create_model(model_name, source.num_classes)
  shapes = jax.eval_shape(lambda x: model.init(jax.random.key(0), x, train=False),
                          jax.ShapeDtypeStruct((1, *source.input_shape), jnp.float32))["params"]
  flat = {masks.path_name(path): leaf
          for path, leaf in jax.tree_util.tree_leaves_with_path(shapes)}
  return [(name, tuple(flat[name].shape))
          for name in models.param_paths(model, source.input_shape)
          if masks.is_kernel(name, flat[name])]


def density_report(model_name: str, dataset_name: str, distribution: str,
                   density: float) -> dict[str, Any]:
  """The JSON object that `--json` prints."""
  kernels = prunable_kernels(model_name, dataset_name)
  shapes = [shape for _, shape in kernels]
  layer_densities = distributions.layer_densities(shapes, distribution, density)
  counts = distributions.layer_counts(shapes, layer_densities)
  sizes = [int(jnp.prod(jnp.asarray(s))) for s in shapes]
  return {"model": model_name, "distribution": distribution, "density": density,
          "achieved_density": sum(counts) / sum(sizes),
          "layers": [{"name": name, "shape": list(shape), "size": size, "density": float(d),
                      "nonzero": count}
                     for (name, shape), size, d, count in zip(kernels, sizes, layer_densities,
                                                              counts)]}


def _table(report: dict[str, Any]) -> str:
  width = max(len(layer["name"]) for layer in report["layers"])
  lines = [f"{'layer':<{width}}  {'shape':<18} {'size':>10} {'density':>8} {'nonzero':>10}"]
  for layer in report["layers"]:
    lines.append(f"{layer['name']:<{width}}  {str(tuple(layer['shape'])):<18} "
                 f"{layer['size']:>10,} {layer['density']:>8.4f} {layer['nonzero']:>10,}")
  total = sum(layer["size"] for layer in report["layers"])
  nonzero = sum(layer["nonzero"] for layer in report["layers"])
  lines.append(f"{report['distribution']} at density {report['density']:g} for "
               f"{report['model']}: {nonzero:,} of {total:,} weights, achieved density "
               f"{report['achieved_density']:.6f}")
  return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--model", required=True, help=models.MODEL_NAMES_HELP)
  parser.add_argument("--dataset", default="cifar10", help=", ".join(data.DATASETS))
  parser.add_argument("--distribution", default="erk", help=", ".join(
      distributions.DISTRIBUTIONS))
  parser.add_argument("--density", type=float, required=True, help="global density in (0, 1]")
  parser.add_argument("--json", action="store_true", help="print one JSON object")
  args = parser.parse_args(argv)
  problem = None
  if args.dataset not in data.DATASETS:
    problem = f"--dataset={args.dataset} is not allowed; allowed: {', '.join(data.DATASETS)}"
  elif not models.is_known_model(args.model):
    problem = f"--model={args.model} is not allowed; allowed: {models.MODEL_NAMES_HELP}"
  elif args.distribution not in distributions.DISTRIBUTIONS:
    problem = (f"--distribution={args.distribution} is not allowed; allowed: "
               f"{', '.join(distributions.DISTRIBUTIONS)}")
  elif not 0.0 < args.density <= 1.0:
    problem = f"--density={args.density} is not allowed; allowed: a number in (0, 1]"
  if problem is None:
    try:
      report = density_report(args.model, args.dataset, args.distribution, args.density)
    except Exception as error:  # pylint: disable=broad-except
      problem = (f"--model={args.model} cannot take {args.dataset} inputs "
                 f"({type(error).__name__}: {str(error).splitlines()[0][:120]})")
  if problem is not None:
    print(f"densities: {problem}", file=sys.stderr)
    return 2
  print(json.dumps(report) if args.json else _table(report))
  return 0


if __name__ == "__main__":
  sys.exit(main())
