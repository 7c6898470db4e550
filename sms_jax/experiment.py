"""One experiment from a config: validate, load data, run the strategy, write results.

Nothing is written to the workdir before the config has been validated and the data loaded,
and results.json is written last, atomically.
"""

import json
import os
import time
from typing import Any

import jax
import ml_collections

from sms_jax import config as config_lib
from sms_jax import data, models, parallel, report, strategies


class WorkdirError(ValueError):
  """The workdir cannot hold this run (not a directory, or a run of another config)."""


def resume_key(config_dict: dict[str, Any]) -> dict[str, Any]:
  """The parts of a config that must match to resume a run (checkpoint policy may differ)."""
  return {k: v for k, v in config_dict.items() if k != "checkpoint"}


def check_workdir(config_dict: dict[str, Any], workdir: str) -> None:
  """Raises WorkdirError unless `workdir` is new or holds a run of the same experiment."""
  if not workdir:
    raise WorkdirError("--workdir is empty; pass a directory, e.g. --workdir=runs/x")
  if os.path.exists(workdir) and not os.path.isdir(workdir):
    raise WorkdirError(f"workdir {workdir} exists and is not a directory")
  path = os.path.join(workdir, "config.json")
  if not os.path.exists(path):
    return
  try:
    with open(path) as f:
      previous = resume_key(json.load(f))
  except (OSError, ValueError) as error:
    raise WorkdirError(f"cannot read {path} ({error}); pass another --workdir") from error
  current = resume_key(config_dict)
  if previous != current:
    differing = sorted(_differences(previous, current))
    raise WorkdirError(f"workdir {workdir} holds a run with another config (differs in "
                       f"{', '.join(differing[:5])}); pass another --workdir or remove it")


def _differences(a: dict[str, Any], b: dict[str, Any], prefix: str = "") -> list[str]:
  out = []
  for k in set(a) | set(b):
    if isinstance(a.get(k), dict) and isinstance(b.get(k), dict):
      out += _differences(a[k], b[k], prefix + k + ".")
    elif a.get(k) != b.get(k):
      out.append(prefix + k)
  return out


def check_model_fits_data(config: ml_collections.ConfigDict, dataset: data.Dataset) -> None:
  """Raises ConfigError if the model or the augmentation cannot take the dataset's inputs."""
  shape, name = dataset.input_shape, config.model.name
  ndim = models.input_ndim(name)
  if ndim is not None and len(shape) != ndim:
    raise config_lib.ConfigError(
        f"config key model.name = {name!r} is not allowed for {config.dataset.name} inputs of "
        f"shape {list(shape)}; allowed: "
        f"{'cnn1d, mlp' if len(shape) == 2 else 'mlp and the image models (see README)'}")
  if dataset.augment in ("crop", "crop_flip", "flip") and len(shape) != 3:
    raise config_lib.ConfigError(
        f"config key dataset.augment = {config.dataset.augment!r} is not allowed for "
        f"{config.dataset.name} inputs of shape {list(shape)}; allowed: auto, none")
  model = models.create_model(name, dataset.num_classes)
  try:  # Traces the model on one abstract example: no compute, no compilation.
    jax.eval_shape(lambda x: model.init(jax.random.key(0), x, train=False),
                   jax.ShapeDtypeStruct((1, *shape), jax.numpy.float32))
  except Exception as error:  # pylint: disable=broad-except
    raise config_lib.ConfigError(
        f"config key model.name = {name!r} cannot take {config.dataset.name} inputs of shape "
        f"{list(shape)} ({type(error).__name__}: {str(error).splitlines()[0][:120]})") from error


def run(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
  """Runs the experiment `config` in `workdir`; returns what it writes to results.json."""
  start = time.perf_counter()
  config_lib.validate(config)
  config_dict = json.loads(config.to_json())
  check_workdir(config_dict, workdir)
  dataset = data.load(config.dataset)
  if config.train.batch_size > dataset.train.num_examples:
    raise config_lib.ConfigError(
        f"config key train.batch_size = {config.train.batch_size} is not allowed; allowed: at "
        f"most the {dataset.train.num_examples} training examples of {config.dataset.name}")
  check_model_fits_data(config, dataset)
  try:
    os.makedirs(workdir, exist_ok=True)
  except OSError as error:
    raise WorkdirError(f"cannot create workdir {workdir}: {error}") from error
  report.write_json(os.path.join(workdir, "config.json"), config_dict)
  try:  # With several processes, a mesh must use every process's devices.
    meshes = [parallel.candidate_mesh(m, config.train.batch_size)
              for m in (1, strategies.candidates_per_phase(config))]
  except ValueError as error:
    raise config_lib.ConfigError(str(error)) from error
  devices = {**report.devices(), "mesh": parallel.describe(meshes[-1])}
  for mesh in meshes:
    if mesh is not None and mesh.size < devices["count"]:
      report.log(f"note: the {'x'.join(map(str, mesh.shape.values()))} mesh uses {mesh.size} "
                 f"of the {devices['count']} devices (train.batch_size limits the data axis)")
  report.log(f"workdir {workdir}; devices {devices}")

  results = strategies.STRATEGIES[config.strategy].run(config, dataset, workdir)
  results = {"config": config_dict, **results,
             "wall_time_s": time.perf_counter() - start, "devices": devices}
  report.write_json(os.path.join(workdir, "results.json"), results)
  report.log(f"wrote {os.path.join(workdir, 'results.json')}")
  return results
