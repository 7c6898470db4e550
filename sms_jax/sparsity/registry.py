"""The sparsity updaters by name.

Each entry builds its updater from the config, the steps per epoch and the start masks. A
`standalone` updater is also a strategy (`--config.strategy=<name>`): one model trained with
it from the start mask (`sms_jax.strategies.sparse_training`). `check(config,
start_sparsity=None)` says why a config cannot run it (one line), or returns None; it is asked
again with the sparsity a sparse start achieved once the mask is made.
"""

from typing import Any, Callable, NamedTuple

from sms_jax.sparsity import dpf, gmp, rigl, set_updater
from sms_jax.sparsity.updater import FixedMasks, Updater


class Registration(NamedTuple):
  build: Callable[[Any, int, Any], Updater]  # (config, steps_per_epoch, masks) -> updater
  standalone: bool = False
  check: Callable[..., str | None] = lambda config, start_sparsity=None: None
  help: str = ""


UPDATERS: dict[str, Registration] = {
    "fixed": Registration(lambda config, steps_per_epoch, masks: FixedMasks()),
    "gmp": Registration(gmp.GradualMagnitude.from_config, True, gmp.check_config,
                        "gradual magnitude pruning along the cubic schedule (gradual.*)"),
    "set": Registration(set_updater.SET.from_config, True, set_updater.check_config,
                        "sparse evolutionary training: drop and regrow at random (regrow.*)"),
    "rigl": Registration(rigl.RigL.from_config, True, rigl.check_rigl,
                         "RigL: drop the smallest, regrow where the dense gradient is largest, "
                         "at the start mask's layer densities (rigl.*)"),
    "granet": Registration(rigl.GraNet.from_config, True, gmp.check_config,
                           "GraNet: gmp's schedule with RigL's drop and regrowth at each update "
                           "(gradual.*, rigl.*)"),
    "dpf": Registration(dpf.DPF.from_config, True, gmp.check_config,
                        "dynamic pruning with feedback: gmp's schedule on masked weights, dense "
                        "weights kept and revived (gradual.*)"),
    "dpf_fixed": Registration(lambda config, steps_per_epoch, masks: dpf.FixedFeedback(),
                              help="fixed masks, dense weights learning: sms_dpf's phases"),
}


def build(name: str, config, steps_per_epoch: int, masks: Any) -> Updater:
  """The updater `name` for `config`, starting from `masks`."""
  if name not in UPDATERS:
    raise ValueError(f"unknown sparsity updater {name!r}; allowed: {', '.join(UPDATERS)}")
  return UPDATERS[name].build(config, steps_per_epoch, masks)
