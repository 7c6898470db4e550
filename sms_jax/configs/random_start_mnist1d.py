"""Start sparse on the embedded data: a random balanced mask at density 0.3, then SMS to 95%.

The second paper's sparse-to-sparse setting (Gadhikar et al. 2023) on MNIST-1D: the 1-D CNN
trains from scratch inside a random mask with the same number of weights in every layer, then
the pruning phases of configs/mnist1d.py continue inside that mask (a pruned weight is never
revived). `--config.init_mask.distribution=erk|er|uniform|pyramidal` compares distributions;
`--config.strategy=imp` runs plain IMP from the same mask; `:quick` is a smoke test.
"""

from sms_jax.configs import mnist1d


def get_config(arg: str = ""):
  """The embedded default from a random sparse start; `arg` '' or 'quick'."""
  config = mnist1d.get_config(arg)
  config.init_mask.distribution = "balanced"
  config.init_mask.density = 0.3
  config.init_mask.method = "random"
  return config
