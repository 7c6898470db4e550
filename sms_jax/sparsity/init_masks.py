"""Masks at initialisation: which weights a sparse-from-scratch model starts with.

Methods (`init_mask.method`):
  random     exactly `round(d_l * n_l)` weights per layer, chosen uniformly (the default);
  bernoulli  every weight kept with probability d_l (the reference's sampling);
Layer densities d_l come from `sms_jax.sparsity.distributions`. `rescale_init` multiplies each
sparse layer's weights by 1 / sqrt(d_l), keeping the variance of its outputs.
"""

from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from sms_jax.sparsity import distributions, masks as masks_lib
from sms_jax.sparsity.pruning import keep_top_k

METHODS = ("random", "bernoulli")


def _prunable_leaves(params: Any, prunable: masks_lib.PrunableFn,
                     ordered_paths: Sequence[str]) -> list[str]:
  """The prunable leaves' path names, in forward order."""
  flat = {masks_lib.path_name(p): leaf for p, leaf in jax.tree_util.tree_leaves_with_path(params)}
  return [name for name in ordered_paths if name in flat and prunable(name, flat[name])]


def layer_densities_for(params: Any, prunable: masks_lib.PrunableFn,
                        ordered_paths: Sequence[str], distribution: str,
                        density: float) -> dict[str, float]:
  """`{path: density}` of the prunable leaves for a global `density`."""
  names = _prunable_leaves(params, prunable, ordered_paths)
  flat = {masks_lib.path_name(p): leaf for p, leaf in jax.tree_util.tree_leaves_with_path(params)}
  densities = distributions.layer_densities([flat[n].shape for n in names], distribution, density)
  return dict(zip(names, map(float, densities)))


def init_masks(key: jax.Array, params: Any, densities: dict[str, float],
               method: str = "random") -> Any:
  """Masks shaped like `params` with the given per-layer `densities` (None for other leaves).

  Args:
    key: PRNG key; layer `i` (in tree order) uses `fold_in(key, i)`.
    params: the model's parameters (shapes only).
    densities: `{path name: density}` of every prunable leaf (`layer_densities_for`).
    method: one of METHODS.
  """
  if method not in METHODS:
    raise ValueError(f"unknown init_mask.method {method!r}; allowed: {', '.join(METHODS)}")
  leaves = jax.tree_util.tree_leaves_with_path(params)
  out = []
  for i, (path, leaf) in enumerate(leaves):
    name = masks_lib.path_name(path)
    if name not in densities:
      out.append(None)
      continue
    layer_key, d = jax.random.fold_in(key, i), densities[name]
    if method == "bernoulli":
      mask = jax.random.bernoulli(layer_key, d, leaf.shape)
    else:
      count = distributions.layer_counts([leaf.shape], [d])[0]
      mask = keep_top_k(jax.random.uniform(layer_key, (leaf.size,)), count).reshape(leaf.shape)
    out.append(mask)
  return jax.tree.unflatten(jax.tree.structure(params), out)


def rescale_init(params: Any, densities: dict[str, float]) -> Any:
  """`params` with each sparse layer multiplied by `1 / sqrt(density)` (dense layers as they are)."""
  return jax.tree_util.tree_map_with_path(
      lambda path, p: p / np.sqrt(densities[masks_lib.path_name(path)])
      if densities.get(masks_lib.path_name(path), 1.0) < 1.0 else p, params)


def mask_record(params: Any, masks: Any, ordered_paths: Sequence[str]) -> list[dict[str, Any]]:
  """`layer_stats` of the masks themselves: name, shape, size, nonzero (= alive) per layer."""
  ones = jax.tree.map(lambda m: None if m is None else jnp.where(m, 1.0, 0.0), masks,
                      is_leaf=lambda x: x is None)
  filled = jax.tree.map(lambda p, o: jnp.ones_like(p) if o is None else o, params, ones,
                        is_leaf=lambda x: x is None)
  return masks_lib.layer_stats(filled, masks, ordered_paths)
