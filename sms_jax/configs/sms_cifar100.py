"""Sparse Model Soups on CIFAR-100 with WideResNet-28-10 (TFDS `cifar100`).

Pretraining is configs/cifar100.py (200 epochs, SGD + Nesterov, multistep 0.1). As in the SMS
paper's reference code: global magnitude pruning of every conv and linear kernel, LLR
retraining, candidates that differ in their seed, uniform soup, BatchNorm recalibrated on 20%
of the training split. The sparsity schedule (3 phases to 90%), m = 3 and 10 retraining epochs
per phase are this project's choice where REFERENCE.md gives none.
`--config=configs/sms_cifar100.py:wrn16_8` selects another network; `:quick` a smoke test.
"""

from sms_jax.configs import cifar100, sms_cifar10


def get_config(arg: str = ""):
  """SMS on CIFAR-100; `arg` as for configs/cifar100.py."""
  return sms_cifar10.add_sms(cifar100.get_config(arg), quick=arg == "quick")
