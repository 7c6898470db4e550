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


def _scores(params: Any, masks: Any, selector: str, key: jax.Array) -> list[jax.Array]:
  """Flat scores per prunable leaf; pruned entries get -1 (below every alive score)."""
  leaves = [(p, m) for p, m in zip(jax.tree.leaves(params),
                                   jax.tree.leaves(masks, is_leaf=lambda x: x is None))
            if m is not None]
  keys = jax.random.split(key, max(1, len(leaves)))
  out = []
  for (p, m), k in zip(leaves, keys):
    raw = jax.random.uniform(k, p.shape) if selector == "random" else jnp.abs(p)
    out.append(jnp.where(m, raw, -1.0).ravel())
  return out


@functools.partial(jax.jit, static_argnames=("selector",))
def prune_to_counts(params: Any, masks: Any, counts: jax.Array, key: jax.Array, *,
                    selector: str) -> Any:
  """Masks keeping the `counts` best-scored alive weights; traceable (counts may be traced).

  `counts`: int32 `[1]` (global: over all prunable leaves) or `[layers]` (per prunable leaf,
  in `jax.tree.leaves` order); see `keep_counts`.
  """
  scores = _scores(params, masks, selector, key)
  if selector == "global":
    keep = keep_top_k(jnp.concatenate(scores), counts[0])
    kept = jnp.split(keep, np.cumsum([s.size for s in scores])[:-1])
  else:
    kept = [keep_top_k(s, c) for s, c in zip(scores, counts)]
  kept = iter(kept)
  return jax.tree.map(lambda m: None if m is None else next(kept).reshape(m.shape), masks,
                      is_leaf=lambda x: x is None)


def prune(params: Any, masks: Any, target_sparsity: float, *, selector: str = "global",
          key: jax.Array | None = None) -> Any:
  """New masks with sparsity `target_sparsity` over the prunable leaves of `masks`.

  Args:
    params: the parameters whose magnitudes are scored (pruned entries are ignored).
    masks: current masks (`create_masks` for a dense model); only alive entries are kept.
    target_sparsity: fraction of prunable weights pruned afterwards; at least the current one.
    selector: one of SELECTORS.
    key: PRNG key, needed for the 'random' selector.
  Returns:
    Masks of the same structure; for 'global' exactly `round((1 - target) * total)` alive
    entries, for 'uniform'/'random' each layer keeps `round(alive_l * (1 - target) / (1 -
    current))` of its `alive_l` weights.
  """
  if selector not in SELECTORS:
    raise ValueError(f"unknown pruning selector {selector!r}; allowed: {', '.join(SELECTORS)}")
  if selector == "random" and key is None:
    raise ValueError("the 'random' pruning selector needs a PRNG key")
  alive, sizes = masks_lib.layer_alive(masks)
  current = 1.0 - sum(alive) / sum(sizes)
  if not current - 1e-9 <= target_sparsity <= 1.0:
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


def check_goal_sparsity(config) -> str | None:
  """Why `prune.goal_sparsity` cannot be reached by pruning from the config's start mask
  (it must exceed the start's sparsity `1 - init_mask.density`), or None."""
  start = 1.0 - config.init_mask.density
  if config.init_mask.distribution != "none" and config.prune.goal_sparsity <= start:
    return (f"config key prune.goal_sparsity = {config.prune.goal_sparsity} is not allowed with "
            f"init_mask.density = {config.init_mask.density}; allowed: more than the initial "
            f"sparsity {start:g}")
  return None
