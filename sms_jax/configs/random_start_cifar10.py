"""Start sparse on CIFAR-10: ResNet-18 in a random balanced mask at density 0.3, then IMP to 1%.

The sparse-to-sparse experiment of Gadhikar et al. (ICML 2023): SGD, learning rate 0.1,
momentum 0.9, weight decay 5e-4, batch 128, 160 epochs (the paper's stated hyperparameters; the
schedule, cosine here, is this project's choice), then IMP with global magnitude pruning inside
the mask toward density 0.01 (the reference keeps 80% of the weights per level: from 0.3 to 0.01
that is about 15 levels; 15 phases of 10 LLR epochs here). Needs `tfds build cifar10`.
`:quick` is a smoke test.
"""

from sms_jax.configs import cifar10, default


def get_config(arg: str = ""):
  """ResNet-18 on CIFAR-10 from a balanced random mask; `arg` '' or 'quick'."""
  default.check_config_arg(arg, "quick", arg == "quick")
  config = cifar10.get_config(arg)
  config.model.name = "resnet18"
  config.train.epochs = 160
  config.train.learning_rate = 0.1
  config.train.weight_decay = 5e-4
  config.train.momentum = 0.9
  config.train.nesterov = False
  config.train.schedule = "cosine"
  config.init_mask.distribution = "balanced"
  config.init_mask.density = 0.3
  config.init_mask.method = "random"
  config.strategy = "imp"
  config.prune.goal_sparsity = 0.99
  config.prune.n_phases = 15
  config.prune.selector = "global"
  config.retrain.schedule = "llr"
  config.retrain.epochs_per_phase = 10
  if arg == "quick":
    config.train.epochs = 2
    config.prune.n_phases = 2
    config.retrain.epochs_per_phase = 1
  return config
