"""Export a run's model to one self-contained file, and load it anywhere.

  python -m sms_jax.export --workdir=runs/demo [--phase=K] [--out=model.sms]

writes the run's final model (the last phase's soup, or the trained model of a strategy
without phases), or phase K's (0: the pretrained model before pruning), as a `.sms` file
(`sms_jax.artifact`): the model's name and classes, its variables with each pruned kernel
stored as a bit-packed mask and its alive values, the input standardisation, the recorded
metrics, the sparsity and the run's config. `sms_jax.load(path)` (`artifact.load`) returns
the Flax model, its variables and a jitted `predict(raw_inputs) -> probabilities`.

Checkpoints are only read (`checkpoints.read_verified`: checksums checked, nothing moved).
"""

import json
import os
import sys
from typing import Any

import ml_collections
import numpy as np

from sms_jax import __version__, artifact, checkpoints
from sms_jax.phases.evaluate import outcome
from sms_jax.sparsity.updater import SparsityState

__all__ = ["ExportError", "export_run"]

load = artifact.load  # `sms_jax.export.load` too.


class ExportError(ValueError):
  """A workdir, phase or output that cannot be exported (one line)."""


def _read_json(workdir: str, name: str) -> dict[str, Any] | None:
  path = os.path.join(workdir, name)
  if not os.path.exists(path):
    return None
  try:
    with open(path) as f:
      return json.load(f)
  except (OSError, ValueError) as error:
    raise ExportError(f"cannot read {path} ({type(error).__name__}: {error})") from error


def _find_masks(tree: Any) -> Any:
  """The masks inside a saved optimizer state (a sparsity updater's `SparsityState`, saved as
  a dict of its fields), or None if it has none (a dense run)."""
  if isinstance(tree, dict):
    if set(SparsityState._fields) <= set(tree):
      return tree["masks"]
    children = tree.values()
  elif isinstance(tree, (list, tuple)):
    children = tree
  else:
    return None
  return next((m for m in map(_find_masks, children) if m is not None), None)


def _compute_dtype(config: dict[str, Any], results: dict[str, Any] | None) -> str:
  """The dtype the run computed in ('auto' resolved by the platform it ran on)."""
  name = config["train"]["dtype"]
  if name != "auto":
    return name
  if results is not None:
    return "float32" if results.get("devices", {}).get("platform") == "cpu" else "bfloat16"
  from sms_jax import models  # pylint: disable=g-import-not-at-top
  return str(np.dtype(models.compute_dtype("auto")))


def _data_description(workdir: str, config: dict[str, Any]) -> dict[str, Any]:
  """The workdir's data.json; for runs that predate it, recomputed from the dataset."""
  described = _read_json(workdir, "data.json")
  if described is None:
    from sms_jax import data  # pylint: disable=g-import-not-at-top
    print(f"note: {workdir} has no data.json (written by runs since export exists); "
          "recomputing the input standardisation from the dataset", file=sys.stderr)
    described = data.load(ml_collections.ConfigDict(config["dataset"])).describe()
  if described.get("standardization") is None:
    raise ExportError(f"the input standardisation of {config['dataset']['name']} is unknown")
  return described


def _choose(workdir: str, config: dict[str, Any], results: dict[str, Any] | None,
            phase: int | None) -> tuple[str, int | None, int | None]:
  """`(checkpoint directory, its step or None for the newest, phase)` to export; phase None
  for a strategy without phases (its trained model)."""
  ckpts = os.path.join(workdir, "checkpoints")
  phases_dir = os.path.join(ckpts, "phases")
  phased = "phases" in results if results is not None else os.path.isdir(phases_dir)
  if results is None and not phased:
    raise ExportError(f"the run in {workdir} has not finished (no results.json) and has no "
                      "completed phase; run its command again to finish it")
  if not phased:
    if phase not in (None, 0):
      raise ExportError(f"--phase={phase} is not allowed: strategy {config['strategy']!r} has "
                        "no pruning phases; allowed: no --phase (its trained model)")
    return os.path.join(ckpts, "pretrain"), None, None
  kept = sorted(int(s) for s in os.listdir(phases_dir) if s.isdigit()) if os.path.isdir(
      phases_dir) else []
  if phase is None:
    if results is None:
      raise ExportError(f"the run in {workdir} has not finished (no results.json); finish it "
                        f"(run its command again) or pass --phase=K of a completed phase "
                        f"({', '.join(map(str, [0] + kept))})")
    phase = len(results["phases"])
  n = config["prune"]["n_phases"]
  if not 0 <= phase <= n:
    raise ExportError(f"--phase={phase} is not allowed; allowed: 0 (the pretrained model) to "
                      f"{n} (the last phase)")
  if phase == 0:
    return os.path.join(ckpts, "pretrain"), None, 0
  if phase not in kept:
    raise ExportError(f"phase {phase}'s model is not in {phases_dir} (it holds phases {kept}: "
                      "the phase has not completed, or the run predates keeping every phase)")
  return phases_dir, phase, phase


