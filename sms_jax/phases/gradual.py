"""Phases at the mask updates of gradual pruning: SMS on a pruning-during-training schedule.

The cubic schedule of `sms_jax.sparsity.gmp` (from the start mask's sparsity to
`prune.goal_sparsity` between `gradual.start_epoch` and `gradual.end_epoch`) sampled at
`prune.n_phases` mask updates, at the epochs `phase_epochs`. One model trains up to the
first; phase k prunes the current model to the schedule's sparsity at its epoch, trains m
candidates from it until the next update (the last phase: until train.epochs), going on with
the training learning-rate schedule (fresh momentum), and soups them; the next phase starts
from the soup. Strategies sms_gmp, gmp_mx (`sms_jax.strategies.sms_gmp`), sms_dpf
(`sms_jax.strategies.sms_dpf`) and sms_rigl, sms_granet (`sms_jax.strategies.sms_rigl`) are
built from these plans.

With `length_factor` f > 1 each phase trains f times longer, and the learning-rate schedule
after the first mask update is stretched f times (`stretch_schedule`, run by
`StretchedRunner`): the same schedule at f times the steps, so that one model trained so has
the compute of f candidates (gmp_mx against sms_gmp with soup.m = f).
"""

from typing import Any

import jax.numpy as jnp
import ml_collections

from sms_jax.phases import plan as plan_lib
from sms_jax.phases.runner import PhaseRunner, PlanContext
from sms_jax.sparsity import gmp
from sms_jax.training import retrain


def phase_epochs(config: ml_collections.ConfigDict) -> list[int]:
  """The epochs of the mask updates: `start + round(k * (end - start) / n)`, k = 1..n."""
  start, end, n = config.gradual.start_epoch, config.gradual.end_epoch, config.prune.n_phases
  return [start + int(round(k * (end - start) / n)) for k in range(1, n + 1)]


def stretched_epoch(config: ml_collections.ConfigDict, epoch: int, length_factor: int) -> int:
  """`epoch` of the schedule on the time axis of a run whose phases are `length_factor`
  times longer: unchanged up to the first mask update, stretched after it."""
  first = phase_epochs(config)[0]
  return epoch if epoch <= first else first + length_factor * (epoch - first)


def plans(config: ml_collections.ConfigDict, context: PlanContext, *, m: int,
          length_factor: int = 1, updater: str = "fixed") -> list[plan_lib.PhasePlan]:
  """Phase k from the k-th mask update to the next (the last: to train.epochs), `m`
  candidates trained `length_factor` times its length with sparsity `updater`.

  Targets are the schedule's sparsities at the update steps; `first_step` and `first_epoch`
  are on the (stretched) time axis of the run, where the stretched learning-rate schedule
  of `StretchedRunner` reads them.
  """
  epochs = phase_epochs(config) + [config.train.epochs]
  schedule = gmp.schedule_from_config(config, context.steps_per_epoch, context.start_sparsity)
  out = []
  for k in range(1, config.prune.n_phases + 1):
    start = epochs[k - 1]
    length = (epochs[k] - start) * length_factor
    first_epoch = stretched_epoch(config, start, length_factor)
    out.append(plan_lib.PhasePlan(
        phase=k, target_sparsity=float(schedule.sparsity(start * context.steps_per_epoch)),
        candidates=plan_lib.candidates(config, m, length, context.max_lr),
        schedule=retrain.CONTINUE, retrain_epochs=length,
        first_step=first_epoch * context.steps_per_epoch, first_epoch=first_epoch,
        updater=updater))
  return out


def planned_epochs(config: ml_collections.ConfigDict, *, m: int,
                   length_factor: int = 1) -> list[tuple[int, int]]:
  """One model up to the first mask update, then m candidates from each to the next."""
  epochs = phase_epochs(config) + [config.train.epochs]
  return [(epochs[0], 1)] + [((b - a) * length_factor, m) for a, b in zip(epochs, epochs[1:])]


def strategy_fields(*, stretched: bool = False, prunes: bool = True) -> dict[str, Any]:
  """The `Strategy` fields `check` and `planned_epochs` of a strategy with these phases:
  `soup.m` candidates a phase, or (`stretched`, gmp_mx) one model `soup.m` times longer;
  `prunes`: as `check`'s."""
  m_of = (lambda config: 1) if stretched else (lambda config: config.soup.m)
  factor_of = (lambda config: config.soup.m) if stretched else (lambda config: 1)
  return {"check": lambda config, start_sparsity=None: check(config, start_sparsity,
                                                              m=m_of(config), prunes=prunes),
          "planned_epochs": lambda config: planned_epochs(config, m=m_of(config),
                                                          length_factor=factor_of(config))}


def check(config: ml_collections.ConfigDict, start_sparsity: float | None = None, *,
          m: int, prunes: bool = True) -> str | None:
  """GMP's checks (unless not `prunes`: phases that keep the start's sparsity, as sms_rigl's,
  need no goal above it), one mask update per phase at distinct epochs before the end, and
  (m > 1) candidates whose length is not varied (the schedule fixes it)."""
  gradual, epochs, name = config.gradual, config.train.epochs, config.strategy
  error = gmp.check_config(config, start_sparsity) if prunes else None
  if error:
    return error
  if gradual.end_epoch >= epochs:
    return (f"config key gradual.end_epoch = {gradual.end_epoch} is not allowed with strategy "
            f"{name!r}; allowed: fewer than train.epochs = {epochs} (the last phase trains "
            "from end_epoch to train.epochs)")
  if gradual.end_epoch - gradual.start_epoch < config.prune.n_phases:
    return (f"config key prune.n_phases = {config.prune.n_phases} is not allowed with strategy "
            f"{name!r}; allowed: at most gradual.end_epoch - gradual.start_epoch = "
            f"{gradual.end_epoch - gradual.start_epoch} (one mask update per phase, at "
            "distinct epochs)")
  if m > 1 and "retrain_epochs" in plan_lib.varied_names(config.soup.vary):
    return (f"config key soup.vary = {config.soup.vary!r} is not allowed with strategy "
            f"{name!r}; allowed: seed, weight_decay, learning_rate (a phase's length is fixed "
            "by the schedule)")
  return None


def stretch_schedule(pretrain: retrain.PretrainSchedule, from_step: int,
                     factor: int) -> retrain.PretrainSchedule:
  """`pretrain` unchanged up to step `from_step`, then `factor` times slower: step
  `from_step + factor * j` has the learning rate of step `from_step + j` (j may be
  fractional)."""
  fn = lambda count: pretrain.fn(jnp.where(count <= from_step, count,
                                           from_step + (count - from_step) / factor))
  stretch = lambda step: step if step <= from_step else from_step + factor * (step - from_step)
  return retrain.PretrainSchedule(fn, stretch(pretrain.steps), stretch(pretrain.warmup_steps),
                                  pretrain.max_lr, pretrain.min_lr)


class StretchedRunner(PhaseRunner):
  """The phase runner whose learning-rate schedule is `factor` times slower after the first
  mask update (`stretch_schedule`), for plans made with `length_factor=factor`.

  Pass `functools.partial(StretchedRunner, factor=f)` as `runner.run`'s `phase_runner`.
  """

  def __init__(self, config: ml_collections.ConfigDict, *args: Any, factor: int,
               **kwargs: Any):
    super().__init__(config, *args, **kwargs)
    self.pretrain = stretch_schedule(self.pretrain, phase_epochs(config)[0] * self.steps_per_epoch,
                                     factor)
