"""The epoch loop: train, evaluate, log, checkpoint, stop on a non-finite loss, resume.

It knows epochs only: what an epoch does is `run_epoch` (e.g. an `engine.EpochRunner`), and
what to record of the state besides the step metrics (learning rate, sparsity, ...) is
`describe_state`, both supplied by the caller.
"""

import time
from typing import Any, Callable

import jax
import numpy as np

from sms_jax import checkpoints, parallel, report
from sms_jax.training.state import TrainState

# (state, epoch) -> (state, {'loss': [steps(, m)], 'accuracy': [steps(, m)](, 'active': [m])})
EpochFn = Callable[[TrainState, int], tuple[TrainState, dict[str, Any]]]


class NonFiniteLossError(RuntimeError):
  """The training loss or the weights became NaN or infinite; the last good checkpoint is
  kept."""


def _non_finite_error(what: str, checkpointer: checkpoints.Checkpointer,
                      saved_epoch: int | None) -> NonFiniteLossError:
  kept = (f"the last good checkpoint (epoch {saved_epoch}) stays in {checkpointer.directory}"
          if saved_epoch else "no checkpoint was written")
  return NonFiniteLossError(f"{what}; {kept}; try a lower train.learning_rate in a new "
                            "--workdir")


def summarise(values: Any) -> float | list[float | None]:
  """A JSON value: a float, or a list per candidate with None for NaN (inactive) entries."""
  values = np.asarray(values, np.float64)
  if values.ndim == 0:
    return float(values)
  return [None if np.isnan(v) else float(v) for v in values]


def epoch_record(epoch: int, step_metrics: dict[str, Any]) -> dict[str, Any]:
  """One history record from an epoch's per-step metrics `[steps]` or `[steps, m]`.

  A metrics entry 'active' (`[m]` bool) marks candidates that did not train this epoch;
  their values are None.
  """
  active = step_metrics.get("active")
  record = {"epoch": epoch}
  for name in ("loss", "accuracy"):
    values = np.asarray(step_metrics[name], np.float64).mean(0)
    if active is not None:
      values = np.where(active, values, np.nan)
    record[f"train_{name}"] = summarise(values)
  return record


def _number(value: float) -> str:
  return "NaN" if np.isnan(value) else f"{value:g}"


def _non_finite_losses(step_metrics: dict[str, Any], names: list[str] | None) -> str | None:
  """What was non-finite of the (active) mean training losses, e.g. 'NaN for candidate 2
  (learning_rate=4)'; None if all are finite."""
  losses = np.asarray(step_metrics["loss"], np.float64).mean(0)
  if losses.ndim == 0:
    return None if np.isfinite(losses) else _number(losses)
  active = np.asarray(step_metrics.get("active", np.ones(losses.shape, bool)))
  bad = [i for i, loss in enumerate(losses) if active[i] and not np.isfinite(loss)]
  names = names or [f"candidate {i}" for i in range(len(losses))]
  return ", ".join(f"{_number(losses[i])} for {names[i]}" for i in bad) or None


def _non_finite_candidates(state: Any, names: list[str]) -> list[str]:
  """The names of the stacked candidates (leading axis of every leaf) with non-finite values."""
  bad = np.zeros(len(names), bool)
  for leaf in jax.tree.leaves(parallel.to_host(state)):
    if np.issubdtype(leaf.dtype, np.inexact):
      bad |= ~np.isfinite(leaf.reshape(len(names), -1)).all(1)
  return [name for name, b in zip(names, bad) if b]


