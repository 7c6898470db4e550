"""CIFAR-100 with WideResNet-28-10, as in the SMS paper (TFDS `cifar100`).

Standard WRN recipe (Zagoruyko & Komodakis 2016): SGD with Nesterov momentum 0.9, batch 128,
weight decay 5e-4, peak learning rate 0.1 decayed 10x at 50% and 75% of 200 epochs, random
crop + flip. `--config=configs/cifar100.py:wrn16_8` selects another width/depth.
"""

from sms_jax.configs import default


def get_config(arg: str = ""):
  """CIFAR-100; `arg` '' (WRN-28-10), a WideResNet name (e.g. 'wrn16_8') or 'quick'."""
  default.check_config_arg(arg, "quick or wrn<depth>_<width>",
                           arg == "quick" or arg.startswith("wrn"))
  config = default.get_config()
  config.dataset.name = "cifar100"
  config.model.name = arg if arg.startswith("wrn") else "wrn28_10"
  config.train.epochs = 200
  config.train.batch_size = 128
  config.train.eval_batch_size = 500
  config.train.learning_rate = 0.1
  config.train.weight_decay = 5e-4
  config.train.momentum = 0.9
  config.train.nesterov = True
  config.train.schedule = "multistep"
  config.train.milestones = (0.5, 0.75)
  config.train.decay_factor = 0.1
  config.checkpoint.every_epochs = 5
  config.checkpoint.keep = 2
  if arg == "quick":
    config.model.name = "wrn16_1"
    config.train.epochs = 2
    config.dataset.num_train = 2048
  return config
