"""Pruning: new masks that keep exactly the requested number of weights.

Selectors (`prune.selector`): 'global' magnitude over all prunable weights (the SMS
default), 'uniform' magnitude per layer (every layer keeps the same fraction of its alive
weights), and 'random' (uniform per-layer counts, random choice). Counts are exact: the
weights to keep are the top-k scores with ties broken by position (lower index first), so
the achieved sparsity equals the target to within one weight per layer. Pruned weights
never come back: only alive weights compete.
"""

import functools
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from sms_jax.sparsity import masks as masks_lib

SELECTORS = ("global", "uniform", "random")


def phase_sparsity(goal: float, n_phases: int, phase: int, start: float = 0.0) -> float:
  """Sparsity after `phase` (1-based) of `n_phases`, from sparsity `start` to `goal`.

  `1 - (1 - start) * ((1 - goal) / (1 - start)) ** (phase / n_phases)`: each phase prunes the
  same fraction of the weights still alive; from a dense start, `1 - (1 - goal) ** (k / n)`.
  """
  return 1.0 - (1.0 - start) * ((1.0 - goal) / (1.0 - start)) ** (phase / n_phases)


def keep_top_k(scores: jax.Array, k: jax.Array) -> jax.Array:
  """Bool mask of the `k` largest of `scores: [n]`; ties go to the lower index. `k` may be traced."""
  order = jnp.argsort(-scores, stable=True)
  return jnp.zeros(scores.shape, bool).at[order].set(jnp.arange(scores.size) < k)


def alive_scores(raw: jax.Array, mask: jax.Array) -> jax.Array:
  """`raw` scores where `mask` is alive (NaN as 0, so dropped first), -1 where it is pruned:
  pruned entries rank below every alive one (scores are >= 0), whatever the values."""
  return jnp.where(mask, jnp.nan_to_num(raw, nan=0.0), -1.0)


def _scores(params: Any, masks: Any, selector: str, key: jax.Array) -> list[jax.Array]:
  """Flat scores per prunable leaf (`alive_scores` of |param| or, 'random', uniform noise)."""
  leaves = [(p, m) for _, p, m in masks_lib.leaf_pairs(params, masks) if m is not None]
  keys = jax.random.split(key, max(1, len(leaves)))
  out = []
  for (p, m), k in zip(leaves, keys):
    raw = jax.random.uniform(k, p.shape) if selector == "random" else jnp.abs(p)
    out.append(alive_scores(raw, m).ravel())
  return out


@functools.partial(jax.jit, static_argnames=("selector",))
def prune_to_counts(params: Any, masks: Any, counts: jax.Array, key: jax.Array, *,
                    selector: str) -> Any:
  """Masks keeping the `counts` best-scored alive weights; traceable (counts may be traced).

  `counts`: int32 `[1]` (global: over all prunable leaves) or `[layers]` (per prunable leaf,
  in `jax.tree.leaves` order); see `keep_counts`. A count above the alive weights keeps them
  all: a pruned weight never comes back.
  """
  scores = _scores(params, masks, selector, key)
  if selector == "global":
    keep = keep_top_k(jnp.concatenate(scores), counts[0])
    kept = jnp.split(keep, np.cumsum([s.size for s in scores])[:-1])
  else:
    kept = [keep_top_k(s, c) for s, c in zip(scores, counts)]
  kept = iter(kept)
  return jax.tree.map(lambda m: None if m is None else next(kept).reshape(m.shape) & m, masks,
                      is_leaf=lambda x: x is None)


@jax.jit
def _all_finite(values: list[jax.Array], masks: list[jax.Array]) -> jax.Array:
  """`[leaves]` bool: whether each of `values` is finite wherever its mask is alive."""
  return jnp.stack([jnp.all(jnp.isfinite(jnp.where(m, v, 0))) for v, m in zip(values, masks)])