def export_run(workdir: str, out: str | None = None, *, phase: int | None = None
               ) -> dict[str, Any]:
  """Writes the model of run `workdir` (phase `phase`, default the final one) to `out`.

  Args:
    workdir: a run's workdir (`config.json`, checkpoints, and `results.json` once finished).
    out: the file to write; default `<workdir>/model.sms` (`model_phase<K>.sms` for a phase).
    phase: 0 (the pretrained model) to `prune.n_phases`; None: the final model.
  Returns:
    A summary: `path`, `bytes`, `dense_float32_bytes`, `phase`, `sparsity`, `metrics`.
  Raises:
    ExportError, checkpoints.CheckpointError: what cannot be exported, in one line.
  """
  config = _read_json(workdir, "config.json")
  if config is None:
    raise ExportError(f"{workdir} is not a run's workdir (no config.json)")
  results = _read_json(workdir, "results.json")
  directory, step, phase = _choose(workdir, config, results, phase)
  _, state, meta = checkpoints.read_verified(directory, step)
  if phase is None:  # A strategy without phases: its trained model.
    metrics = results["final"]
  elif phase == 0:
    metrics = results["dense"] if results else {}
  else:
    metrics = {k: v for k, v in outcome(meta["phases"][phase - 1]).items()
               if k.startswith(("val_", "test_"))}
  masks = state["masks"] if "masks" in state else _find_masks(state.get("opt_state"))
  params = state["params"]
  if masks is None:  # A dense model: nothing pruned.
    masks = artifact.unflatten({name: None for name in artifact.flatten(params)})
  variables = {"params": params, "batch_stats": state.get("batch_stats") or {}}
  described = _data_description(workdir, config)
  alive = [(name, int(np.count_nonzero(m)), int(np.size(m)))
           for name, m in artifact.flatten(masks).items() if m is not None]
  prunable = sum(size for _, _, size in alive)
  sparsity = 1.0 - sum(a for _, a, _ in alive) / prunable if prunable else 0.0
  manifest = {
      "model": {"name": config["model"]["name"], "num_classes": described["num_classes"],
                "compute_dtype": _compute_dtype(config, results),
                "input_shape": described["input_shape"]},
      "standardization": described["standardization"],
      "source": {"workdir": os.path.abspath(workdir), "strategy": config["strategy"],
                 "phase": phase, "dataset": config["dataset"]["name"], "seed": config["seed"],
                 "sms_jax_version": __version__},
      "metrics": metrics,
      "sparsity": {"sparsity": sparsity, "prunable": prunable,
                   "layers": [{"name": n, "alive": a, "size": s} for n, a, s in alive]},
      "config": config,
  }
  is_final = phase is None or (results is not None and phase == len(results["phases"]))
  out = out or os.path.join(workdir, "model.sms" if is_final else f"model_phase{phase}.sms")
  try:
    size = artifact.write(out, variables, masks, manifest)
  except OSError as error:
    raise ExportError(f"cannot write {out} ({error})") from error
  dense = 4 * sum(int(np.size(v)) for v in artifact.flatten(variables).values())
  return {"path": out, "bytes": size, "dense_float32_bytes": dense, "phase": phase,
          "sparsity": sparsity, "metrics": metrics}


def _kib(n: int) -> str:
  return f"{n / 1024:.1f} KiB" if n < 1024 ** 2 else f"{n / 1024 ** 2:.1f} MiB"


def describe(summary: dict[str, Any]) -> str:
  """The one line the command prints about what it wrote."""
  accuracy = summary["metrics"].get("test_accuracy")
  which = "the trained model" if summary["phase"] is None else f"phase {summary['phase']}"
  return (f"wrote {summary['path']}: {_kib(summary['bytes'])} (dense float32: "
          f"{_kib(summary['dense_float32_bytes'])}, "
          f"{summary['bytes'] / summary['dense_float32_bytes']:.2f}x); {which}, sparsity "
          f"{summary['sparsity']:.4f}"
          + ("" if accuracy is None else f", test accuracy {accuracy:.4f}"))


_ALLOWED = {"workdir": "a run's workdir, e.g. runs/demo",
            "phase": "0 (the pretrained model) to the run's prune.n_phases; default: final",
            "out": "a file path; default <workdir>/model.sms (model_phase<K>.sms for --phase)"}


def _flag_values():
  """The command's flags, fresh for each parse."""
  from absl import flags  # pylint: disable=g-import-not-at-top
  values = flags.FlagValues()
  flags.DEFINE_string("workdir", None, f"The run: {_ALLOWED['workdir']}.", flag_values=values)
  flags.DEFINE_integer("phase", None, f"The phase whose model to export: {_ALLOWED['phase']}.",
                       flag_values=values)
  flags.DEFINE_string("out", None, f"The file to write: {_ALLOWED['out']}.", flag_values=values)
  return values


def main(argv: list[str] | None = None) -> int:
  """The command on `argv` (without the program name; default: sys.argv[1:]): exports and
  prints one line; returns the exit code: 0, or 2 with one line on stderr."""
  from absl import logging  # pylint: disable=g-import-not-at-top
  from sms_jax.tools import cli  # pylint: disable=g-import-not-at-top
  argv = sys.argv[1:] if argv is None else argv
  if cli.wants_help(argv):
    print(f"{__doc__}\nflags:\n{_flag_values().get_help()}")
    return 0
  values, problem = cli.parse("export", argv, _flag_values(), _ALLOWED, required=("workdir",))
  if problem is None:
    logging.set_verbosity(logging.WARNING)  # Orbax is chatty at INFO.
    try:
      print(describe(export_run(values.workdir, values.out, phase=values.phase)))
      return 0
    except ValueError as error:  # ExportError, CheckpointError, ArtifactError.
      problem = str(error)
  print(f"error: {problem}", file=sys.stderr)
  return 2


if __name__ == "__main__":
  sys.exit(main())
