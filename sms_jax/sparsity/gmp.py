"""Gradual magnitude pruning (GMP, Zhu & Gupta 2017) as a sparsity updater.

The sparsity of the prunable weights follows the cubic schedule

  s(t) = s_f + (s_0 - s_f) * (1 - (t - t_0) / (t_1 - t_0)) ** 3,   t_0 <= t <= t_1,

from the initial sparsity s_0 (0 for a dense start, where it is `s_f * (1 - (1 - t/T)**3)`)
to the final s_f, with t the number of training steps done. The masks are updated when t
reaches t_0 + k * update_every and t_1: the model after t steps has sparsity s(t). At an
update the largest alive weights (globally, or the same fraction of every layer's initially
alive weights) are kept, from the parameters the step started from. The kept counts are a
constant table, so nothing recompiles and a pruned weight never comes back.
"""

import dataclasses
from typing import Any, ClassVar

import jax
import jax.numpy as jnp
import numpy as np

from sms_jax.sparsity import masks as masks_lib, pruning
from sms_jax.sparsity.updater import Updater

SELECTORS = ("global", "uniform")


@dataclasses.dataclass(frozen=True)
class CubicSchedule:
  """The cubic sparsity schedule over training steps `[start_step, end_step]`.

  Raises ValueError when made (also by `dataclasses.replace`) unless
  0 <= start_step <= end_step, update_every >= 1 and both sparsities are in [0, 1).
  """
  start_step: int
  end_step: int
  update_every: int
  initial_sparsity: float
  final_sparsity: float

  def __post_init__(self):
    error = self._error()
    if error:
      raise ValueError(f"cubic schedule {error}")

  def _error(self) -> str | None:
    if self.start_step < 0:
      return f"start_step = {self.start_step} is not allowed; allowed: an integer >= 0"
    if self.end_step < self.start_step:
      return (f"end_step = {self.end_step} is before its start_step = {self.start_step}; "
              "allowed: end_step >= start_step")
    if self.update_every < 1:
      return (f"update_every = {self.update_every} is not allowed; allowed: an integer >= 1 "
              "(steps between mask updates)")
    for name in ("initial_sparsity", "final_sparsity"):
      if not 0.0 <= getattr(self, name) < 1.0:
        return f"{name} = {getattr(self, name)} is not allowed; allowed: a number in [0, 1)"
    return None

  def sparsity(self, step: Any) -> Any:
    """s(step): `initial_sparsity` before `start_step`, `final_sparsity` after `end_step`."""
    frac = np.clip((np.asarray(step, np.float64) - self.start_step)
                   / max(self.end_step - self.start_step, 1), 0.0, 1.0)
    return self.final_sparsity + (self.initial_sparsity - self.final_sparsity) * (1 - frac) ** 3

  def update_steps(self) -> np.ndarray:
    """The step counts after which the mask is updated: `start + k * update_every` in
    (start, end), then end."""
    inner = range(self.start_step + self.update_every, self.end_step, self.update_every)
    return np.asarray([*inner, self.end_step], np.int64)


def cubic_schedule(*, start_epoch: int, end_epoch: int, steps_per_epoch: int,
                   update_every: int, initial_sparsity: float,
                   final_sparsity: float) -> CubicSchedule:
  """The schedule of `gradual.*` config keys, in steps."""
  return CubicSchedule(start_epoch * steps_per_epoch, end_epoch * steps_per_epoch,
                       update_every, initial_sparsity, final_sparsity)


def schedule_from_config(config, steps_per_epoch: int, initial_sparsity: float) -> CubicSchedule:
  """The cubic schedule of `config.gradual` from `initial_sparsity` to `prune.goal_sparsity`."""
  return cubic_schedule(
      start_epoch=config.gradual.start_epoch, end_epoch=config.gradual.end_epoch,
      steps_per_epoch=steps_per_epoch, update_every=config.gradual.update_every,
      initial_sparsity=initial_sparsity, final_sparsity=config.prune.goal_sparsity)


