"""Sparse Model Soups on CIFAR-100 with the SMS reference's WideResNet-22 (TFDS `cifar100`).

The reference's CIFAR-100 model (its class `WideResNet20`) is a WideResNet of depth 22 with
dropout 0.3 in every block; its code builds width 10 (a comment there says 2), so the default
is `wrn22_10_d0.3` (26.9M parameters) and `:wrn22_2_d0.3` (1.09M) is the narrow one;
`:wrn28_10_d0.3` is its WRN-28-10. Training adds the reference's CIFAR-100 augmentation:
random crop, flip, then a random rotation of up to 15 degrees (`crop_flip_rotate`).
Pretraining and SMS as in configs/sms_cifar10.py (SGD with Nesterov momentum 0.9, batch 128,
weight decay 1e-4, learning rate linear from 0.1 to 0 over 200 epochs; 3 phases to 90%,
m = 3, 10 LLR epochs each, uniform soup); the same caveat holds for the values REFERENCE.md
does not confirm.
`--config=configs/sms_cifar100.py:<wrn name>` selects another WideResNet (e.g. `wrn16_8`);
`:quick` is a smoke test: WRN-16-1 with dropout 0.3 and the rotation, on 2,048 examples,
2 epochs, then 2 phases of 1 epoch with m = 2.
"""

from sms_jax.configs import cifar100, default, sms_cifar10

ARGS = "quick or wrn<depth>_<width>[_d<rate>] (default wrn22_10_d0.3)"


def get_config(arg: str = ""):
  """SMS on CIFAR-100; `arg`: '' (WRN-22-10, dropout 0.3), 'quick' or a WideResNet name."""
  default.check_config_arg(arg, ARGS, arg == "quick" or arg.startswith("wrn"))
  config = cifar100.get_config()
  config.model.name = arg if arg.startswith("wrn") else "wrn22_10_d0.3"
  config.dataset.augment = "crop_flip_rotate"
  sms_cifar10.reference_pretraining(config, epochs=200, batch_size=128, weight_decay=1e-4)
  sms_cifar10.add_sms(config, quick=arg == "quick")
  if arg == "quick":
    config.model.name = "wrn16_1_d0.3"
    sms_cifar10.quick_pretraining(config)
  return config
