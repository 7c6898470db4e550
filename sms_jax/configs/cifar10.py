"""CIFAR-10 with ResNet-20 (TFDS `cifar10`; prepare it once with `tfds build cifar10`).

The classic CIFAR recipe (He et al. 2016), used as the SMS paper's pretraining setting for
its ResNet family: SGD with Nesterov momentum 0.9, batch 128, weight decay 1e-4, peak
learning rate 0.1 decayed 10x at 50% and 75% of 200 epochs, random crop + flip.
`--config=configs/cifar10.py:resnet56` selects another depth.
"""

from sms_jax.configs import default


def get_config(arg: str = ""):
  """CIFAR-10; `arg` '' (ResNet-20), a CIFAR ResNet name (e.g. 'resnet56') or 'quick'."""
  default.check_config_arg(arg, "quick or resnet<6n+2>",
                           arg == "quick" or arg.startswith("resnet"))
  config = default.get_config()
  config.dataset.name = "cifar10"
  config.model.name = arg if arg.startswith("resnet") else "resnet20"
  config.train.epochs = 200
  config.train.batch_size = 128
  config.train.eval_batch_size = 1000
  config.train.learning_rate = 0.1
  config.train.weight_decay = 1e-4
  config.train.momentum = 0.9
  config.train.nesterov = True
  config.train.schedule = "multistep"
  config.train.milestones = (0.5, 0.75)
  config.train.decay_factor = 0.1
  config.checkpoint.every_epochs = 5
  config.checkpoint.keep = 2
  if arg == "quick":
    config.train.epochs = 2
    config.dataset.num_train = 2048
  return config
