"""Sparse Model Soups on ImageNet-1K with ResNet-50, the SMS paper's setting (TFDS `imagenet2012`).

The data streams from TFDS (manual download, see configs/imagenet.py); training crops are
random-resized 224x224 with flips (the reference's RandomResizedCrop + flip), evaluation a
centre crop. Pretraining as in the SMS reference code (configs/sms_cifar10.py
`reference_pretraining`): SGD with Nesterov momentum 0.9, peak learning rate 0.1 decayed
linearly to 0 per iteration without warmup, plain cross-entropy (no label smoothing), with
batch 256, weight decay 1e-4 and 90 epochs: common ImageNet values that REFERENCE.md does not
confirm; check them against the paper's pretraining table before relying on them. SMS as in
configs/sms_cifar10.py: 3 phases to 90%, m = 3 candidates differing in their seed, 10 LLR
epochs per phase, uniform soup.
`--config=configs/sms_imagenet.py:quick` is a smoke test: ResNet-18 (ImageNet variant) on
2,560 training examples at 64x64, 1 epoch, then 2 phases of 1 epoch with m = 2.
"""

from sms_jax.configs import default, imagenet, sms_cifar10


def get_config(arg: str = ""):
  """SMS on ImageNet; `arg`: '' (ResNet-50) or 'quick'."""
  default.check_config_arg(arg, "quick", arg == "quick")
  config = imagenet.get_config()
  sms_cifar10.reference_pretraining(config, epochs=90, batch_size=256, weight_decay=1e-4)
  config.train.label_smoothing = 0.0
  sms_cifar10.add_sms(config, quick=arg == "quick")
  if arg == "quick":
    config.model.name = "resnet18_imagenet"
    config.dataset.image_size = 64
    config.train.batch_size = 64
    config.train.eval_batch_size = 128
    sms_cifar10.quick_pretraining(config, num_train=2560, epochs=1)
  return config
