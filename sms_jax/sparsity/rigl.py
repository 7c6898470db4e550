"""Dynamic sparse training with gradient regrowth: RigL and GraNet as sparsity updaters.

RigL (Evci et al., 2020): every `update_every` steps until `end_step`, each prunable layer
drops the fraction `alpha_t = alpha * (1 + cos(pi * t / end_step)) / 2` of its alive weights
with the smallest magnitudes and regrows as many where the magnitude of the dense gradient
(the loss's gradient with respect to every entry of the kernel, pruned ones included: the raw
gradient the wrapped optimizer receives) is largest among the positions not kept. A weight
that was pruned before the update starts at 0 with its optimizer state (momentum, Adam
moments) at 0; one dropped and regrown in the same update never left and keeps its value
(the paper's Algorithm 1). Every layer keeps its number of alive weights, so the layerwise
densities of the start mask (ER, ERK, balanced, pyramidal) hold throughout.

GraNet (Liu et al., 2021): gradual magnitude pruning along the cubic schedule of
`sms_jax.sparsity.gmp` (from a dense or a sparse start to the goal sparsity), and at each of
its updates, after pruning to the schedule's sparsity, RigL's drop and regrowth of the
fraction `alpha_t` of the remaining alive weights of every layer. The regrowth keeps the
counts, so the sparsity is the schedule's at every update and ends at exactly the goal.
"""

import dataclasses
from typing import Any, ClassVar

import jax
import jax.numpy as jnp

from sms_jax.sparsity import gmp, set_updater
from sms_jax.sparsity import masks as masks_lib
from sms_jax.sparsity.pruning import alive_scores, keep_top_k


def drop_and_grow(param: jax.Array, mask: jax.Array, grad: jax.Array,
                  fraction: jax.Array) -> jax.Array:
  """One layer's mask after RigL's update.

  Args:
    param: the kernel `[...]` (the magnitudes that choose what is dropped).
    mask: its bool mask, same shape.
    grad: the dense gradient, same shape (its magnitudes choose what is grown).
    fraction: scalar in [0, 1], the fraction of the alive weights dropped (may be traced).
  Returns:
    A bool mask of `mask`'s shape with as many alive entries: the `alive - d` largest alive
    `|param|` (d = round(fraction * alive)) and the `d` largest `|grad|` of the other entries
    (NaN scores as 0; ties go to the lower flat index).
  """
  alive = jnp.sum(mask, dtype=jnp.int32)
  drop = jnp.round(fraction * alive).astype(jnp.int32)
  kept = keep_top_k(alive_scores(jnp.abs(param), mask).ravel(), alive - drop)
  grown = keep_top_k(alive_scores(jnp.abs(grad).ravel(), ~kept), drop)
  return (kept | grown).reshape(mask.shape)


def regrow_by_gradient(masks: Any, params: Any, grads: Any, fraction: jax.Array) -> Any:
  """`drop_and_grow` on every prunable leaf of `masks`: new masks of the same structure.

  `params` and `grads` are trees of the same structure (unstacked); `fraction` a scalar.
  """
  pairs = masks_lib.leaf_pairs(params, masks)
  grad_leaves = [g for _, g, _ in masks_lib.leaf_pairs(grads, masks)]
  new = [None if mask is None else drop_and_grow(param, mask, grad, fraction)
         for (_, param, mask), grad in zip(pairs, grad_leaves)]
  return jax.tree.unflatten(jax.tree.structure(masks, is_leaf=lambda x: x is None), new)


@dataclasses.dataclass(frozen=True)
class RigL(set_updater.SET):
  """SET's schedule (`update_every`, `end_step`, `drop_fraction`, cosine `decay`) with the
  dropped weights regrown where the dense gradient is largest."""
  name: ClassVar[str] = "rigl"
  decay: str = "cosine"

  @classmethod
  def from_config(cls, config, steps_per_epoch: int, masks: Any) -> "RigL":
    """`rigl.*`: the end is `rigl.end_fraction` of the run's steps, rounded."""
    del masks
    end_step = round(config.rigl.end_fraction * config.train.epochs * steps_per_epoch)
    return cls(update_every=config.rigl.update_every, end_step=end_step,
               drop_fraction=config.rigl.drop_fraction)

  def new_masks(self, masks: Any, params: Any, grads: Any, steps: jax.Array) -> Any:
    return regrow_by_gradient(masks, params, grads, self.fraction(steps))


def check_rigl(config, start_sparsity: float | None = None) -> str | None:
  """Why `config` cannot run RigL (it keeps a sparse start's layer densities), or None."""
  del start_sparsity
  return set_updater.sparse_start_error(config)


@dataclasses.dataclass(frozen=True)
class GraNet(gmp.GradualMagnitude):
  """GMP's pruning along its schedule, then `regrowth`'s drop and regrowth at each of its
  updates (`regrowth.fraction(t)` while t < `regrowth.end_step`, none after)."""
  name: ClassVar[str] = "granet"
  regrows: ClassVar[bool] = True
  regrowth: RigL

  @classmethod
  def from_config(cls, config, steps_per_epoch: int, masks: Any) -> "GraNet":
    """`gradual.*`, `prune.goal_sparsity`, `prune.selector` (the pruning) and
    `rigl.drop_fraction`, `rigl.end_fraction` (the regrowth), from the start `masks`."""
    pruning = gmp.GradualMagnitude.from_config(config, steps_per_epoch, masks)
    regrowth = dataclasses.replace(RigL.from_config(config, steps_per_epoch, masks),
                                   update_every=config.gradual.update_every)
    return cls(pruning.schedule, pruning.selector, pruning.keep_table, regrowth)

  def new_masks(self, masks: Any, params: Any, grads: Any, steps: jax.Array) -> Any:
    pruned = super().new_masks(masks, params, grads, steps)
    fraction = jnp.where(steps < self.regrowth.end_step, self.regrowth.fraction(steps), 0.0)
    return regrow_by_gradient(pruned, params, grads, fraction)

  def describe(self) -> dict[str, Any]:
    regrowth = self.regrowth
    return {**super().describe(), "regrowth": {
        "end_step": regrowth.end_step, "drop_fraction": regrowth.drop_fraction,
        "decay": regrowth.decay}}
