"""Sparse Model Soups on CIFAR-10 with ResNet-20 (TFDS `cifar10`; `tfds build cifar10` first).

Pretraining is configs/cifar10.py (200 epochs, SGD + Nesterov, multistep 0.1). As in the SMS
paper's reference code: global magnitude pruning of every conv and linear kernel, LLR
retraining (10% warmup to the pretraining peak, then linear decay to 0), m candidates that
differ in their seed (batch order and augmentation), uniform soup, BatchNorm recalibrated on
20% of the training split, 10% of train held out for validation. The sparsity schedule
(3 phases to 90%), m = 3 and 10 retraining epochs per phase are this project's choice where
REFERENCE.md gives none. CIFAR-10-C (TFDS `cifar10_corrupted`, severity 3) is used for the
OOD evaluation when prepared.
`--config=configs/sms_cifar10.py:resnet56` selects another depth; `:quick` a smoke test.
"""

from sms_jax.configs import cifar10


def get_config(arg: str = ""):
  """SMS on CIFAR-10; `arg` as for configs/cifar10.py."""
  return add_sms(cifar10.get_config(arg), quick=arg == "quick")


def add_sms(config, quick: bool):
  """`config` with the SMS phases of this file (shared by configs/sms_cifar100.py)."""
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
