"""Retraining after pruning: the learning-rate schedules of the SMS paper, and the optimizer.

Schedules (`retrain.schedule`), with maxLR / minLR the largest / smallest learning rate of the
pretraining schedule (after its warmup), over a retraining budget of T iterations:
  ft    constant minLR;
  lrw   rewind: replay the last T iterations of the pretraining schedule;
  slr   after the warmup, the whole pretraining schedule (its warmup held at maxLR) compressed
        into the remaining iterations;
  clr   after the warmup, cosine from maxLR to minLR;
  llr   after the warmup, linear decay from maxLR to 0 (the default);
  allr  as llr, with the peak chosen per phase from the norm that pruning removed
        (`allr_peak`);
  full  the whole pretraining schedule, warmup included, stretched over the T iterations
        (iteration j replays pretraining iteration floor(j * P / T); with T = P it is the
        pretraining schedule itself): lottery-ticket IMP's training per level.
The warmup of slr, clr, llr and allr is the reference's: a cosine ramp
`peak * (1 - cos(pi * t / W)) / 2` over `W = int(0.1 * T)` iterations (none if W = 0); the
schedule after it starts at iteration W (the reference starts it one iteration later, at
W + 1, and so ends one iteration short of its final value).
One more kind serves pruning during training (sms_gmp), where a phase goes on with the
training itself:
  continue  the pretraining schedule from iteration `first_step` on.
A candidate's peak learning rate scales its whole schedule by `peak / maxLR`; its budget
(`total_steps`) and peak are arrays in the optimizer state, so stacked candidates with
different values share one compiled step.
"""

from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from sms_jax.training import optimizers, schedules

RETRAIN_SCHEDULES = ("ft", "lrw", "slr", "clr", "llr", "allr", "full")
CONTINUE = "continue"
WARMUP_FRACTION = 0.1


class PretrainSchedule(NamedTuple):
  """The pretraining schedule `fn(step)`, its length and warmup in steps, its max and min."""
  fn: Callable[[Any], Any]
  steps: int
  warmup_steps: int
  max_lr: float
  min_lr: float


def pretrain_schedule(train_config, steps_per_epoch: int) -> PretrainSchedule:
  """The pretraining schedule of `train_config` with its largest and smallest learning rate."""
  fn = schedules.make_schedule(train_config, steps_per_epoch)
  steps = max(1, int(round(train_config.epochs * steps_per_epoch)))
  warmup = min(steps - 1, int(round(train_config.warmup_epochs * steps_per_epoch)))
  values = np.asarray(jax.jit(jax.vmap(fn))(jnp.arange(warmup, steps)))
  return PretrainSchedule(fn, steps, warmup, float(train_config.learning_rate),
                          float(values.min()))


def learning_rate(kind: str, count: jax.Array, total_steps: jax.Array, peak: jax.Array,
                  pretrain: PretrainSchedule) -> jax.Array:
  """Learning rate of retraining iteration `count` of `total_steps` (arrays, may be traced).

  For CONTINUE, `count` is the pretraining iteration and `total_steps` is not used.
  """
  count = jnp.asarray(count, jnp.float32)
  total = jnp.maximum(jnp.asarray(total_steps, jnp.float32), 1.0)
  warm = jnp.floor(WARMUP_FRACTION * total)
  rest = jnp.maximum(total - warm, 1.0)
  after = jnp.clip((count - warm) / rest, 0.0, 1.0)
  in_warmup = count < warm
  warmup = pretrain.max_lr * 0.5 * (1.0 - jnp.cos(jnp.pi * count / jnp.maximum(warm, 1.0)))
  max_lr, min_lr = pretrain.max_lr, pretrain.min_lr
  if kind == "ft":
    lr = jnp.full_like(count, min_lr)
  elif kind == "lrw":
    lr = pretrain.fn(jnp.clip(pretrain.steps - total + count, 0, pretrain.steps - 1))
  elif kind == "slr":
    # Iteration j after the warmup replays pretraining iteration floor(j * P / (T - W)).
    index = jnp.clip(jnp.floor((count - warm) * pretrain.steps / rest), 0, pretrain.steps - 1)
    replayed = jnp.where(index < pretrain.warmup_steps, max_lr, pretrain.fn(index))
    lr = jnp.where(in_warmup, warmup, replayed)
  elif kind == "clr":
    lr = jnp.where(in_warmup, warmup,
                   min_lr + (max_lr - min_lr) * 0.5 * (1 + jnp.cos(jnp.pi * after)))
  elif kind in ("llr", "allr"):
    lr = jnp.where(in_warmup, warmup, max_lr * (1.0 - after))
  elif kind == "full":
    lr = pretrain.fn(jnp.clip(jnp.floor(count * pretrain.steps / total), 0, pretrain.steps - 1))
  elif kind == CONTINUE:
    lr = pretrain.fn(jnp.clip(count, 0, pretrain.steps - 1))
  else:
    raise ValueError(f"unknown retrain.schedule {kind!r}; allowed: {', '.join(RETRAIN_SCHEDULES)}")
  return jnp.asarray(lr, jnp.float32) * (peak / max_lr)


def rewind_epoch(rewind: str) -> int | None:
  """The pretraining epoch that `retrain.rewind` rewinds to: 0 for 'init', K for 'epoch:K',
  None for 'none' (no rewinding)."""
  if rewind == "none":
    return None
  return 0 if rewind == "init" else int(rewind.split(":", 1)[1])


def is_rewind(value: object) -> bool:
  """Whether `value` is a valid `retrain.rewind`: none, init or epoch:K (K >= 0)."""
  if value in ("none", "init"):
    return True
  if not isinstance(value, str) or not value.startswith("epoch:"):
    return False
  digits = value.split(":", 1)[1]
  return digits.isdigit() and digits.isascii()


def allr_peak(norm_drop: float, prune_rate: float, epochs_per_phase: float,
              pretrain_epochs: float, max_lr: float) -> float:
  """ALLR's peak: `clip(norm_drop / sqrt(prune_rate) * maxLR, min(e / E, 1) * maxLR, maxLR)`.

  Args:
    norm_drop: relative L2 norm of the weights removed by this phase's pruning.
    prune_rate: fraction of the alive weights this phase pruned.
    epochs_per_phase, pretrain_epochs: retraining and pretraining lengths.
    max_lr: the pretraining schedule's peak.
  """
  low = min(epochs_per_phase / pretrain_epochs, 1.0) * max_lr
  return float(np.clip(norm_drop / np.sqrt(max(prune_rate, 1e-12)) * max_lr, low, max_lr))


def retrain_optimizer(train_config, kind: str, pretrain: PretrainSchedule, *,
                      peak_learning_rate: float, total_steps: int, weight_decay: float,
                      first_step: int = 0) -> optax.GradientTransformation:
  """`train.optimizer` with the retraining schedule `kind`: a candidate's optimizer.

  Its weight decay, peak and budget are state arrays, so the `update` of any candidate's
  optimizer serves all stacked candidates; only `init` differs between them. The count
  starts at `first_step` (CONTINUE: the pretraining iteration to go on from).
  """
  schedule = lambda count, peak, total_steps: learning_rate(kind, count, total_steps, peak,
                                                            pretrain)
  return optimizers.make_optimizer(train_config, schedule, weight_decay=weight_decay,
                                   first_step=first_step, peak=peak_learning_rate,
                                   total_steps=total_steps)
