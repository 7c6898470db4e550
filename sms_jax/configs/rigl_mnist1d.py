"""Dynamic sparse training with gradient regrowth on the embedded data: RigL and GraNet.

RigL (Evci et al., 2020): the 1-D CNN of configs/mnist1d.py trains for 60 epochs inside a
random ERK mask keeping 5% of its prunable weights (95% sparsity). Once an epoch (28 steps)
until 3/4 of the run (epoch 45), every layer drops the fraction alpha_t of its alive weights
with the smallest magnitudes, alpha_t falling from 0.3 to 0 along a cosine, and regrows as many
where the dense gradient's magnitude is largest, starting at 0; each layer keeps its ERK
density. configs/set_mnist1d.py has the same start, interval and end with SET's constant
fraction and random regrowth;
`--config.strategy=dense` trains the start mask without regrowth (static sparse training).

GraNet (Liu et al., 2021), `:granet`: from a dense start, gradual magnitude pruning (global)
along the cubic schedule to 95% sparsity by epoch 45, once an epoch, with RigL's drop and
regrowth after each pruning step (none at the last). The same as `--config.strategy=granet
--config.init_mask.distribution=none`; `--config.strategy=granet --config.init_mask.density=0.5`
starts it from a random ERK mask at density 0.5 instead (GraNet's sparse start).

Sparse Model Soups on them, `:sms` (strategy sms_rigl) and `:granet,sms` (sms_granet): the
same start, fraction and end, but the masks are updated only at 4 phase starts (epochs 11, 22,
34, 45 of gradual's 0 to 45); one model trains up to the first, then from each update soup.m = 4
candidates (seeds) train with the masks fixed to the next (the last to epoch 60), and their
soup starts the next phase. The last update, at rigl.end_fraction of the run, regrows nothing.

Arguments (comma-separated): `quick` (a smoke test of 3 epochs; with `sms`, 2 phases), `granet`,
`sms`.
"""

from sms_jax.configs import default, mnist1d

_ARGS = ("quick", "granet", "sms")


def get_config(arg: str = ""):
  """RigL (or with `granet`, GraNet; with `sms`, their soups) on MNIST-1D; `arg` a
  comma-separated subset of quick, granet, sms."""
  flags = set(arg.split(",")) if arg else set()
  default.check_config_arg(arg, "a comma-separated subset of quick, granet, sms",
                           flags <= set(_ARGS))
  config = mnist1d.get_config()
  config.strategy = "rigl"
  config.init_mask.distribution = "erk"
  config.init_mask.density = 0.05
  config.init_mask.method = "random"
  config.rigl.update_every = 28  # Steps: once an epoch (3600 training examples / 128).
  config.rigl.drop_fraction = 0.3
  config.rigl.end_fraction = 0.75
  # GraNet's pruning (strategy granet).
  config.prune.goal_sparsity = 0.95
  config.prune.selector = "global"
  config.gradual.start_epoch = 0
  config.gradual.end_epoch = 45
  config.gradual.update_every = 28
  if "quick" in flags:
    config.train.epochs = 3
    config.train.warmup_epochs = 0.0
    config.rigl.update_every = 10
    config.gradual.end_epoch = 2
    config.gradual.update_every = 10
  if "granet" in flags:
    config.strategy = "granet"
    config.init_mask.distribution = "none"
  if "sms" in flags:
    config.strategy = "sms_" + config.strategy
    config.prune.n_phases = 2 if "quick" in flags else 4
    config.soup.m = 4
    config.soup.vary = "seed"
  return config
