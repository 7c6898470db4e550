"""Sparsity updaters: one protocol for everything that decides masks during training.

An updater wraps the inner optax optimizer: `tx = updater.wrap(inner, masks)`. The wrapper's
state (`SparsityState`) holds the number of steps taken, the masks (bool arrays shaped like
the prunable parameters, None for the others) and the inner optimizer's state. Every update
  1. runs the inner optimizer on the raw, dense gradients (momentum, weight decay, Adam);
  2. when `is_update_step(steps)` holds for the `steps` done after this update, chooses new
     masks with `new_masks(masks, params, grads, steps)` from the parameters the step started
     from and the raw gradients;
  3. returns updates that leave every weight outside the new masks exactly 0: the inner
     update where a weight stays alive, `-param` where it is pruned now, 0 where it is grown
     now (a pruned weight is 0, so a grown one starts at 0); a grown weight's inner state
     (momentum, Adam moments) restarts from 0.
With parameters masked when training starts, a weight outside the masks is exactly 0.0 after
every step, whatever the inner optimizer. The masks and the step count are arrays in the
state, so a mask change recompiles nothing, stacked candidates carry their own masks along
the candidate axis, and checkpoints hold them with the rest of the optimizer state.

Updaters say when masks change: never (`FixedMasks`: IMP retraining, training inside a sparse
start), on a schedule (`sms_jax.sparsity.gmp`), or with regrowth
(`sms_jax.sparsity.set_updater`). `sms_jax.sparsity.registry` maps names to them.
"""

import dataclasses
from typing import Any, ClassVar, NamedTuple

import jax
import jax.numpy as jnp
import optax

from sms_jax.sparsity import masks as masks_lib

_is_none = lambda x: x is None


class SparsityState(NamedTuple):
  """The wrapper's state.

  Attributes:
    steps: int32 scalar, updates done (from the `first_step` given to `wrap`).
    masks: bool arrays shaped like the prunable parameters, None for the others.
    inner: the inner optimizer's state.
  """
  steps: jax.Array
  masks: Any
  inner: optax.OptState


@dataclasses.dataclass(frozen=True)
class Updater:
  """The protocol, and its simplest case: masks that never change.

  Subclasses that change masks set `changes_masks` and override `is_update_step`,
  `new_masks` and `target_sparsity`; those whose new masks may hold weights that the old
  ones did not also set `regrows`. All three methods must be traceable in `steps`.
  """
  name: ClassVar[str] = "fixed"
  changes_masks: ClassVar[bool] = False
  regrows: ClassVar[bool] = False

  def is_update_step(self, steps: jax.Array) -> jax.Array:
    """Whether the update that brings the step count to `steps` chooses new masks."""
    del steps
    return jnp.asarray(False)

  def new_masks(self, masks: Any, params: Any, grads: Any, steps: jax.Array) -> Any:
    """The masks after the update that brings the step count to `steps`."""
    del params, grads, steps
    return masks

  def target_sparsity(self, steps: int, start_sparsity: float) -> float:
    """The sparsity the masks should have after `steps` steps, from `start_sparsity`."""
    del steps
    return start_sparsity

  def describe(self) -> dict[str, Any]:
    """What results.json records about this updater."""
    return {"name": self.name}

  def wrap(self, inner: optax.GradientTransformation, masks: Any, *,
           first_step: int = 0) -> optax.GradientTransformation:
    """`inner` whose updates keep the weights outside `masks` at exactly 0.

    Args:
      inner: the optimizer (its updates are added to the parameters).
      masks: the starting masks; the parameters should be zero outside them.
      first_step: the step count to start from (e.g. a pruning schedule's position).
    Returns:
      A transformation with state `SparsityState`; `update` needs `params` whenever
      `changes_masks` (and whenever `inner` needs them). Params, updates and masks may be
      linen dicts or NNX states, with or without Variable wrappers (e.g. under
      `nnx.Optimizer(model, tx, wrt=nnx.Param)`): masks pair with updates by path name.
    """

    def init_fn(params):
      return SparsityState(jnp.asarray(first_step, jnp.int32), masks, inner.init(params))

    def update_fn(grads, state, params=None):
      if params is None and self.changes_masks:
        raise ValueError(f"the {self.name} updater needs the parameters: "
                         "tx.update(grads, state, params)")
      updates, inner_state = inner.update(grads, state.inner, params)
      steps = state.steps + 1
      if not self.changes_masks:
        updates = masks_lib.apply_masks(updates, state.masks)
        return updates, SparsityState(steps, state.masks, inner_state)
      new = jax.lax.cond(self.is_update_step(steps),
                         lambda m: self.new_masks(m, params, grads, steps), lambda m: m,
                         state.masks)
      # The masks in the updates' structure (with or without NNX Variable wrappers).
      now, old = masks_lib.masks_like(updates, new), masks_lib.masks_like(updates, state.masks)
      updates = jax.tree.map(lambda u, p, m, o: u if m is None else jnp.where(m & o, u, -p),
                             updates, params, now, old)
      if self.regrows:
        grown = jax.tree.map(lambda m, o: None if m is None else m & ~o, now, old,
                             is_leaf=_is_none)
        inner_state = optax.tree_utils.tree_map_params(
            inner, lambda v, g: v if g is None else jnp.where(g, jnp.zeros_like(v), v),
            inner_state, grown)
      return updates, SparsityState(steps, new, inner_state)

    return optax.GradientTransformation(init_fn, update_fn)


class FixedMasks(Updater):
  """Masks that never change: IMP retraining, training inside a sparse start."""


def masks_of(opt_state: Any) -> Any:
  """The masks held in an optimizer state made by `Updater.wrap` (stacked: `[m, ...]`)."""
  return optax.tree_utils.tree_get(opt_state, "masks")


def replace_masks(tx: optax.GradientTransformation, opt_state: Any, masks: Any) -> Any:
  """`opt_state` of `tx` (made by `Updater.wrap`) holding `masks`, with the inner state's
  entries of weights outside them (momentum, Adam moments) reset to 0.

  For a loop of your own that prunes between training runs; apply `masks` to the
  parameters too (`apply_masks`).
  """
  reset = lambda v, m: v if m is None else jnp.where(m, v, jnp.zeros_like(v))
  opt_state = optax.tree_utils.tree_map_params(tx, reset, opt_state, masks)
  return optax.tree_utils.tree_set(opt_state, masks=masks)
