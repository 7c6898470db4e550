"""Layerwise densities of a model's prunable kernels for a density distribution.

  python -m sms_jax.tools.densities --model=resnet18 --dataset=cifar10 \\
      --distribution=pyramidal --density=0.01 [--json]

Prints a table (layer, shape, size, density, nonzero) in forward order and the achieved global
density (exact nonzero counts, `round(density_l * size_l)`); with --json one JSON object:
{"model", "distribution", "density", "achieved_density", "layers": [{"name", "shape", "size",
"density", "nonzero"}, ...], "warnings": [...]}. Nothing is trained and no data is loaded:
shapes are traced abstractly.

A layer is nearly empty when it keeps fewer weights than it has outputs (its kernel's last
axis: output channels, or the classifier's classes): then at least `outputs - nonzero` of
them get no weight at all (dead channels; classes predicted from their bias alone). Each such
layer is one warning line on stderr and an entry of "warnings" ({"layer", "nonzero", "size",
"outputs", "message"}). Flags are absl flags, as `sms_jax.main`'s; a bad one is one line on
stderr and exit code 2.
"""

import json
import sys
from typing import Any

from absl import flags
import jax
import jax.numpy as jnp

from sms_jax import data, models
from sms_jax.sparsity import distributions, masks
from sms_jax.tools import cli

_ALLOWED = {  # What each flag allows, for help and errors.
    "model": models.MODEL_NAMES_HELP,
    "dataset": ", ".join(data.DATASETS),
    "distribution": ", ".join(distributions.DISTRIBUTIONS),
    "density": "a number in (0, 1]",
    "json": "--json or --nojson",
}


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


def nearly_empty(layers: list[dict[str, Any]]) -> list[dict[str, Any]]:
  """The warnings for `layers` (`[{'name', 'shape', 'size', 'nonzero', ...}]`): one per layer
  that keeps fewer weights than its outputs (`shape[-1]`), see the module docstring."""
  out = []
  for layer in layers:
    outputs, nonzero = layer["shape"][-1], layer["nonzero"]
    if nonzero < outputs:
      out.append({"layer": layer["name"], "nonzero": nonzero, "size": layer["size"],
                  "outputs": outputs, "message": (
                      f"{layer['name']} keeps {nonzero} of {layer['size']} weights, fewer than "
                      f"its {outputs} outputs: at least {outputs - nonzero} of them get no "
                      "weight at all")})
  return out


def density_report(model_name: str, dataset_name: str, distribution: str,
                   density: float) -> dict[str, Any]:
  """The JSON object that `--json` prints."""
  kernels = prunable_kernels(model_name, dataset_name)
  shapes = [shape for _, shape in kernels]
  layer_densities = distributions.layer_densities(shapes, distribution, density)
  counts = distributions.layer_counts(shapes, layer_densities)
  sizes = [int(jnp.prod(jnp.asarray(s))) for s in shapes]
  layers = [{"name": name, "shape": list(shape), "size": size, "density": float(d),
             "nonzero": count}
            for (name, shape), size, d, count in zip(kernels, sizes, layer_densities, counts)]
  return {"model": model_name, "distribution": distribution, "density": density,
          "achieved_density": sum(counts) / sum(sizes), "layers": layers,
          "warnings": nearly_empty(layers)}


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


def _flag_values() -> flags.FlagValues:
  """The tool's flags, fresh for each parse (absl keeps values between parses)."""
  values = flags.FlagValues()
  flags.DEFINE_string("model", None, f"the model: {_ALLOWED['model']}", flag_values=values)
  flags.DEFINE_string("dataset", "cifar10", f"its dataset (input shape, classes): "
                      f"{_ALLOWED['dataset']}", flag_values=values)
  flags.DEFINE_string("distribution", "erk", f"the density distribution: "
                      f"{_ALLOWED['distribution']}", flag_values=values)
  flags.DEFINE_float("density", None, f"the global density: {_ALLOWED['density']}",
                     flag_values=values)
  flags.DEFINE_boolean("json", False, "print one JSON object instead of the table",
                       flag_values=values)
  return values


def _problem(values: flags.FlagValues) -> str | None:
  """What is wrong with the parsed flags' values, in one line; None if nothing."""
  if values.dataset not in data.DATASETS:
    return f"--dataset={values.dataset} is not allowed; allowed: {_ALLOWED['dataset']}"
  if not models.is_known_model(values.model):
    return f"--model={values.model} is not allowed; allowed: {_ALLOWED['model']}"
  if values.distribution not in distributions.DISTRIBUTIONS:
    return (f"--distribution={values.distribution} is not allowed; allowed: "
            f"{_ALLOWED['distribution']}")
  if not 0.0 < values.density <= 1.0:
    return f"--density={values.density:g} is not allowed; allowed: {_ALLOWED['density']}"
  return None


def main(argv: list[str] | None = None) -> int:
  """Runs the tool on `argv` (the flags, without the program name; default: sys.argv[1:]);
  returns the exit code: 0, or 2 for a bad flag (one line on stderr)."""
  argv = sys.argv[1:] if argv is None else argv
  if cli.wants_help(argv):
    print(f"{__doc__}\nflags:\n{_flag_values().get_help()}")
    return 0
  values, problem = cli.parse("densities", argv, _flag_values(), _ALLOWED,
                              required=("model", "density"))
  problem = problem or _problem(values)
  if problem is None:
    try:
      report = density_report(values.model, values.dataset, values.distribution,
                              values.density)
    except Exception as error:  # pylint: disable=broad-except
      problem = (f"--model={values.model} cannot take {values.dataset} inputs "
                 f"({type(error).__name__}: {str(error).splitlines()[0][:120]})")
  if problem is not None:
    print(f"densities: {problem}", file=sys.stderr)
    return 2
  for warning in report["warnings"]:
    print(f"densities: warning: {warning['message']}", file=sys.stderr)
  print(json.dumps(report) if values.json else _table(report))
  return 0


if __name__ == "__main__":
  sys.exit(main())
