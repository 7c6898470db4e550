"""Where a run's pretrained model may come from besides its own training: another run's finished
pretraining (`config.pretrained`, shared pretraining: the SMS paper starts every method from
one pretrained model), and the weights a lottery-ticket phase rewinds to (`retrain.rewind`).

`check_source` makes sure, before any work, that a source is the same training; `read_shared`
reads its state read-only (checksums verified, nothing copied). `rewind_saver` keeps the
state of pretraining epoch K in `<workdir>/checkpoints/rewind`, and `read_rewind` reads it
back (from the run itself, or from its source).
"""

import json
import os
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections

from sms_jax import checkpoints, report
from sms_jax import config as config_lib
from sms_jax import workdir as workdir_lib
from sms_jax.training import retrain, state as state_lib

# The config keys that define what pretraining computes (prefixes of dotted keys): a run may
# start from another's pretraining only if these agree.
PRETRAINING_KEYS = ("dataset.", "model.", "train.", "init_mask.", "seed",
                    "prune.keep_first_dense", "prune.keep_last_dense")
NOT_PRETRAINING_KEYS = ("dataset.data_dir",)  # Where the same data is read from.


def source_directory(source: str) -> str:
  """Where the run in workdir `source` keeps its pretraining checkpoints."""
  return os.path.join(source, "checkpoints", "pretrain")


def check_source(config: ml_collections.ConfigDict, workdir: str) -> None:
  """Raises ConfigError unless `config.pretrained` ('' passes) is the workdir of another run
  whose finished pretraining this config may start from: a run of a strategy that shares
  pretraining, not itself started from another's, with the same `PRETRAINING_KEYS`, and
  holding its checkpoint at epoch train.epochs. Reads only its config.json and file names."""
  source = config.pretrained
  if not source:
    return
  from sms_jax import strategies  # pylint: disable=g-import-not-at-top  (they import this)
  start = f"config key pretrained = {source!r} is not allowed: "
  allowed = ("; allowed: the workdir of a finished run of the same dataset, model, train, "
             "init_mask, seed and prune.keep_*_dense, e.g. a dense run's")
  path = os.path.join(source, "config.json")
  try:
    with open(path) as f:
      theirs = json.load(f)
  except (OSError, ValueError) as error:
    raise config_lib.ConfigError(f"{start}cannot read {path} ({type(error).__name__}){allowed}"
                                 ) from error
  if os.path.realpath(source) == os.path.realpath(workdir):
    raise config_lib.ConfigError(f"{start}it is this run's own workdir{allowed}")
  strategy = theirs.get("strategy")
  registered = strategies.STRATEGIES.get(strategy)
  if registered is None or not registered.shares_pretraining:
    raise config_lib.ConfigError(f"{start}its strategy {strategy} pretrains in its own way"
                                 f"{allowed}")
  if theirs.get("pretrained"):
    raise config_lib.ConfigError(f"{start}that run itself started from the pretraining of "
                                 f"{theirs['pretrained']!r}; pass that one")
  ours = json.loads(config.to_json())
  differing = [key for key in sorted(workdir_lib.differences(theirs, ours))
               if key.startswith(PRETRAINING_KEYS) and not key.startswith(NOT_PRETRAINING_KEYS)]
  if differing:
    key = differing[0]
    raise config_lib.ConfigError(
        f"{start}its {key} is {_value_at(theirs, key)!r}, this run's {_value_at(ours, key)!r}"
        f"{allowed}")
  directory = source_directory(source)
  epochs = _saved_epochs(directory)
  if config.train.epochs not in epochs:
    newest = f"its newest checkpoint is epoch {epochs[-1]}" if epochs else "it has no checkpoint"
    raise config_lib.ConfigError(
        f"{start}its pretraining has not finished ({newest} of {config.train.epochs} in "
        f"{directory}); let it finish{allowed}")
  rewind = retrain.rewind_epoch(config.retrain.rewind)
  if rewind and _rewind_source(source, rewind) is None:
    raise config_lib.ConfigError(
        f"{start}it kept no state of epoch {rewind} to rewind to (retrain.rewind = "
        f"{config.retrain.rewind!r}); allowed: a source run with the same retrain.rewind (it "
        "keeps its rewind point), or one that kept that checkpoint, or retrain.rewind = init")


