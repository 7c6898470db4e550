"""What the random-pruning paper's experiment configs share: the methods, the starts, the
argument `METHOD,START[,quick]` (with further choices where a config has them) and the start
mask each method gets (configs/random_start_mnist1d.py, configs/random_start_cifar.py).

  method       what the start means
  sms, imp, lth  pretraining (and the phases) inside a random mask at density 0.3, or dense
  snip, synflow  scored at initialisation to the goal density: the whole network, or only
                 inside a random mask at 0.3 (`init_mask.within`)
  rigl, sms_rigl  a random mask at the goal density of that distribution (no dense start)
  granet, sms_granet  gradual pruning to the goal from dense, or from a random mask at 0.3
  edge_popup   subnetworks of frozen random weights at the distribution's layer densities
               (no dense start; its density is its config's)
  static       training inside a random mask at 0.3 (dense: dense training)
"""

from typing import Sequence

from sms_jax.configs import default

METHODS = ("sms", "imp", "lth", "snip", "synflow", "rigl", "granet", "sms_rigl", "sms_granet",
           "edge_popup", "static")
STARTS = ("dense", "uniform", "er", "erk", "balanced", "pyramidal")
START_DENSITY = 0.3
NO_DENSE_START = ("rigl", "sms_rigl", "edge_popup")


def parse(arg: str, choices: Sequence[tuple[str, Sequence[str], str]] = ()
          ) -> tuple[list[str], str, str, bool]:
  """Splits `arg`: each comma-separated part names one choice of a group, at most one per
  group, any order; `quick` is a flag.

  Args:
    arg: e.g. 'cifar100,vgg16,lth,pyramidal,quick'.
    choices: the config's own groups before the method and start, as (name, values,
      default), e.g. ('DATASET', ('cifar10', 'cifar100'), 'cifar10').
  Returns:
    (the choice of each group of `choices`, method, start, quick); method defaults to sms,
    start to balanced.
  Raises:
    ValueError: one line naming the argument and what is allowed.
  """
  groups = [*choices, ("METHOD", METHODS, "sms"), ("START", STARTS, "balanced")]
  parts = [part for part in arg.split(",") if part] if arg else []
  quick = "quick" in parts
  parts = [part for part in parts if part != "quick"]
  picked = [[p for p in parts if p in values] for _, values, _ in groups]
  known = all(any(p in values for _, values, _ in groups) for p in parts)
  chosen = [found[0] if found else fallback for found, (_, _, fallback) in zip(picked, groups)]
  method, start = chosen[-2:]
  allowed = ",".join(name for name, _, _ in groups) + "[,quick] with " + "; ".join(
      f"{name} one of {', '.join(values)}" for name, values, _ in groups) + (
      f" (not dense for {', '.join(NO_DENSE_START)})")
  default.check_config_arg(arg, allowed, known and all(len(found) <= 1 for found in picked)
                           and not (start == "dense" and method in NO_DENSE_START))
  return chosen[:-2], method, start, quick


def set_start(config, method: str, start: str, goal_sparsity: float) -> None:
  """Sets `config.init_mask` (and the goal) for `method` started from `start` (see the module
  docstring); `config` is the method's own config (strategy, schedules) already."""
  config.prune.goal_sparsity = goal_sparsity
  init = config.init_mask
  if method in ("snip", "synflow"):
    init.method, init.distribution, init.density = method, "global", 1.0 - goal_sparsity
    if start != "dense":
      init.within, init.within_density = start, START_DENSITY
  elif method in ("rigl", "sms_rigl"):
    init.distribution, init.density = start, 1.0 - goal_sparsity
  elif method == "edge_popup":
    init.distribution = start
  else:
    init.method = "random"
    init.distribution = start if start != "dense" else "none"
    init.density = START_DENSITY
