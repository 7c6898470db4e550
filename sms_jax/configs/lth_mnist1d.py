"""Lottery-ticket IMP on the embedded data, with the random-pruning paper's protocol.

The IMP of Gadhikar et al. (ICML 2023), as its reference code runs it: each level keeps 80% of
the alive weights (global magnitude pruning of the trained model), rewinds the survivors to
their initial values (`retrain.rewind = init`) and trains them with the whole pretraining
schedule again (`retrain.schedule = full`, as long as pretraining). Ten levels from dense end
at density 0.8**10 = 0.107 (sparsity 0.8926). The reference trains 150 epochs per level and
160 at the end; here every level is as long as pretraining (60 epochs of the 1-D CNN).
Start from a random mask instead of dense with `--config.init_mask.distribution=balanced`
(or er, erk, pyramidal, uniform; density `init_mask.density` = 0.3): the levels then prune
geometrically from 0.3 to the same final density (each keeps (0.107/0.3)**0.1 = 90%).
SMS on top: `--config.strategy=sms` (m candidates that all rewound identically, souped).
`:quick` is a smoke test.
"""

from sms_jax.configs import default, mnist1d


def get_config(arg: str = ""):
  """Lottery-ticket IMP on MNIST-1D; `arg` '' or 'quick'."""
  default.check_config_arg(arg, "quick", arg == "quick")
  config = mnist1d.get_config(arg)
  config.strategy = "imp"
  config.prune.n_phases = 10
  config.prune.goal_sparsity = 1.0 - 0.8 ** 10
  config.prune.selector = "global"
  config.retrain.schedule = "full"
  config.retrain.rewind = "init"
  config.retrain.epochs_per_phase = config.train.epochs
  if arg == "quick":
    config.prune.n_phases = 2
    config.prune.goal_sparsity = 1.0 - 0.8 ** 2
    config.retrain.epochs_per_phase = config.train.epochs
  return config
