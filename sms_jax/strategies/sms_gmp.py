"""Sparse Model Soups on gradual magnitude pruning (sms_gmp), and its equal-compute baseline
(gmp_mx).

  sms_gmp  the phases of `sms_jax.phases.gradual`: one model up to the first of
           `prune.n_phases` mask updates of the cubic schedule; phase k prunes the current
           model to the schedule's sparsity at its epoch and trains soup.m candidates from
           it to the next update (the last phase: to train.epochs), going on with the
           training learning-rate schedule; their soup starts the next phase. Candidates
           differ as in `sms` (seed, weight_decay, learning_rate: the peak of the schedule
           they continue); with soup.m = 1 each phase trains one model (its record holds
           that `model`, no soup);
  gmp_mx   the same phases with one model, each soup.m times longer, the learning-rate
           schedule after the first mask update stretched soup.m times: the compute of
           sms_gmp (as imp_mx is to sms), at the same mask updates and sparsities.
The `dense` results entry of both is the model before the first mask update.
"""

import functools

from sms_jax.phases import gradual, runner
from sms_jax.strategies.registry import Strategy, register

# Kept for callers of the former module-level function.
phase_epochs = gradual.phase_epochs


def _run_sms_gmp(config, dataset, workdir):
  return runner.run(config, dataset, workdir, m=config.soup.m,
                    plans=functools.partial(gradual.plans, m=config.soup.m),
                    pretrain_epochs=gradual.phase_epochs(config)[0])


def _run_gmp_mx(config, dataset, workdir):
  factor = config.soup.m
  return runner.run(config, dataset, workdir, m=1,
                    plans=functools.partial(gradual.plans, m=1, length_factor=factor),
                    pretrain_epochs=gradual.phase_epochs(config)[0],
                    phase_runner=functools.partial(gradual.StretchedRunner, factor=factor))


register(Strategy(
    "sms_gmp", _run_sms_gmp, candidates=lambda config: config.soup.m,
    **gradual.strategy_fields(),
    help="SMS between the mask updates of gradual magnitude pruning"))
register(Strategy(
    "gmp_mx", _run_gmp_mx, **gradual.strategy_fields(stretched=True),
    help="sms_gmp's phases with one model trained soup.m times longer: its equal compute"))
