"""Dynamic Pruning with Feedback (DPF, Lin et al., ICLR 2020) as a sparsity updater.

DPF keeps a dense copy of the weights. Forward and backward run on the masked weights
`masks * dense`; the gradient computed there updates the dense weights, so a pruned weight
keeps learning (the error feedback); along the cubic schedule of `sms_jax.sparsity.gmp` the
masks become the largest dense weights, which may revive pruned ones. The final model is the
masked one.

As an optax wrapper (`wrap(inner, masks)`), its state `FeedbackState` adds the dense weights
and their `scope` to the fields of `SparsityState` (steps, masks, inner). The training
state's params are the masked weights, exactly 0 outside the masks, so the training step is
the usual one; its gradients at the masked weights feed the inner optimizer, whose update
(weight decay on the dense weights) moves the dense weights inside the scope; the returned
update moves the params to `masks * dense` (inside the masks both add the same update: in
the tests on the CPU they agree bit for bit). The dense copy is in the optimizer state, so
checkpoints hold it and a resumed run goes on exactly.

  dpf        masks recomputed from the dense magnitudes at the schedule's updates, from the
             dense weights after that step's update (the order of the paper's algorithm):
             GMP's exact kept counts (global, or per layer), chosen among the scope, the
             masks it starts from (every prunable weight for a dense start; a sparse start's
             mask, so that training stays inside it);
  dpf_fixed  masks that never change while the dense weights keep learning, starting from
             given dense weights: the phases of sms_dpf (`sms_jax.strategies.sms_dpf`),
             whose phase starts recompute the masks.
"""

import dataclasses
from typing import Any, ClassVar, NamedTuple

import jax
import jax.numpy as jnp
import optax

from sms_jax.sparsity import masks as masks_lib
from sms_jax.sparsity.gmp import GradualMagnitude
from sms_jax.sparsity.updater import Updater


class FeedbackState(NamedTuple):
  """The state of a dense-feedback wrapper: `SparsityState`'s fields, then two more.

  Attributes:
    steps: int32 scalar, updates done (from the `first_step` given to `wrap`).
    masks: bool arrays shaped like the prunable parameters, None for the others.
    inner: the inner optimizer's state (of the dense weights).
    dense: the dense weights, shaped like the parameters (the params are `masks * dense`).
    scope: masks of the weights that may be alive and learn (dpf: the start masks), or None
      (every weight: dpf_fixed).
  """
  steps: jax.Array
  masks: Any
  inner: optax.OptState
  dense: Any
  scope: Any


def dense_of(opt_state: Any) -> Any:
  """The dense weights held in an optimizer state made by `DPF.wrap` or
  `FixedFeedback.wrap` (stacked: `[m, ...]`).

  Found by the state's type, not by name: a model may have a layer called 'dense'.
  Raises:
    ValueError: `opt_state` holds no `FeedbackState`, or several.
  """
  is_state = lambda x: isinstance(x, FeedbackState)
  found = [x for x in jax.tree.leaves(opt_state, is_leaf=is_state) if is_state(x)]
  if len(found) != 1:
    raise ValueError(f"the optimizer state holds {len(found)} dense-feedback states; "
                     "allowed: exactly one (a state made by DPF.wrap or FixedFeedback.wrap)")
  return found[0].dense


