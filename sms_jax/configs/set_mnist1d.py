"""Dynamic sparse training on the embedded data: SET from a random ERK mask at density 0.05.

The 1-D CNN of configs/mnist1d.py trains for 60 epochs inside a random ERK mask keeping 5% of
its prunable weights (the 95% sparsity the pruning configs end at). Once an epoch (28 steps)
until epoch 45, every layer drops the 30% of its alive weights with the smallest magnitudes
and regrows as many at random positions, starting at 0 (Mocanu et al., 2018); its density
never changes. `--config.strategy=dense` trains the same start mask without regrowth
(static sparse training), the baseline SET improves on. `:quick` is a smoke test.
"""

from sms_jax.configs import default, mnist1d


def get_config(arg: str = ""):
  """SET on MNIST-1D; `arg` '' or 'quick'."""
  default.check_config_arg(arg, "quick", arg == "quick")
  config = mnist1d.get_config()
  config.strategy = "set"
  config.init_mask.distribution = "erk"
  config.init_mask.density = 0.05
  config.init_mask.method = "random"
  config.regrow.update_every = 28  # Steps: once an epoch (3600 training examples / 128).
  config.regrow.drop_fraction = 0.3
  config.regrow.end_epoch = 45
  if arg == "quick":
    config.train.epochs = 3
    config.train.warmup_epochs = 0.0
    config.regrow.update_every = 10
    config.regrow.end_epoch = 2
  return config
