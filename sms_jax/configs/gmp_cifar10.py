"""Gradual magnitude pruning on CIFAR-10 with ResNet-20 (TFDS `cifar10`; `tfds build cifar10`).

Training is configs/cifar10.py (200 epochs, SGD + Nesterov, multistep 0.1 at 50% and 75%);
during it the sparsity of every conv and linear kernel rises to 90% along the cubic schedule
s_t = s_f * (1 - (1 - t/T)**3) of Zhu & Gupta (2017) between epochs 10 and 90, with a global
magnitude mask updated every 100 steps inside the training step, so the last 110 epochs
(including both decays) train the final mask. The schedule's epochs and update interval are
this project's choice; REFERENCE.md gives none.
`--config.strategy=sms_gmp` puts Sparse Model Soups on top (prune.n_phases = 3 mask updates,
m = 3 candidates between them); `:quick` is a smoke test.
"""

from sms_jax.configs import cifar10, default


def get_config(arg: str = ""):
  """GMP on CIFAR-10; `arg` '' or 'quick'."""
  default.check_config_arg(arg, "quick", arg == "quick")
  config = cifar10.get_config(arg)
  config.strategy = "gmp"
  config.prune.goal_sparsity = 0.9
  config.prune.selector = "global"
  config.gradual.start_epoch = 10
  config.gradual.end_epoch = 90
  config.gradual.update_every = 100
  config.prune.n_phases = 3
  config.soup.m = 3
  config.soup.vary = "seed"
  if arg == "quick":
    config.train.epochs = 3
    config.gradual.start_epoch = 0
    config.gradual.end_epoch = 2
    config.gradual.update_every = 5
    config.prune.n_phases = 2
    config.soup.m = 2
  return config
