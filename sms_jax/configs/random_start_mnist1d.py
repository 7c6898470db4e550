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
  sms_rigl, sms_granet  their soups (configs/rigl_mnist1d.py:sms, :granet,sms): the updates
              at 4 phase starts, soup.m = 4 candidates between them; starts as rigl, granet
  edge_popup  configs/edge_popup_mnist1d.py (frozen random weights, trained scores) at the
              distribution's layer densities of density 0.5 (no dense start)
  static      train inside the start mask only (strategy dense: static sparse training at
              0.3; from dense: dense training)

START: dense, or a layerwise distribution of the random mask: uniform, er, erk, balanced
(default), pyramidal. Append `,quick` for a smoke test. Random masks have exact counts per
layer; the reference draws Bernoulli masks (`--config.init_mask.method=bernoulli`).
"""

from sms_jax.configs import _random_start as random_start
from sms_jax.configs import edge_popup_mnist1d, lth_mnist1d, mnist1d, rigl_mnist1d

METHODS, STARTS = random_start.METHODS, random_start.STARTS
START_DENSITY = random_start.START_DENSITY
GOAL_SPARSITY = 0.95


def get_config(arg: str = ""):
  """The random-pruning paper's run of METHOD from START on MNIST-1D (see the module
  docstring); `arg` 'METHOD,START[,quick]', each part optional."""
  _, method, start, quick = random_start.parse(arg)
  quick_arg = "quick" if quick else ""
  if method == "lth":
    config = lth_mnist1d.get_config(quick_arg)
    if not quick:
      config.prune.n_phases = 8 if start != "dense" else 13  # About 80% kept per level.
  elif method in ("rigl", "granet", "sms_rigl", "sms_granet"):
    config = rigl_mnist1d.get_config(",".join(
        [quick_arg] * quick + ["granet"] * method.endswith("granet")
        + ["sms"] * method.startswith("sms_")))
  elif method == "edge_popup":
    config = edge_popup_mnist1d.get_config(quick_arg)
  else:
    config = mnist1d.get_config(quick_arg)
    config.strategy = {"snip": "dense", "synflow": "dense", "static": "dense"}.get(method,
                                                                                  method)
  random_start.set_start(config, method, start, GOAL_SPARSITY)
  return config