@dataclasses.dataclass(frozen=True)
class GradualMagnitude(Updater):
  """Magnitude pruning along `schedule`; `keep_table[k]` holds the counts kept at its k-th
  update: `[1]` over all prunable weights ('global') or one per prunable leaf ('uniform')."""
  name: ClassVar[str] = "gmp"
  changes_masks: ClassVar[bool] = True
  schedule: CubicSchedule
  selector: str
  keep_table: tuple[tuple[int, ...], ...]

  @classmethod
  def create(cls, schedule: CubicSchedule, masks: Any,
             selector: str = "global") -> "GradualMagnitude":
    """The updater for `schedule` starting from `masks` (of sparsity
    `schedule.initial_sparsity`); `selector`: 'global' or 'uniform' (per layer)."""
    if selector not in SELECTORS:
      raise ValueError(f"unknown gradual pruning selector {selector!r}; allowed: "
                       f"{', '.join(SELECTORS)}")
    alive, sizes = masks_lib.layer_alive(masks)
    table = tuple(tuple(pruning.keep_counts(alive, sizes, float(schedule.sparsity(t)), selector))
                  for t in schedule.update_steps())
    return cls(schedule, selector, table)

  @classmethod
  def from_config(cls, config, steps_per_epoch: int, masks: Any) -> "GradualMagnitude":
    """`gradual.*`, `prune.goal_sparsity` and `prune.selector` from the start `masks`."""
    schedule = schedule_from_config(config, steps_per_epoch, masks_lib.sparsity(masks))
    return cls.create(schedule, masks, config.prune.selector)

  def _hits(self, steps: jax.Array) -> jax.Array:
    return steps == jnp.asarray(self.schedule.update_steps(), jnp.int32)

  def is_update_step(self, steps: jax.Array) -> jax.Array:
    return jnp.any(self._hits(steps))

  def new_masks(self, masks: Any, params: Any, grads: Any, steps: jax.Array) -> Any:
    """The best-scored alive weights; only removes, also past a count above the alive ones."""
    del grads
    counts = jnp.asarray(self.keep_table, jnp.int32)[jnp.argmax(self._hits(steps))]
    return pruning.prune_to_counts(params, masks, counts, jax.random.key(0),
                                   selector=self.selector)

  def target_sparsity(self, steps: int, start_sparsity: float) -> float:
    done = [t for t in self.schedule.update_steps() if t <= steps]
    return float(self.schedule.sparsity(done[-1])) if done else start_sparsity

  def describe(self) -> dict[str, Any]:
    schedule = self.schedule
    return {"name": self.name, "selector": self.selector,
            "start_step": schedule.start_step, "end_step": schedule.end_step,
            "update_every": schedule.update_every,
            "initial_sparsity": schedule.initial_sparsity,
            "final_sparsity": schedule.final_sparsity,
            "updates": [{"step": int(t), "sparsity": float(schedule.sparsity(t))}
                        for t in schedule.update_steps()]}


def check_config(config, start_sparsity: float | None = None) -> str | None:
  """Why `config` cannot run GMP (the schedule must fit the training run and the goal be
  above the start's sparsity: `start_sparsity` once the start mask is made), or None."""
  gradual, epochs = config.gradual, config.train.epochs
  if not gradual.start_epoch < gradual.end_epoch <= epochs:
    return (f"config keys gradual.start_epoch = {gradual.start_epoch}, gradual.end_epoch = "
            f"{gradual.end_epoch} are not allowed; allowed: start_epoch < end_epoch <= "
            f"train.epochs = {epochs}")
  if config.prune.selector not in SELECTORS:
    return (f"config key prune.selector = {config.prune.selector!r} is not allowed with "
            f"strategy {config.strategy!r}; allowed: {', '.join(SELECTORS)}")
  return pruning.check_goal_sparsity(config, start_sparsity)
