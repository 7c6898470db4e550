"""Gradual magnitude pruning (GMP, Zhu & Gupta 2017) inside the jitted training step.

The sparsity of the prunable weights follows the cubic schedule

  s(t) = s_f + (s_0 - s_f) * (1 - (t - t_0) / (t_1 - t_0)) ** 3,   t_0 <= t <= t_1,

from the initial sparsity s_0 (0 for a dense start, where it is `s_f * (1 - (1 - t/T)**3)`)
to the final s_f, with t the number of training steps done. The mask is updated when t
reaches t_0 + k * update_every and t_1: the model after t steps has sparsity s(t).
`gradual_pruning` is an optax GradientTransformation that goes last in the chain, where
`masked_updates` would: it masks the updates and, at an update step, keeps the largest alive
weights (globally or per layer) and zeroes the others through the update itself
(`-param`), so the step's new parameters are exactly zero outside the new mask. The masks
and the step are arrays in its state and the kept counts a constant table, so nothing
recompiles and a pruned weight never comes back.
"""

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from sms_jax.sparsity import masks as masks_lib, pruning
from sms_jax.sparsity.transform import GradualPruningState

GRADUAL_SELECTORS = ("global", "uniform")


class CubicSchedule(NamedTuple):
  """The cubic sparsity schedule over training steps `[start_step, end_step]`."""
  start_step: int
  end_step: int
  update_every: int
  initial_sparsity: float
  final_sparsity: float

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


def gradual_pruning(masks: Any, schedule: CubicSchedule,
                    selector: str = "global") -> optax.GradientTransformation:
  """Masked updates whose masks follow `schedule` by magnitude pruning.

  Args:
    masks: the initial masks (`create_masks` style: bool leaves, None for unpruned leaves);
      their sparsity should be `schedule.initial_sparsity`.
    schedule: when and to which sparsity to prune.
    selector: 'global' magnitude over all prunable weights, or 'uniform' (every layer keeps
      the same fraction of its initially alive weights).
  Returns:
    A transformation whose `update` needs `params`; its state is a `GradualPruningState`.
    At an update step it keeps exactly `pruning.keep_counts(...)` weights.
  """
  if selector not in GRADUAL_SELECTORS:
    raise ValueError(f"unknown gradual pruning selector {selector!r}; allowed: "
                     f"{', '.join(GRADUAL_SELECTORS)}")
  alive, sizes = masks_lib.layer_alive(masks)
  update_steps = schedule.update_steps()
  table = np.asarray([pruning.keep_counts(alive, sizes, float(schedule.sparsity(t)), selector)
                      for t in update_steps], np.int32)  # [updates, 1 or layers]

  def init_fn(params):
    del params
    return GradualPruningState(jnp.zeros((), jnp.int32), masks)

  def update_fn(updates, state, params=None):
    if params is None:
      raise ValueError("gradual_pruning needs the parameters: tx.update(grads, state, params)")
    # This step ends with count + 1 steps done; the mask is chosen from its input params.
    hits = state.count + 1 == jnp.asarray(update_steps, jnp.int32)

    def prune(current):
      counts = jnp.asarray(table)[jnp.argmax(hits)]
      return pruning.prune_to_counts(params, current, counts, jax.random.key(0),
                                     selector=selector)

    new_masks = jax.lax.cond(jnp.any(hits), prune, lambda current: current, state.masks)
    updates = jax.tree.map(lambda u, p, m: u if m is None else jnp.where(m, u, -p),
                           updates, params, new_masks)
    return updates, GradualPruningState(state.count + 1, new_masks)

  return optax.GradientTransformation(init_fn, update_fn)


def gradual_sparsity(opt_state: Any) -> float | None:
  """The sparsity of the masks of a `gradual_pruning` state in `opt_state`; None if none."""
  is_state = lambda x: isinstance(x, GradualPruningState)
  for node in jax.tree.leaves(opt_state, is_leaf=is_state):
    if is_state(node):
      return masks_lib.sparsity(node.masks)
  return None
