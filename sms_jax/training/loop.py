"""The epoch loop: train, evaluate, log, checkpoint, stop on a non-finite loss, resume."""

import functools
import math
import time
from typing import Any, Callable

import flax.linen as nn
import jax
import ml_collections
import numpy as np
import optax

from sms_jax import checkpoints, metrics, report
from sms_jax.data import Dataset
from sms_jax.training import steps
from sms_jax.training.state import TrainState


class NonFiniteLossError(RuntimeError):
  """The training loss became NaN or infinite; the last good checkpoint is kept."""


class Evaluator:
  """Eval-mode logits of a state on the splits of one dataset, jitted once per split shape."""

  def __init__(self, model: nn.Module, dataset: Dataset, batch_size: int):
    self._predict = jax.jit(functools.partial(steps.predict, model=model, batch_size=batch_size))
    self._splits = {name: (jax.device_put(split.x), split.y) for name, split in
                    (("val", dataset.val), ("test", dataset.test)) if len(split.y)}

  def logits(self, state: TrainState, split: str) -> np.ndarray:
    return np.asarray(self._predict(state, self._splits[split][0]))

  def evaluate(self, state: TrainState, split: str) -> dict[str, float]:
    """Loss, accuracy, ECE and MCE on `split` ('val' or 'test'); {} if the split is empty."""
    if split not in self._splits:
      return {}
    return metrics.evaluate_logits(self.logits(state, split), self._splits[split][1])


def fit(state: TrainState, *, model: nn.Module, tx: optax.GradientTransformation,
        dataset: Dataset, train_config: ml_collections.ConfigDict, key: jax.Array,
        checkpointer: checkpoints.Checkpointer, every_epochs: int, evaluator: Evaluator,
        scalars: report.ScalarWriter | None = None,
        log: Callable[[str], None] = report.log) -> tuple[TrainState, list[dict[str, Any]], float]:
  """Trains `state` for `train_config.epochs` epochs, resuming from `checkpointer` if it can.

  Epoch `e` (0-based) uses the data key `fold_in(key, e)`, so a resumed run replays exactly
  the batches of an uninterrupted one. A checkpoint is written every `every_epochs` epochs
  and after the last; its metadata holds the history and the elapsed training time.

  Returns:
    (state, history, elapsed_s): the final state, one record per epoch, and the wall time
    spent in this function summed over all (resumed) invocations.
  """
  history, elapsed_before, start_epoch = [], 0.0, 0
  restored = checkpointer.restore_latest(state)
  if restored is not None:
    start_epoch, state, meta = restored
    history, elapsed_before = meta["history"], meta["elapsed_s"]
    log(f"resumed from checkpoint at epoch {start_epoch} in {checkpointer.directory}")
  epochs = train_config.epochs
  if start_epoch >= epochs:
    return state, history, elapsed_before

  begin = time.perf_counter()
  train_x, train_y = jax.device_put(dataset.train.x), jax.device_put(dataset.train.y)
  epoch_fn = jax.jit(functools.partial(
      steps.train_epoch, model=model, tx=tx, batch_size=train_config.batch_size,
      augment=dataset.augment, label_smoothing=train_config.label_smoothing), donate_argnums=0)
  compiled = epoch_fn.lower(state, key, train_x, train_y).compile()
  log(f"compiled the training epoch in {time.perf_counter() - begin:.1f} s")
  images_per_epoch = (len(dataset.train.y) // train_config.batch_size) * train_config.batch_size
  epoch_times = []
  for epoch in range(start_epoch, epochs):
    tic = time.perf_counter()
    state, step_metrics = compiled(state, jax.random.fold_in(key, epoch), train_x, train_y)
    record = {"epoch": epoch + 1,
              "train_loss": float(np.mean(step_metrics["loss"])),
              "train_accuracy": float(np.mean(step_metrics["accuracy"])),
              "learning_rate": float(state.opt_state.hyperparams["learning_rate"])}
    epoch_times.append(time.perf_counter() - tic)
    if not math.isfinite(record["train_loss"]):
      raise NonFiniteLossError(
          f"training loss became {record['train_loss']} in epoch {epoch + 1}; the last good "
          f"checkpoint stays in {checkpointer.directory}; try a lower train.learning_rate")
    if (epoch + 1) % train_config.eval_every_epochs == 0 or epoch + 1 == epochs:
      record.update({f"val_{k}": v for k, v in evaluator.evaluate(state, "val").items()})
    record["time_s"] = time.perf_counter() - tic
    history.append(record)
    eta = np.mean(epoch_times) * (epochs - epoch - 1)
    log(report.epoch_line(epoch + 1, epochs, record, images_per_epoch / epoch_times[-1], eta))
    if scalars is not None:
      scalars.write(epoch + 1, {k: v for k, v in record.items() if k != "epoch"})
    if (epoch + 1) % every_epochs == 0 or epoch + 1 == epochs:
      elapsed = elapsed_before + time.perf_counter() - begin
      checkpointer.save(epoch + 1, state, {"history": history, "elapsed_s": elapsed})
  return state, history, elapsed_before + time.perf_counter() - begin
