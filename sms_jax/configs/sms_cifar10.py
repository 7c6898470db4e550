"""Sparse Model Soups on CIFAR-10 with ResNet-56, the SMS paper's setting (TFDS `cifar10`).

Prepare the data once with `tfds build cifar10`. Pretraining as in the SMS reference code
(`reference_pretraining`): SGD with momentum 0.9 (Nesterov, as the reference uses whenever
weight decay > 0), batch 128, weight decay 1e-4, learning rate linear from 0.1 to 0 per
iteration without warmup (the reference's `(Linear, 0.1)`), 200 epochs; random crop + flip.
The epochs, batch size and weight decay are common CIFAR values that REFERENCE.md does not
confirm: check them against the paper's pretraining table before relying on them.
SMS as in the reference: global magnitude pruning of every conv and linear kernel, LLR
retraining (10% warmup to the pretraining peak, then linear decay to 0), m candidates that
differ in their seed (batch order and augmentation), uniform soup, BatchNorm recalibrated on
20% of the training split, 10% of train held out for validation. The sparsity schedule
(3 phases to 90%), m = 3 and 10 retraining epochs per phase are this project's choice where
REFERENCE.md gives none. CIFAR-10-C (TFDS `cifar10_corrupted`, severity 3) is used for the
OOD evaluation when prepared.
`--config=configs/sms_cifar10.py:resnet18` (or `vgg16`, `resnet20`, another CIFAR ResNet or
VGG) selects the network; `:quick` is a smoke test: ResNet-20 on 2,048 examples, 2 epochs,
then 2 phases of 1 epoch with m = 2.
"""

from sms_jax.configs import cifar10, default

ARGS = "quick, resnet<6n+2> (default resnet56), resnet18 or vgg<11|13|16|19>"


def get_config(arg: str = ""):
  """SMS on CIFAR-10; `arg`: '' (ResNet-56), 'quick' or a model name (see ARGS)."""
  default.check_config_arg(arg, ARGS, arg == "quick" or arg.startswith(("resnet", "vgg")))
  config = cifar10.get_config()
  config.model.name = arg if arg.startswith(("resnet", "vgg")) else "resnet56"
  reference_pretraining(config, epochs=200, batch_size=128, weight_decay=1e-4)
  add_sms(config, quick=arg == "quick")
  if arg == "quick":
    config.model.name = "resnet20"
    quick_pretraining(config)
  return config


def reference_pretraining(config, *, epochs: int, batch_size: int, weight_decay: float):
  """`config` with the SMS reference's pretraining optimizer and schedule: SGD, momentum 0.9,
  Nesterov, peak learning rate 0.1 decayed linearly to 0 per iteration, no warmup."""
  config.train.epochs = epochs
  config.train.batch_size = batch_size
  config.train.weight_decay = weight_decay
  config.train.optimizer = "sgd"
  config.train.learning_rate = 0.1
  config.train.momentum = 0.9
  config.train.nesterov = True
  config.train.schedule = "linear"
  config.train.warmup_epochs = 0.0
  return config


def quick_pretraining(config, num_train: int = 2048, epochs: int = 2):
  """`config` shrunk to a smoke test: the first `num_train` training examples, `epochs`
  epochs, a checkpoint every epoch."""
  config.dataset.num_train = num_train
  config.train.epochs = epochs
  config.checkpoint.every_epochs = 1
  return config


def add_sms(config, quick: bool):
  """`config` with the SMS phases of this file (shared by configs/sms_cifar100.py and
  configs/sms_imagenet.py); `quick`: 2 phases of 1 epoch, m = 2."""
  config.strategy = "sms"
  config.prune.goal_sparsity = 0.9
  config.prune.n_phases = 3
  config.prune.selector = "global"
  config.retrain.schedule = "llr"
  config.retrain.epochs_per_phase = 10
  config.soup.m = 3
  config.soup.method = "uniform"
  config.soup.vary = "seed"
  config.soup.bn_recalibration_frac = 0.2
  if quick:
    config.prune.n_phases = 2
    config.retrain.epochs_per_phase = 1
    config.soup.m = 2
  return config
