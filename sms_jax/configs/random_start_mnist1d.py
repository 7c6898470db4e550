"""Start sparse on the embedded data: the random-pruning paper's experiments on MNIST-1D.

Gadhikar et al. (ICML 2023) start each sparsification method from a random sparse network
and compare it with the same method started dense. `--config=random_start_mnist1d:METHOD,START`
builds that run for the 1-D CNN of configs/mnist1d.py, every method ending at 95% sparsity:

  METHOD      what runs (its config)                       START dense | a distribution
  sms (default), imp   phases of configs/mnist1d.py        from dense | a mask at density 0.3
  lth         lottery-ticket IMP (configs/lth_mnist1d.py:  13 levels | 8 levels of 80%
              rewind to init, the whole schedule per level) from dense | from 0.3
  snip, synflow  scored at initialisation to density 0.05, then trained (strategy dense):
              the whole network | only inside the random mask at 0.3 (`init_mask.within`)
  rigl        configs/rigl_mnist1d.py: drop and regrow at fixed density, so its random start
              mask has the final density 0.05 (no dense start: GraNet is RigL's dense start)
  granet      gmp's schedule with RigL's regrowth to 0.95    from dense | from 0.3
  edge_popup  configs/edge_popup_mnist1d.py (frozen random weights, trained scores) at the
              distribution's layer densities of density 0.5 (no dense start)
  static      train inside the start mask only (strategy dense: static sparse training at
              0.3; from dense: dense training)

START: dense, or a layerwise distribution of the random mask: uniform, er, erk, balanced
(default), pyramidal. Append `,quick` for a smoke test. Random masks have exact counts per
layer; the reference draws Bernoulli masks (`--config.init_mask.method=bernoulli`).
"""

from sms_jax.configs import default, edge_popup_mnist1d, lth_mnist1d, mnist1d, rigl_mnist1d

METHODS = ("sms", "imp", "lth", "snip", "synflow", "rigl", "granet", "edge_popup", "static")
STARTS = ("dense", "uniform", "er", "erk", "balanced", "pyramidal")
START_DENSITY = 0.3
GOAL_SPARSITY = 0.95
_NO_DENSE_START = ("rigl", "edge_popup")


def _parse(arg: str) -> tuple[str, str, bool]:
  """`'lth,pyramidal,quick'` -> ('lth', 'pyramidal', True); defaults sms, balanced."""
  parts = [part for part in arg.split(",") if part] if arg else []
  quick = "quick" in parts
  parts = [part for part in parts if part != "quick"]
  method = next((p for p in parts if p in METHODS), "sms")
  start = next((p for p in parts if p in STARTS), "balanced")
  known = len(parts) <= 2 and all(p in METHODS + STARTS for p in parts) and (
      sum(p in METHODS for p in parts) <= 1 and sum(p in STARTS for p in parts) <= 1)
  default.check_config_arg(
      arg, f"METHOD,START[,quick] with METHOD one of {', '.join(METHODS)} and START one of "
      f"{', '.join(STARTS)} (not dense for {' or '.join(_NO_DENSE_START)})",
      known and not (start == "dense" and method in _NO_DENSE_START))
  return method, start, quick


def get_config(arg: str = ""):
  """The random-pruning paper's run of METHOD from START on MNIST-1D (see the module
  docstring); `arg` 'METHOD,START[,quick]', each part optional."""
  method, start, quick = _parse(arg)
  sparse = start != "dense"
  quick_arg = "quick" if quick else ""
  if method == "lth":
    config = lth_mnist1d.get_config(quick_arg)
    config.prune.goal_sparsity = GOAL_SPARSITY
    if not quick:
      config.prune.n_phases = 8 if sparse else 13  # About 80% kept per level.
  elif method in ("rigl", "granet"):
    config = rigl_mnist1d.get_config(",".join(filter(None, [quick_arg, "granet" * (
        method == "granet")])))
  elif method == "edge_popup":
    config = edge_popup_mnist1d.get_config(quick_arg)
  else:
    config = mnist1d.get_config(quick_arg)
    config.strategy = {"snip": "dense", "synflow": "dense", "static": "dense"}.get(method,
                                                                                  method)
  config.prune.goal_sparsity = GOAL_SPARSITY
  init = config.init_mask
  if method in ("snip", "synflow"):
    init.method, init.distribution, init.density = method, "global", 1.0 - GOAL_SPARSITY
    if sparse:
      init.within, init.within_density = start, START_DENSITY
  elif method == "rigl":
    init.distribution, init.density = start, 1.0 - GOAL_SPARSITY
  elif method == "edge_popup":
    init.distribution = start
  else:
    init.method = "random"
    init.distribution = start if sparse else "none"
    init.density = START_DENSITY
  return config