def fit(state: TrainState, run_epoch: EpochFn, *, epochs: int,
        evaluate: Callable[[TrainState], dict[str, Any]],
        checkpointer: checkpoints.Checkpointer, every_epochs: int, eval_every_epochs: int,
        images_per_epoch: int, scalars: report.ScalarWriter | None = None,
        scalar_prefix: str = "", scalar_offset: int = 0,
        describe_state: Callable[[TrainState], dict[str, Any]] = lambda state: {},
        candidate_names: list[str] | None = None, stage: int = 0,
        after_epoch: Callable[[int, TrainState], None] | None = None,
        min_interval_s: float = 0.0,
        log: Callable[[str], None] = report.log) -> tuple[TrainState, list[dict[str, Any]], float]:
  """Trains `state` for `epochs` epochs of `run_epoch`, resuming from `checkpointer` if it can.

  `run_epoch(state, e)` must draw epoch `e`'s data from `e` alone (e.g. from a key folded
  with `e`), so a resumed run replays exactly the batches of an uninterrupted one. The
  validation metrics (`evaluate(state)`: floats, or lists per stacked candidate) are
  recorded every `eval_every_epochs` epochs and after the last; `describe_state(state)` adds
  entries to every record (e.g. the learning rate). A checkpoint is written every
  `every_epochs` epochs, unless the last one written here (or this call's start) is less than
  `min_interval_s` seconds old, and always after the last epoch; its metadata holds the
  history and the elapsed training time. TensorBoard scalars go to `scalar_prefix + name` at step
  `scalar_offset + epoch`. A stacked state's `candidate_names` (e.g. 'candidate 2
  (learning_rate=4)') name the candidates in errors. Each epoch's line shows the progress and
  ETA of the whole run (`report.run_progress()`, of which this is stage `stage`: 0 for
  pretraining, k for phase k), or of this call alone outside a run. `after_epoch(e, state)`
  runs after epoch e (counted from 1) is trained, before its checkpoint (so a checkpoint of
  epoch >= e means it ran for e).

  Returns:
    (state, history, elapsed_s): the final state, one record per epoch, and the wall time
    spent in this function summed over all (resumed) invocations.
  Raises:
    NonFiniteLossError: the training loss of an epoch, or the state to be checkpointed, was
      NaN or infinite (the checkpoints written before are kept).
  """
  progress = report.run_progress()
  if progress is None:  # Not inside a run: this call's own progress.
    progress, stage = report.RunProgress([(epochs, 1)], images_per_epoch), 0
  history, elapsed_before, start_epoch = [], 0.0, 0
  restored = checkpointer.restore_latest(state)
  if restored is not None:
    start_epoch, state, meta = restored
    history, elapsed_before = meta["history"], meta["elapsed_s"]
    log(f"resumed from checkpoint at epoch {start_epoch} in {checkpointer.directory}")
  progress.resume(stage, min(start_epoch, epochs))
  if start_epoch >= epochs:
    return state, history, elapsed_before

  begin, saved_epoch = time.perf_counter(), start_epoch or None
  saved_at = begin
  for epoch in range(start_epoch, epochs):
    tic = time.perf_counter()
    state, step_metrics = run_epoch(state, epoch)
    record = {**epoch_record(epoch + 1, step_metrics), **describe_state(state)}
    train_s = time.perf_counter() - tic
    bad_loss = _non_finite_losses(step_metrics, candidate_names)
    if bad_loss:
      raise _non_finite_error(f"training loss became {bad_loss} in epoch {epoch + 1}",
                              checkpointer, saved_epoch)
    if (epoch + 1) % eval_every_epochs == 0 or epoch + 1 == epochs:
      record.update({f"val_{k}": v for k, v in evaluate(state).items()})
    record["time_s"] = time.perf_counter() - tic
    history.append(record)
    progress.epoch_trained(stage)
    log(report.epoch_line(epoch + 1, epochs, record, images_per_epoch / train_s,
                          progress.eta_s(), progress.fraction()))
    if scalars is not None:
      scalars.write(scalar_offset + epoch + 1,
                    {scalar_prefix + k: v for k, v in record.items() if k != "epoch"})
    if after_epoch is not None:
      after_epoch(epoch + 1, state)
    due = (epoch + 1) % every_epochs == 0 and time.perf_counter() - saved_at >= min_interval_s
    if due or epoch + 1 == epochs:
      elapsed = elapsed_before + time.perf_counter() - begin
      try:
        with report.interrupts_deferred():  # A Ctrl-C lets the checkpoint complete first.
          checkpointer.save(epoch + 1, state, {"history": history, "elapsed_s": elapsed})
      except checkpoints.NonFiniteStateError as error:
        where = (f" of {', '.join(_non_finite_candidates(state, candidate_names))}"
                 if candidate_names else "")
        raise _non_finite_error(f"the state{where} became non-finite in epoch {epoch + 1} "
                                f"({error})", checkpointer, saved_epoch) from error
      saved_epoch, saved_at = epoch + 1, time.perf_counter()
  return state, history, elapsed_before + time.perf_counter() - begin
