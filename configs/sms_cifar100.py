"""Sparse Model Soups on CIFAR-100 with WideResNet-28-10 (TFDS `cifar100`).

Pretraining is configs/cifar100.py (200 epochs, SGD + Nesterov, multistep 0.1). As in the SMS
paper's reference code: global magnitude pruning of every conv and linear kernel, LLR
retraining, candidates that differ in their seed, uniform soup, BatchNorm recalibrated on 20%
of the training split. The sparsity schedule (3 phases to 90%), m = 3 and 10 retraining epochs
per phase are this project's choice where REFERENCE.md gives none.
`--config=configs/sms_cifar100.py:wrn16_8` selects another network; `:quick` a smoke test.
"""

from configs import cifar100


def get_config(arg: str = ""):
  """SMS on CIFAR-100; `arg` as for configs/cifar100.py."""
  config = cifar100.get_config(arg)
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
  if arg == "quick":
    config.prune.n_phases = 2
    config.retrain.epochs_per_phase = 1
    config.soup.m = 2
  return config
