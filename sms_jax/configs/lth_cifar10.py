"""Lottery-ticket IMP on CIFAR-10 with the random-pruning paper's protocol (ResNet-18).

Gadhikar et al. (ICML 2023), their reference's IMP: SGD (learning rate 0.1, momentum 0.9,
weight decay 5e-4, batch 128), the first training 160 epochs; each level keeps 80% of the
alive weights (global magnitude), rewinds the survivors to their initial values
(`retrain.rewind = init`) and trains 150 epochs with the whole training schedule stretched
over them (`retrain.schedule = full`). Twenty levels end at density 0.8**20 = 0.0115. The
reference's final level trains 160 epochs; here every level trains 150 (the last phase is the
final training). Start from a random mask with `--config.init_mask.distribution=balanced` (or
er, erk, pyramidal; density 0.3). 160 + 20 x 150 = 3,160 epochs: a GPU job. Needs
`tfds build cifar10`. `:quick` is a smoke test.
"""

from sms_jax.configs import default, random_start_cifar10


def get_config(arg: str = ""):
  """Lottery-ticket IMP of ResNet-18 on CIFAR-10; `arg` '' or 'quick'."""
  default.check_config_arg(arg, "quick", arg == "quick")
  config = random_start_cifar10.get_config(arg)
  config.init_mask.distribution = "none"
  config.prune.n_phases = 20
  config.prune.goal_sparsity = 1.0 - 0.8 ** 20
  config.retrain.schedule = "full"
  config.retrain.rewind = "init"
  config.retrain.epochs_per_phase = 150
  if arg == "quick":
    config.prune.n_phases = 2
    config.prune.goal_sparsity = 1.0 - 0.8 ** 2
    config.retrain.epochs_per_phase = 1
  return config
