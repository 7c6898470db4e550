"""One experiment from a config: validate, load data, run the strategy, write results.

Nothing is written to the workdir before the config has been validated and the data loaded;
the run then holds the workdir (`workdir.locked`), and writes results.json last, atomically.
"""

import contextlib
import json
import os
import shutil
import time
from typing import Any

import jax
import ml_collections

from sms_jax import config as config_lib
from sms_jax import data, models, parallel, report, shared_pretraining, strategies
from sms_jax import workdir as workdir_lib


def check_model_fits_data(config: ml_collections.ConfigDict, dataset: data.Dataset) -> None:
  """Raises ConfigError if the model or the augmentation cannot take the dataset's inputs."""
  shape, name = dataset.input_shape, config.model.name
  ndim = models.input_ndim(name)
  if ndim is not None and len(shape) != ndim:
    raise config_lib.ConfigError(
        f"config key model.name = {name!r} is not allowed for {config.dataset.name} inputs of "
        f"shape {list(shape)}; allowed: "
        f"{'cnn1d, mlp' if len(shape) == 2 else 'mlp and the image models (see README)'}")
  if dataset.augment != "none" and len(shape) != 3:  # Every augmentation is for images.
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
  workdir_lib.check(config_dict, workdir)
  shared_pretraining.check_source(config, workdir)
  dataset = data.load(config.dataset)
  if config.train.batch_size > dataset.train.num_examples:
    raise config_lib.ConfigError(
        f"config key train.batch_size = {config.train.batch_size} is not allowed; allowed: at "
        f"most the {dataset.train.num_examples} training examples of {config.dataset.name}")
  config_lib.check_against_dataset(config, dataset)
  check_model_fits_data(config, dataset)
  try:  # With several processes, a mesh must use every process's devices.
    meshes = [parallel.candidate_mesh(m, config.train.batch_size)
              for m in (1, strategies.candidates_per_phase(config))]
  except ValueError as error:
    raise config_lib.ConfigError(str(error)) from error
  fresh = not os.path.isdir(workdir) or not os.listdir(workdir)
  try:
    os.makedirs(workdir, exist_ok=True)
  except OSError as error:
    raise workdir_lib.WorkdirError(f"cannot create workdir {workdir}: {error}") from error
  with workdir_lib.locked(workdir) if jax.process_index() == 0 else contextlib.nullcontext():
    try:
      workdir_lib.check(config_dict, workdir)  # Again: another run may have ended meanwhile.
      return _run_locked(config, config_dict, dataset, workdir, meshes, start)
    except config_lib.ConfigError:
      trained = os.path.exists(os.path.join(workdir, "checkpoints"))
      if fresh and not trained and jax.process_index() == 0:  # Refused: leave no trace.
        shutil.rmtree(workdir, ignore_errors=True)  # (Still locked: nobody else writes.)
      raise


def _run_locked(config: ml_collections.ConfigDict, config_dict: dict[str, Any],
                dataset: data.Dataset, workdir: str, meshes: list[Any],
                start: float) -> dict[str, Any]:
  """`run`'s part that writes to the workdir, while holding it."""
  report.write_json(os.path.join(workdir, "config.json"), config_dict)
  report.write_json(os.path.join(workdir, "data.json"), dataset.describe())  # For export.
  devices = {**report.devices(), "mesh": parallel.describe(meshes[-1])}
  for mesh in meshes:
    if mesh is not None and mesh.size < devices["count"]:
      report.log(f"note: the {'x'.join(map(str, mesh.shape.values()))} mesh uses {mesh.size} "
                 f"of the {devices['count']} devices (train.batch_size limits the data axis)")
  report.log(f"workdir {workdir}; devices {devices}")

  strategy, batch = strategies.STRATEGIES[config.strategy], config.train.batch_size
  with report.tracking(strategy.planned_epochs(config), dataset.steps_per_epoch(batch) * batch):
    results = strategy.run(config, dataset, workdir)
  results = {"config": config_dict, **results,
             "wall_time_s": time.perf_counter() - start, "devices": devices}
  report.write_json(os.path.join(workdir, "results.json"), results)
  report.log(f"wrote {os.path.join(workdir, 'results.json')}")
  return results
