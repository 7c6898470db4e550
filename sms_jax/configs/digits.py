"""scikit-learn's 8x8 digits (shipped inside the package, no download), a small 2-D CNN.

Run: python -m sms_jax.main --config=configs/digits.py
"""

from sms_jax.configs import default


def get_config(arg: str = ""):
  """Digits with a small CNN; `arg` '' or 'quick'."""
  default.check_config_arg(arg, "quick", arg == "quick")
  config = default.get_config()
  config.dataset.name = "digits"
  config.model.name = "cnn2d"
  config.train.epochs = 30
  config.train.batch_size = 64
  config.train.learning_rate = 0.05
  config.train.weight_decay = 5e-4
  config.train.schedule = "cosine"
  config.train.warmup_epochs = 1.0
  config.checkpoint.every_epochs = 5
  if arg == "quick":
    config.train.epochs = 3
  return config
