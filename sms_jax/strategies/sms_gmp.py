"""Sparse Model Soups on gradual magnitude pruning (sms_gmp).

The cubic schedule of `sms_jax.sparsity.gmp` (from the start mask's sparsity to
`prune.goal_sparsity` between `gradual.start_epoch` and `gradual.end_epoch`) sampled at
`prune.n_phases` mask updates, at the epochs `phase_epochs`. One model trains up to the
first; phase k prunes the current model to the schedule's sparsity at its epoch, trains
soup.m candidates from it until the next update (the last phase: until train.epochs), going
on with the training learning-rate schedule (fresh momentum), and soups them; the next phase
starts from the soup. Candidates differ as in `sms` (seed, weight_decay, learning_rate: the
peak of the schedule they continue); with soup.m = 1 each phase trains one model (its record
holds that `model`, no soup). Its `dense` results entry is the model before the first mask
update.
"""

import ml_collections

from sms_jax.phases import plan as plan_lib, runner
from sms_jax.sparsity import gmp
from sms_jax.strategies.registry import Strategy, register
from sms_jax.training import retrain


def phase_epochs(config: ml_collections.ConfigDict) -> list[int]:
  """The epochs of the mask updates: `start + round(k * (end - start) / n)`, k = 1..n."""
  start, end, n = config.gradual.start_epoch, config.gradual.end_epoch, config.prune.n_phases
  return [start + int(round(k * (end - start) / n)) for k in range(1, n + 1)]


def plans(config: ml_collections.ConfigDict,
          context: runner.PlanContext) -> list[plan_lib.PhasePlan]:
  """Phase k from the k-th mask update to the next (the last: to train.epochs)."""
  epochs = phase_epochs(config) + [config.train.epochs]
  schedule = gmp.schedule_from_config(config, context.steps_per_epoch, context.start_sparsity)
  out = []
  for k in range(1, config.prune.n_phases + 1):
    start, length = epochs[k - 1], epochs[k] - epochs[k - 1]
    first_step = start * context.steps_per_epoch
    out.append(plan_lib.PhasePlan(
        phase=k, target_sparsity=float(schedule.sparsity(first_step)),
        candidates=plan_lib.candidates(config, config.soup.m, length, context.max_lr),
        schedule=retrain.CONTINUE, retrain_epochs=length, first_step=first_step,
        first_epoch=start))
  return out


def check(config: ml_collections.ConfigDict, start_sparsity: float | None = None) -> str | None:
  """GMP's checks, and one mask update per phase at distinct epochs before the end."""
  gradual, epochs = config.gradual, config.train.epochs
  error = gmp.check_config(config, start_sparsity)
  if error:
    return error
  if gradual.end_epoch >= epochs:
    return (f"config key gradual.end_epoch = {gradual.end_epoch} is not allowed with strategy "
            f"'sms_gmp'; allowed: fewer than train.epochs = {epochs} (the last phase trains "
            "from end_epoch to train.epochs)")
  if gradual.end_epoch - gradual.start_epoch < config.prune.n_phases:
    return (f"config key prune.n_phases = {config.prune.n_phases} is not allowed with strategy "
            f"'sms_gmp'; allowed: at most gradual.end_epoch - gradual.start_epoch = "
            f"{gradual.end_epoch - gradual.start_epoch} (one mask update per phase, at "
            "distinct epochs)")
  if config.soup.m > 1 and "retrain_epochs" in plan_lib.varied_names(config.soup.vary):
    return (f"config key soup.vary = {config.soup.vary!r} is not allowed with strategy "
            "'sms_gmp'; allowed: seed, weight_decay, learning_rate (a phase's length is fixed "
            "by the schedule)")
  return None


def run(config, dataset, workdir):
  return runner.run(config, dataset, workdir, m=config.soup.m, plans=plans,
                    pretrain_epochs=phase_epochs(config)[0])


def planned_epochs(config: ml_collections.ConfigDict) -> list[tuple[int, int]]:
  """One model up to the first mask update, then soup.m candidates from each to the next."""
  epochs = phase_epochs(config) + [config.train.epochs]
  return [(epochs[0], 1)] + [(b - a, config.soup.m) for a, b in zip(epochs, epochs[1:])]


register(Strategy("sms_gmp", run, candidates=lambda config: config.soup.m, check=check,
                  planned_epochs=planned_epochs,
                  help="SMS between the mask updates of gradual magnitude pruning"))