def feedback_wrap(updater: Updater, inner: optax.GradientTransformation, masks: Any, *,
                  first_step: int = 0, dense: Any = None,
                  scope_is_start: bool = False) -> optax.GradientTransformation:
  """`inner` applied to dense weights, with the params kept at `masks * dense`.

  Args:
    updater: says when and how the masks change (`changes_masks`, `is_update_step`, and
      `new_masks(scope, dense, grads, steps)`: the masks chosen among the scope).
    inner: the optimizer of the dense weights.
    masks: the starting masks.
    first_step: the step count to start from.
    dense: the starting dense weights (None: the params given to `init`); the params given
      to `init` must be `masks * dense`.
    scope_is_start: the scope is `masks` (dense weights outside it stay 0 and never come
      in); else every weight learns.
  Returns:
    A transformation with state `FeedbackState`; `update(grads, state, params)` takes the
    gradients at the params (the masked weights), and needs `params` if the masks change.
  """

  def init_fn(params):
    start = params if dense is None else dense
    # Copies: a training step donates its state, and one buffer may be donated only once.
    copy = lambda tree: jax.tree.map(jnp.copy, tree)
    return FeedbackState(jnp.asarray(first_step, jnp.int32), masks, inner.init(start),
                         copy(start), copy(masks) if scope_is_start else None)

  def update_fn(grads, state, params=None):
    if params is None and updater.changes_masks:
      raise ValueError(f"the {updater.name} updater needs the parameters: "
                       "tx.update(grads, state, params)")
    updates, inner_state = inner.update(grads, state.inner, state.dense)
    if state.scope is None:
      dense_updates = updates
    else:
      dense_updates = jax.tree.map(lambda u, s: u if s is None else jnp.where(s, u, 0),
                                   updates, masks_lib.masks_like(updates, state.scope))
    dense = optax.apply_updates(state.dense, dense_updates)
    steps = state.steps + 1
    if not updater.changes_masks:
      return (masks_lib.apply_masks(updates, state.masks),
              FeedbackState(steps, state.masks, inner_state, dense, state.scope))
    scope = state.scope if state.scope is not None else jax.tree.map(
        lambda m: None if m is None else jnp.ones_like(m), state.masks,
        is_leaf=lambda x: x is None)
    new = jax.lax.cond(updater.is_update_step(steps),
                       lambda m: updater.new_masks(scope, dense, grads, steps), lambda m: m,
                       state.masks)
    now = masks_lib.masks_like(updates, new)
    old = masks_lib.masks_like(updates, state.masks)
    # Alive before and after: the inner update (params equal the dense weights there);
    # revived: the dense weight (the param is 0); pruned now, or still: -param (to 0).
    updates = jax.tree.map(
        lambda u, d, p, m, o: u if m is None else jnp.where(m, jnp.where(o, u, d), -p),
        updates, dense, params, now, old)
    return updates, FeedbackState(steps, new, inner_state, dense, state.scope)

  return optax.GradientTransformation(init_fn, update_fn)


@dataclasses.dataclass(frozen=True)
class DPF(GradualMagnitude):
  """Dynamic pruning with feedback along GMP's schedule and kept counts (`keep_table`).

  `new_masks` is GMP's, called with the scope as the masks and the dense weights as the
  params: the kept counts of the largest dense weights, every weight of the scope competing
  (pruned ones too).
  """
  name: ClassVar[str] = "dpf"
  changes_masks: ClassVar[bool] = True
  regrows: ClassVar[bool] = True

  def wrap(self, inner: optax.GradientTransformation, masks: Any, *,
           first_step: int = 0) -> optax.GradientTransformation:
    """`inner` on the dense weights, the masks recomputed from them along the schedule
    (`feedback_wrap`), within `masks`, the start masks."""
    return feedback_wrap(self, inner, masks, first_step=first_step, scope_is_start=True)


@dataclasses.dataclass(frozen=True)
class FixedFeedback(Updater):
  """Fixed masks whose pruned weights keep learning in a dense copy that starts at `dense`
  (None: the params). `dense` is an initial value, like the masks given to `wrap`: it takes
  no part in comparing or hashing updaters, so phases that differ in it share programs."""
  name: ClassVar[str] = "dpf_fixed"
  dense: Any = dataclasses.field(default=None, compare=False, hash=False, repr=False)

  def wrap(self, inner: optax.GradientTransformation, masks: Any, *,
           first_step: int = 0) -> optax.GradientTransformation:
    """`inner` on the dense weights, every weight learning; params `masks * dense`."""
    return feedback_wrap(self, inner, masks, first_step=first_step, dense=self.dense)
