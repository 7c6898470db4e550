"""The embedded default: MNIST-1D (generated locally, no download), a small 1-D CNN.

Run: python -m sms_jax.main --config=configs/mnist1d.py
A short variant for smoke tests: --config=configs/mnist1d.py:quick
"""

from configs import default


def get_config(arg: str = ""):
  """The embedded default; `arg` '' or 'quick'."""
  default.check_config_arg(arg, "quick", arg == "quick")
  config = default.get_config()
  config.dataset.name = "mnist1d"
  config.model.name = "cnn1d"
  config.train.epochs = 60
  config.train.batch_size = 128
  config.train.learning_rate = 0.05
  config.train.weight_decay = 5e-4
  config.train.schedule = "cosine"
  config.train.warmup_epochs = 2.0
  config.checkpoint.every_epochs = 5  # A save costs ~0.15 s, a quarter of an epoch here.
  if arg == "quick":
    config.train.epochs = 3
    config.train.warmup_epochs = 0.0
  return config
