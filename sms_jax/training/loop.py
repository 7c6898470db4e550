"""The epoch loop: train, evaluate, log, checkpoint, stop on a non-finite loss, resume."""

import functools
import math
import time
from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from sms_jax import checkpoints, metrics, report
from sms_jax.data import Dataset, Split, Stream
from sms_jax.training import steps
from sms_jax.training.state import TrainState

# (state, epoch) -> (state, {'loss': [steps], 'accuracy': [steps]})
EpochFn = Callable[[TrainState, int], tuple[TrainState, dict[str, jax.Array]]]


class NonFiniteLossError(RuntimeError):
  """The training loss became NaN or infinite; the last good checkpoint is kept."""


EPOCH_LOOPS = ("auto", "scan", "steps")


def resolve_epoch_loop(epoch_loop: str) -> str:
  """'auto' is 'steps' on CPU and 'scan' on accelerators (no per-step dispatch).

  XLA:CPU runs the backward convolutions of a loop body through its generic emitter: a
  `lax.scan` epoch was 7-31x slower than dispatched steps (bench/RESULTS.md).
  """
  if epoch_loop != "auto":
    return epoch_loop
  return "steps" if jax.default_backend() == "cpu" else "scan"


def in_memory_epochs(state: TrainState, dataset: Dataset, key: jax.Array, *, batch_size: int,
                     epoch_loop: str, log: Callable[[str], None], **step_kwargs) -> EpochFn:
  """Epochs over in-memory data with data key `fold_in(key, epoch)`.

  `epoch_loop` 'scan' runs an epoch as one compiled `lax.scan`; 'steps' dispatches one
  compiled step per batch from Python (same batches, same augmentation); 'auto' picks.
  """
  train_x, train_y = jax.device_put(dataset.train.x), jax.device_put(dataset.train.y)
  num_examples = dataset.train.num_examples
  tic = time.perf_counter()
  scan = resolve_epoch_loop(epoch_loop) == "scan"
  if scan:
    epoch_fn = jax.jit(functools.partial(steps.train_epoch, batch_size=batch_size,
                                         augment=dataset.augment, **step_kwargs),
                       donate_argnums=0)
    compiled = epoch_fn.lower(state, key, train_x, train_y).compile()
    run = lambda state, epoch: compiled(state, jax.random.fold_in(key, epoch), train_x, train_y)
  else:
    plan = jax.jit(steps.epoch_plan, static_argnums=(1, 2))
    batches, augment_key = plan(key, num_examples, batch_size)
    step_fn = jax.jit(functools.partial(steps.train_epoch_step, augment=dataset.augment,
                                        **step_kwargs), donate_argnums=0)
    step_fn = step_fn.lower(state, augment_key, 0, batches, train_x, train_y).compile()

    def run(state, epoch):
      batches, augment_key = plan(jax.random.fold_in(key, epoch), num_examples, batch_size)
      step_metrics = []
      for i in range(batches.shape[0]):
        state, m = step_fn(state, augment_key, i, batches, train_x, train_y)
        step_metrics.append(m)
      return state, _stack(step_metrics)

  log(f"compiled the training {'epoch' if scan else 'step'} in {time.perf_counter() - tic:.1f} s")
  return run


def _stack(step_metrics: list[dict[str, jax.Array]]) -> dict[str, jax.Array]:
  return jax.tree.map(lambda *xs: jnp.stack(xs), *step_metrics)


