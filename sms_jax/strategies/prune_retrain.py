"""Iterative magnitude pruning (IMP) and Sparse Model Soups (SMS).

After dense pretraining, phase k = 1..n prunes the current model to sparsity
`1 - (1 - goal) ** (k / n)` (from a sparse start: geometric from its sparsity), retrains m
candidates from the pruned model with `retrain.schedule`, soups them and evaluates; the next
phase starts from the soup.
  imp     m = 1: each phase continues from its own retrained model;
  imp_mx  m = 1 with soup.m times longer retraining: the equal-compute baseline;
  sms     m = soup.m candidates that differ in `soup.vary`.
"""

import functools

import ml_collections

from sms_jax.phases import plan as plan_lib, runner
from sms_jax.sparsity import pruning
from sms_jax.strategies.registry import Strategy, register


def plans(config: ml_collections.ConfigDict, context: runner.PlanContext, *, m: int,
          length_factor: int) -> list[plan_lib.PhasePlan]:
  """`prune.n_phases` phases of `retrain.epochs_per_phase * length_factor` epochs."""
  epochs = config.retrain.epochs_per_phase * length_factor
  candidates = plan_lib.candidates(config, m, epochs, context.max_lr)
  length = max(c.retrain_epochs for c in candidates)
  prune = config.prune
  return [plan_lib.PhasePlan(
      phase=k, target_sparsity=pruning.phase_sparsity(prune.goal_sparsity, prune.n_phases, k,
                                                      start=context.start_sparsity),
      candidates=candidates, schedule=config.retrain.schedule, retrain_epochs=epochs,
      first_epoch=config.train.epochs + (k - 1) * length) for k in range(1, prune.n_phases + 1)]


def _register(name: str, m, length_factor, help_: str) -> None:
  """Registers `name`: m (`config -> int`) candidates of `length_factor` times the retraining."""

  def run(config, dataset, workdir):
    return runner.run(config, dataset, workdir, m=m(config), plans=functools.partial(
        plans, m=m(config), length_factor=length_factor(config)))

  def phase_epochs(config):
    return max(c.retrain_epochs for c in plan_lib.candidates(
        config, m(config), config.retrain.epochs_per_phase * length_factor(config), 1.0))

  def planned_epochs(config):
    return [(config.train.epochs, 1)] + [(phase_epochs(config), m(config))] * config.prune.n_phases

  register(Strategy(name, run, candidates=m, check=pruning.check_goal_sparsity,
                    phase_epochs=phase_epochs, planned_epochs=planned_epochs,
                    shares_pretraining=True, rewinds=True, help=help_))


_register("imp", lambda config: 1, lambda config: 1,
          "iterative magnitude pruning: one lineage, prune then retrain")
_register("imp_mx", lambda config: 1, lambda config: config.soup.m,
          "IMP retraining soup.m times longer: the same compute as SMS")
_register("sms", lambda config: config.soup.m, lambda config: 1,
          "Sparse Model Soups: soup.m candidates per phase, souped")
