"""The masking transform: an optax GradientTransformation that zeroes pruned updates.

Placed last in the optimizer chain, it multiplies the final updates by the masks held in its
state, so that with parameters masked at pruning time a pruned weight stays exactly 0.0
whatever comes before it (momentum, Nesterov, weight decay). The masks are arrays in the
state, so they can change (new pruning phase, gradual pruning) without recompiling, and they
stack and checkpoint with the rest of the optimizer state. (`optax.masked` takes one static
boolean per leaf and cannot express element-wise masks.)
"""

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax


class MaskedUpdatesState(NamedTuple):
  """`masks`: bool arrays shaped like the prunable parameters, None for the others."""
  masks: Any


class GradualPruningState(NamedTuple):
  """`count`: updates so far (the training step); `masks`: the current masks, which
  `sms_jax.sparsity.gradual.gradual_pruning` changes at its schedule's update steps."""
  count: jax.Array
  masks: Any


_MASK_STATES = (MaskedUpdatesState, GradualPruningState)


def held_masks(opt_state: Any) -> list[Any]:
  """The masks held by every masking state in `opt_state` (normally one)."""
  is_mask_state = lambda x: isinstance(x, _MASK_STATES)
  return [node.masks for node in jax.tree.leaves(opt_state, is_leaf=is_mask_state)
          if is_mask_state(node)]


def masked_updates(masks: Any) -> optax.GradientTransformation:
  """Multiplies updates by `masks` (a `create_masks`-style tree; None leaves pass through).

  Example:
    tx = optax.chain(optax.sgd(0.1, momentum=0.9), masked_updates(masks))
  """

  def init_fn(params):
    del params
    return MaskedUpdatesState(masks=masks)

  def update_fn(updates, state, params=None):
    del params
    masked = jax.tree.map(lambda u, m: u if m is None else jnp.where(m, u, jnp.zeros_like(u)),
                          updates, state.masks)
    return masked, state

  return optax.GradientTransformation(init_fn, update_fn)


def prune_opt_state(tx: optax.GradientTransformation, opt_state: Any, masks: Any) -> Any:
  """`opt_state` with new `masks` in its masking state and pruned entries of every
  parameter-shaped state (momentum) reset to 0.

  Args:
    tx: the optimizer that created `opt_state` (used to find its parameter-shaped parts).
    opt_state: its state; must contain a `MaskedUpdatesState`.
    masks: the new masks.
  """
  reset = lambda v, m: v if m is None else jnp.where(m, v, jnp.zeros_like(v))
  new_state = optax.tree_utils.tree_map_params(tx, reset, opt_state, masks)
  found = []

  def set_masks(node):
    if isinstance(node, MaskedUpdatesState):
      found.append(node)
      return MaskedUpdatesState(masks=masks)
    return node

  new_state = jax.tree.map(set_masks, new_state,
                           is_leaf=lambda x: isinstance(x, MaskedUpdatesState))
  if not found:
    raise ValueError("the optimizer state has no MaskedUpdatesState; chain masked_updates(...) "
                     "last in the optimizer")
  return new_state
