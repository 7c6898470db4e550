"""Budgeted IMP on the embedded MNIST-1D data, in the budget of configs/mnist1d.py.

configs/mnist1d.py's imp and sms train 60 dense epochs, then 4 phases of 10: 100 epochs per
model. Here `strategy=bimp` spends the same 100: a dense run of 40 epochs (the 60-epoch
cosine schedule and its 2 warmup epochs compressed into 40, so it decays to 0 at epoch 40),
then 4 phases of 15 epochs to 95% sparsity, each retrained with ALLR.
`--config.strategy=sms_bimp` trains m = 4 candidates per phase (seeds) and soups them.
`:quick` is a smoke test in the budget of mnist1d.py:quick (7 epochs: 1 dense, 2 phases of 3).
"""

from sms_jax.configs import default, mnist1d


def get_config(arg: str = ""):
  """BIMP on MNIST-1D; `arg` '' or 'quick'."""
  default.check_config_arg(arg, "quick", arg == "quick")
  config = mnist1d.get_config(arg)
  config.strategy = "bimp"
  config.retrain.schedule = "allr"
  config.bimp.pretrain_epochs = 40  # 20 of the 60 dense epochs go to the phases: 15 each.
  if arg == "quick":  # mnist1d's quick: 3 dense epochs + 2 phases of 2; here 1 + 2 x 3.
    config.bimp.pretrain_epochs = 1
  return config
