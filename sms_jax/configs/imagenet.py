"""ImageNet-1K with ResNet-50 (TFDS `imagenet2012`, streamed; needs a manual download).

Standard recipe (Goyal et al. 2017): SGD with Nesterov momentum 0.9, batch 256, weight decay
1e-4, peak learning rate 0.1 with 5 warmup epochs, then 10x decays at 1/3, 2/3 and 8/9 of
90 epochs, label smoothing 0.1. The input streams from TFDS (`sms_jax.data.tfds_source`).
"""

from sms_jax.configs import default


def get_config():
  """ImageNet with ResNet-50 (takes no `:arg`)."""
  config = default.get_config()
  config.dataset.name = "imagenet2012"
  config.model.name = "resnet50"
  config.train.epochs = 90
  config.train.batch_size = 256
  config.train.eval_batch_size = 250
  config.train.learning_rate = 0.1
  config.train.weight_decay = 1e-4
  config.train.momentum = 0.9
  config.train.nesterov = True
  config.train.schedule = "multistep"
  config.train.warmup_epochs = 5.0
  config.train.milestones = (1 / 3, 2 / 3, 8 / 9)
  config.train.decay_factor = 0.1
  config.train.label_smoothing = 0.1
  config.checkpoint.every_epochs = 1
  config.checkpoint.keep = 3
  return config