def _check_prunable(params: Any, masks: Any) -> None:
  """Raises ValueError unless `masks`, a mask tree of `params`, has prunable weights and
  `params` is finite where they are alive (a NaN has no rank: it would keep pruned weights)."""
  pruned = [(name, p, m) for name, p, m in masks_lib.leaf_pairs(params, masks) if m is not None]
  if not sum(int(np.size(m)) for _, _, m in pruned):
    raise ValueError("cannot prune: masks have no prunable weights (every mask leaf is None or "
                     "empty); pass masks from create_masks(params) of a model with kernels, or "
                     "create_masks(params, prunable) naming the leaves to prune")
  finite = np.asarray(_all_finite([p for _, p, _ in pruned], [m for _, _, m in pruned]))
  if not finite.all():
    raise ValueError(f"cannot prune: parameter {pruned[int(np.argmin(finite))][0]!r} has "
                     "non-finite values (NaN or inf) where its mask is alive; allowed: finite "
                     "parameters")


def prune(params: Any, masks: Any, target_sparsity: float, *, selector: str = "global",
          key: jax.Array | None = None) -> Any:
  """New masks with sparsity `target_sparsity` over the prunable leaves of `masks`.

  Args:
    params: the parameters whose magnitudes are scored (pruned entries are ignored); finite
      where alive.
    masks: current masks (`create_masks` for a dense model), each of its parameter's shape;
      only alive entries are kept.
    target_sparsity: fraction of prunable weights pruned afterwards; at least the current one
      (less by under half a weight prunes nothing).
    selector: one of SELECTORS.
    key: PRNG key, needed for the 'random' selector.
  Returns:
    Masks of the same structure; for 'global' exactly `round((1 - target) * total)` alive
    entries, for 'uniform'/'random' each layer keeps `round(alive_l * (1 - target) / (1 -
    current))` of its `alive_l` weights.
  Raises:
    ValueError: a bad selector or target, masks that do not match `params` or have no
      prunable weights, or non-finite alive parameters (naming the first such leaf).
  """
  if selector not in SELECTORS:
    raise ValueError(f"unknown pruning selector {selector!r}; allowed: {', '.join(SELECTORS)}")
  if selector == "random" and key is None:
    raise ValueError("the 'random' pruning selector needs a PRNG key")
  _check_prunable(params, masks)
  alive, sizes = masks_lib.layer_alive(masks)
  current = 1.0 - sum(alive) / sum(sizes)
  # Within half a weight below the current sparsity, a target rounds to it: many small phases
  # (`phase_sparsity`) may ask for one that the rounding of an earlier phase has passed.
  if not current - 0.5 / sum(sizes) - 1e-12 <= target_sparsity <= 1.0:
    raise ValueError(f"target sparsity {target_sparsity} is not allowed; allowed: from the "
                     f"current sparsity {current:.6f} to 1")
  key = jax.random.key(0) if key is None else key
  counts = keep_counts(alive, sizes, target_sparsity, selector)
  return prune_to_counts(params, masks, jnp.asarray(counts, jnp.int32), key, selector=selector)


def keep_counts(alive: list[int], sizes: list[int], target_sparsity: float,
                selector: str) -> list[int]:
  """How many weights to keep for `target_sparsity`, from the alive and total counts per layer.

  'global': `[round((1 - target) * total)]`; per layer ('uniform', 'random'): each layer keeps
  `round(alive_l * (1 - target) / (1 - current))`, the same fraction of its alive weights.
  """
  if selector == "global":
    return [round((1.0 - target_sparsity) * sum(sizes))]
  current = 1.0 - sum(alive) / sum(sizes)
  ratio = (1.0 - target_sparsity) / (1.0 - current) if sum(alive) else 0.0
  return [round(a * ratio) for a in alive]


def check_goal_sparsity(config, start_sparsity: float | None = None) -> str | None:
  """Why `prune.goal_sparsity` cannot be reached by pruning from the config's start mask, or
  None: it must exceed the start's sparsity, `1 - init_mask.density` before the mask is made
  and `start_sparsity`, the one it achieved (e.g. a Bernoulli mask's), after."""
  if config.init_mask.distribution == "none":
    return None
  goal, density = config.prune.goal_sparsity, config.init_mask.density
  start = 1.0 - density if start_sparsity is None else start_sparsity
  if goal > start:
    return None
  what = "the initial sparsity" if start_sparsity is None else "the start mask's achieved sparsity"
  return (f"config key prune.goal_sparsity = {goal} is not allowed with init_mask.density = "
          f"{density}; allowed: more than {what} {start:.6g}")
