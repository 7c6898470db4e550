"""Masks at initialisation: which weights a sparse-from-scratch model starts with.

Methods (`init_mask.method`):
  random     exactly `round(d_l * n_l)` weights per layer, chosen uniformly (the default);
  bernoulli  every weight kept with probability d_l (the reference's sampling);
  snip       the largest |w * dL/dw| (loss gradient summed over a few training batches);
  synflow    iteratively (100 rounds, density d ** (k / 100) in round k) the largest
             |w * dR/dw|, R = sum of the outputs of the network with |w| on an all-ones
             input: data-free.
Layer densities d_l come from `sms_jax.sparsity.distributions`; SNIP and SynFlow may instead
rank all layers together (distribution 'global', exact global count). `rescale_init` multiplies each
sparse layer's weights by 1 / sqrt(d_l), keeping the variance of its outputs.
"""

from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from sms_jax.sparsity import distributions, masks as masks_lib
from sms_jax.sparsity.pruning import keep_top_k

METHODS = ("random", "bernoulli", "snip", "synflow")
SCORED = ("snip", "synflow")
SYNFLOW_ROUNDS = 100


def layer_densities_for(params: Any, prunable: masks_lib.PrunableFn,
                        ordered_paths: Sequence[str], distribution: str,
                        density: float) -> dict[str, float]:
  """`{path: density}` of the prunable leaves (forward order) for a global `density`."""
  flat = {masks_lib.path_name(p): leaf for p, leaf in jax.tree_util.tree_leaves_with_path(params)}
  names = [name for name in ordered_paths if name in flat and prunable(name, flat[name])]
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
  alive = jax.tree.map(lambda p, m: p if m is None else m, params, masks,
                       is_leaf=lambda x: x is None)
  return masks_lib.layer_stats(alive, masks, ordered_paths)


def keep_by_scores(scores: Any, densities: dict[str, float] | None, density: float) -> Any:
  """Masks keeping the top scores: per layer `round(d_l * n_l)` (`densities`), or, when
  `densities` is None, the global top `round(density * N)` over all prunable leaves.

  `scores`: a tree like the params, None on leaves that are not prunable.
  """
  flat, treedef = jax.tree.flatten(scores, is_leaf=lambda x: x is None)
  names = [masks_lib.path_name(p) for p, _ in jax.tree_util.tree_flatten_with_path(
      scores, is_leaf=lambda x: x is None)[0]]
  present = [i for i, leaf in enumerate(flat) if leaf is not None]
  out = [None] * len(flat)
  if densities is None:
    joined = jnp.concatenate([flat[i].ravel() for i in present])
    keep = keep_top_k(joined, round(density * joined.size))
    for i, part in zip(present, jnp.split(keep, np.cumsum([flat[i].size for i in present])[:-1])):
      out[i] = part.reshape(flat[i].shape)
  else:
    for i in present:
      count = distributions.layer_counts([flat[i].shape], [densities[names[i]]])[0]
      out[i] = keep_top_k(flat[i].ravel(), count).reshape(flat[i].shape)
  return jax.tree.unflatten(treedef, out)


def snip_scores(loss_fn: Any, params: Any, batches: Sequence[Any], prunable_masks: Any) -> Any:
  """`|w * g|` with `g` the gradient of `loss_fn(params, batch)` summed over `batches`."""
  grad_fn = jax.jit(jax.grad(loss_fn))
  grads = None
  for batch in batches:
    g = grad_fn(params, batch)
    grads = g if grads is None else jax.tree.map(jnp.add, grads, g)
  return jax.tree.map(lambda m, p, g: None if m is None else jnp.abs(p * g), prunable_masks,
                      params, grads, is_leaf=lambda x: x is None)


def synflow_masks(output_fn: Any, params: Any, prunable_masks: Any,
                  densities: dict[str, float] | None, density: float,
                  rounds: int = SYNFLOW_ROUNDS) -> Any:
  """SynFlow (Tanaka et al. 2020): `rounds` rounds of pruning by `|w * dR/dw|`.

  `output_fn(params)` returns the network's outputs on an all-ones input; R is their sum with
  every parameter replaced by its absolute value. Each prunable leaf is divided by its largest
  magnitude first: R is multilinear in the layers, so this rescales every score by the same
  factor (same ranking) and keeps float32 from overflowing in deep networks.
  """
  def normalised(p, m):
    return jnp.abs(p) if m is None else jnp.abs(p) / jnp.maximum(jnp.max(jnp.abs(p)), 1e-30)

  base = jax.tree.map(lambda p, m: normalised(p, m), params, prunable_masks,
                      is_leaf=lambda x: x is None)
  score_fn = jax.jit(jax.grad(lambda w: jnp.sum(output_fn(w))))
  masks = prunable_masks
  for k in range(1, rounds + 1):
    current = masks_lib.apply_masks(base, masks)
    grads = score_fn(current)
    scores = jax.tree.map(lambda m, w, g: None if m is None else jnp.where(m, w * g, -1.0),
                          masks, current, grads, is_leaf=lambda x: x is None)
    round_densities = None if densities is None else {
        name: d ** (k / rounds) for name, d in densities.items()}
    masks = keep_by_scores(scores, round_densities, density ** (k / rounds))
  return masks