def streamed_epochs(dataset: Dataset, key: jax.Array, *, batch_size: int,
                    log: Callable[[str], None], log_every: int = 0, **step_kwargs) -> EpochFn:
  """Epochs over a TFDS stream: one jitted step per batch, order a function of (key, epoch).

  Logs the running loss and images/s every `log_every` steps (0: ten times an epoch), since
  a streamed epoch (ImageNet) is long.
  """
  step_fn = jax.jit(functools.partial(steps.train_step, **step_kwargs), donate_argnums=0)
  seed = int(jax.random.randint(key, (), 0, np.iinfo(np.int32).max))
  steps_per_epoch = dataset.steps_per_epoch(batch_size)
  log_every = log_every or max(1, steps_per_epoch // 10)

  def run(state, epoch):
    step_metrics, tic = [], time.perf_counter()
    for i, (inputs, labels) in enumerate(
        dataset.train.batches(batch_size, train=True, seed=seed, epoch=epoch), start=1):
      state, m = step_fn(state, inputs, labels)
      step_metrics.append(m)
      if i % log_every == 0 and i < steps_per_epoch:
        loss = float(np.mean([x["loss"] for x in step_metrics[-log_every:]]))
        log(f"  step {i}/{steps_per_epoch}  loss {loss:.4f}  "
            f"{i * batch_size / (time.perf_counter() - tic):,.0f} img/s")
    return state, _stack(step_metrics)

  return run


class Evaluator:
  """Eval-mode logits of a state on the val and test splits of one dataset."""

  def __init__(self, model: nn.Module, dataset: Dataset, batch_size: int):
    self._batch_size = batch_size
    self._predict = jax.jit(functools.partial(steps.predict, model=model, batch_size=batch_size))
    self._splits = {name: (jax.device_put(split.x), split.y) if isinstance(split, Split) else split
                    for name, split in (("val", dataset.val), ("test", dataset.test))
                    if split.num_examples}

  def logits_and_labels(self, state: TrainState, split: str) -> tuple[np.ndarray, np.ndarray]:
    """`([n, num_classes] logits, [n] labels)` of `split` ('val' or 'test')."""
    data = self._splits[split]
    if not isinstance(data, Stream):
      return np.asarray(self._predict(state, data[0])), data[1]
    batches = [(np.asarray(self._predict(state, x)), y)
               for x, y in data.batches(self._batch_size, train=False)]
    return np.concatenate([b[0] for b in batches]), np.concatenate([b[1] for b in batches])

  def evaluate(self, state: TrainState, split: str) -> dict[str, float]:
    """Loss, accuracy, ECE and MCE on `split`; {} if the split is empty."""
    if split not in self._splits:
      return {}
    return metrics.evaluate_logits(*self.logits_and_labels(state, split))


def fit(state: TrainState, *, model: nn.Module, tx: optax.GradientTransformation,
        dataset: Dataset, train_config: ml_collections.ConfigDict, key: jax.Array,
        checkpointer: checkpoints.Checkpointer, every_epochs: int, evaluator: Evaluator,
        scalars: report.ScalarWriter | None = None,
        log: Callable[[str], None] = report.log) -> tuple[TrainState, list[dict[str, Any]], float]:
  """Trains `state` for `train_config.epochs` epochs, resuming from `checkpointer` if it can.

  Epoch `e` (0-based) draws its batches from `(key, e)` alone, so a resumed run replays
  exactly the batches of an uninterrupted one. A checkpoint is written every `every_epochs`
  epochs and after the last; its metadata holds the history and the elapsed training time.

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
  step_kwargs = dict(model=model, tx=tx, label_smoothing=train_config.label_smoothing,
                     batch_size=train_config.batch_size)
  run_epoch = (streamed_epochs(dataset, key, log=log, **step_kwargs) if dataset.streaming else
               in_memory_epochs(state, dataset, key, epoch_loop=train_config.epoch_loop, log=log,
                                **step_kwargs))
  batch_size = train_config.batch_size
  images_per_epoch = dataset.steps_per_epoch(batch_size) * batch_size
  epoch_times = []
  for epoch in range(start_epoch, epochs):
    tic = time.perf_counter()
    state, step_metrics = run_epoch(state, epoch)
    record = {"epoch": epoch + 1,
              "train_loss": float(np.mean(step_metrics["loss"])),
              "train_accuracy": float(np.mean(step_metrics["accuracy"])),
              "learning_rate": float(state.opt_state.hyperparams["learning_rate"])}
    epoch_times.append(time.perf_counter() - tic)
    if not math.isfinite(record["train_loss"]):
      kept = (f"the last good checkpoint (epoch {history[-1]['epoch']}) stays in "
              f"{checkpointer.directory}" if history else "no checkpoint was written")
      raise NonFiniteLossError(
          f"training loss became {record['train_loss']} in epoch {epoch + 1}; {kept}; try a "
          "lower train.learning_rate in a new --workdir")
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
