"""Pruning during training on the embedded MNIST-1D data: SMS on gradual magnitude pruning.

One 60-epoch cosine training run of the 1-D CNN (configs/mnist1d.py's pretraining) in which
the sparsity rises to 95% along the cubic schedule between epochs 10 and 45.
`strategy=sms_gmp` (the default here) updates the mask at 12 phase starts (epochs 13, 16, ...,
42, 45): from each, m = 4 candidates with different seeds train to the next update (the last
one to epoch 60), going on with the training schedule, and their soup starts the next phase.
`--config.strategy=gmp` is plain GMP: one model, its mask updated every epoch (28 steps) inside
the training step. Fewer phases make the schedule coarser and cost accuracy here: 4 phases
ended about 3 points below GMP, 12 within half a point of it (bench/gmp_mnist1d.md). `:quick` is
a smoke test.
"""

from sms_jax.configs import default, mnist1d


def get_config(arg: str = ""):
  """SMS-GMP on MNIST-1D; `arg` '' or 'quick'."""
  default.check_config_arg(arg, "quick", arg == "quick")
  config = mnist1d.get_config()
  config.strategy = "sms_gmp"
  config.prune.goal_sparsity = 0.95
  config.prune.n_phases = 12
  config.prune.selector = "global"
  config.gradual.start_epoch = 10
  config.gradual.end_epoch = 45
  config.gradual.update_every = 28  # Steps: once an epoch (3600 training examples / 128).
  config.soup.m = 4
  config.soup.vary = "seed"
  if arg == "quick":
    config.train.epochs = 6
    config.train.warmup_epochs = 0.0
    config.gradual.start_epoch = 1
    config.gradual.end_epoch = 4
    config.gradual.update_every = 10
    config.prune.n_phases = 2
    config.soup.m = 2
  return config