def _saved_epochs(directory: str) -> list[int]:
  """The steps of the checkpoints in `directory` (none if it does not exist), ascending."""
  return sorted(int(n) for n in (os.listdir(directory) if os.path.isdir(directory) else [])
                if n.isdigit())


def _rewind_source(source: str, epoch: int) -> str | None:
  """The checkpoint directory of run `source` holding pretraining epoch `epoch`: its rewind
  point, else its pretraining checkpoint; None if neither."""
  for directory in (rewind_directory(source), source_directory(source)):
    if epoch in _saved_epochs(directory):
      return directory
  return None


def _value_at(config_dict: dict[str, Any], dotted: str) -> Any:
  """The value at `dotted` ('a.b') of a nested dict, None where missing."""
  for part in dotted.split("."):
    config_dict = config_dict.get(part) if isinstance(config_dict, dict) else None
  return config_dict


def read_shared(config: ml_collections.ConfigDict, like: state_lib.TrainState
                ) -> tuple[state_lib.TrainState, list[dict[str, Any]], float, dict[str, Any]]:
  """The finished pretraining of run `config.pretrained` (checked by `check_source`): its state
  in the structure of `like`, its history, training time and the results' `pretrained` entry.

  Raises:
    CheckpointError: the checkpoint cannot be read, is damaged or holds another layout.
  """
  source = os.path.abspath(config.pretrained)
  epoch, state, meta = checkpoints.read_verified(source_directory(source), config.train.epochs,
                                                 like=like)
  checksum = checkpoints.state_checksum(state)
  report.log(f"pretraining: read from {source} (epoch {epoch}, checksum {checksum}); not "
             "trained here")
  return (jax.tree.map(jnp.asarray, state), meta["history"], meta["elapsed_s"],
          {"pretrained": {"from": source, "epoch": epoch, "checksum": checksum}})


def rewind_directory(workdir: str) -> str:
  """Where a run keeps its rewind point of `retrain.rewind = epoch:K`."""
  return os.path.join(workdir, "checkpoints", "rewind")


def rewind_saver(config: ml_collections.ConfigDict, workdir: str, epoch: int | None):
  """`after_epoch(e, state)` for `loop.fit` that saves `{params, batch_stats}` of pretraining
  epoch `epoch` to `rewind_directory` (None: when nothing is to be saved)."""
  if not epoch or config.pretrained:
    return None
  def save(e, state):
    if e == epoch:
      saver = checkpoints.Checkpointer(rewind_directory(workdir), None,
                                       config_lib.run_identity(config))
      try:
        saver.save(e, _rewind_point(state), {})
      finally:
        saver.close()
  return save


def _rewind_point(state: state_lib.TrainState) -> dict[str, Any]:
  return {"params": state.params, "batch_stats": state.batch_stats}


def read_rewind(config: ml_collections.ConfigDict, workdir: str, epoch: int,
                 like: state_lib.TrainState) -> tuple[Any, Any]:
  """The rewind point of pretraining epoch `epoch` >= 1: from the source's pretraining
  checkpoint (shared pretraining) or from this run's `rewind_directory`."""
  directory = (_rewind_source(config.pretrained, epoch) if config.pretrained
               else rewind_directory(workdir))
  if directory == rewind_directory(config.pretrained or workdir):
    _, point, _ = checkpoints.read_verified(directory, epoch, like=_rewind_point(like))
  else:  # The source's pretraining checkpoint of that epoch.
    _, state, _ = checkpoints.read_verified(directory, epoch, like=like)
    point = _rewind_point(state)
  return tuple(jax.tree.map(jnp.asarray, (point["params"], point["batch_stats"])))
