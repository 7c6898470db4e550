"""Masks at initialisation: which weights a sparse-from-scratch model starts with.

Methods (`init_mask.method`):
  random     exactly `round(d_l * n_l)` weights per layer, chosen uniformly (the default);
  bernoulli  every weight kept with probability d_l (the reference's sampling);
  snip       the largest |w * dL/dw| (loss gradient summed over a few training batches);
  synflow    iteratively (100 rounds, density d ** (k / 100) in round k) the largest
             |w * dR/dw|, R = sum of the outputs of the network with |w| on an all-ones
             input: data-free.
Layer densities d_l come from `sms_jax.sparsity.distributions`; SNIP and SynFlow may instead
rank all layers together (distribution 'global', exact global count). SNIP and SynFlow may also
score only the weights alive in a random start mask (`init_mask.within`, the random-pruning
paper's sparse-to-sparse setting): `restrict_scores` ranks every weight outside it below every
weight inside, and SynFlow's rounds go geometrically from the start mask's densities down.
`rescale_init` rescales each sparse layer's init: by 1 / sqrt(d_l) ('density', keeping the
variance of its outputs), or redrawn from N(0, 2 / (fan_in * d_l)) ('fan_in', the reference's).
"""

import functools
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from sms_jax.sparsity import distributions, masks as masks_lib
from sms_jax.sparsity.pruning import alive_scores, keep_top_k

METHODS = ("random", "bernoulli", "snip", "synflow")
SCORED = ("snip", "synflow")
RESCALES = ("none", "density", "fan_in")
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


def fan_in(shape: Sequence[int]) -> int:
  """A conv / dense kernel's input fan-in: the product of all its dims but the last (out)."""
  return int(np.prod(shape[:-1]))


def rescale_init(params: Any, densities: dict[str, float], how: str = "density",
                 key: jax.Array | None = None) -> Any:
  """`params` with each sparse layer's (density < 1) init rescaled; other leaves as they are.

  Args:
    params: the model's parameters at initialisation.
    densities: `{path name: density d_l}` of the prunable leaves.
    how: one of RESCALES. 'none': unchanged; 'density': multiplied by `1 / sqrt(d_l)`;
      'fan_in': redrawn from N(0, 2 / (fan_in * d_l)) (`fan_in(shape)`), the random-pruning
      reference's re-initialisation.
    key: PRNG key for 'fan_in'; leaf `i` (in tree order) draws with `fold_in(key, i)`.
  """
  if how not in RESCALES:
    raise ValueError(f"unknown init_mask.rescale {how!r}; allowed: {', '.join(RESCALES)}")
  if how == "fan_in" and key is None:
    raise ValueError("init_mask.rescale = 'fan_in' redraws the weights: it needs a key")

  def one(i, path, p):
    d = densities.get(masks_lib.path_name(path), 1.0)
    if how == "none" or d >= 1.0:
      return p
    if how == "density":
      return p / np.sqrt(d)
    std = np.sqrt(2.0 / (fan_in(p.shape) * d))
    return (std * jax.random.normal(jax.random.fold_in(key, i), p.shape)).astype(p.dtype)

  leaves, treedef = jax.tree_util.tree_flatten_with_path(params)
  return jax.tree.unflatten(treedef, [one(i, path, p) for i, (path, p) in enumerate(leaves)])


def achieved_density(params: Any, densities: dict[str, float]) -> float:
  """The global density of exact-count masks with these layer `densities` (`init_masks` with
  'random'): `sum(layer_counts) / sum(n_l)` over the leaves named in `densities`."""
  named = [(masks_lib.path_name(path), leaf.shape)
           for path, leaf in jax.tree_util.tree_leaves_with_path(params)
           if masks_lib.path_name(path) in densities]
  counts = distributions.layer_counts([s for _, s in named], [densities[n] for n, _ in named])
  return sum(counts) / sum(int(np.prod(s)) for _, s in named)


def restrict_scores(scores: Any, start: Any) -> Any:
  """`scores` (>= 0) where `start` is alive and -1 elsewhere (`alive_scores`): keeping the top
  scores never picks a weight outside `start` while enough of its weights are left."""
  return jax.tree.map(lambda s, m: None if s is None else alive_scores(s, m), scores, start,
                      is_leaf=lambda x: x is None)


def first_excess(start: Any, densities: dict[str, float] | None, density: float
                 ) -> tuple[str, int, int] | None:
  """The first layer (or 'all layers', globally when `densities` is None) where keeping
  `densities` / `density` asks for more weights than `start` holds alive: `(name, wanted,
  alive)`, or None when the final mask fits inside `start`."""
  named = _named_leaves(start)
  alive = [int(m.sum()) for _, m in named]
  if densities is None:
    named, alive = [("all layers", None)], [sum(alive)]
  for (name, _), wanted, have in zip(named, _counts(start, densities, density), alive):
    if wanted > have:
      return name, wanted, have
  return None


def mask_record(params: Any, masks: Any, ordered_paths: Sequence[str]) -> list[dict[str, Any]]:
  """`layer_stats` of the masks themselves: name, shape, size, nonzero (= alive) per layer."""
  alive = jax.tree.map(lambda p, m: p if m is None else m, params, masks,
                       is_leaf=lambda x: x is None)
  return masks_lib.layer_stats(alive, masks, ordered_paths)


def keep_by_scores(scores: Any, densities: dict[str, float] | None, density: float) -> Any:
  """Masks keeping the top scores: per layer `round(d_l * n_l)` (`densities`), or, when
  `densities` is None, the global top `round(density * N)` over all prunable leaves.

  `scores`: a tree like the params, None on leaves that are not prunable. The counts are
  arguments of one compiled program, so SynFlow's rounds compile it once.
  """
  return _keep_counts(scores, jnp.asarray(_counts(scores, densities, density), jnp.int32),
                      joint=densities is None)


def _named_leaves(tree: Any) -> list[tuple[str, Any]]:
  """`(path name, leaf)` of the leaves of `tree` that are not None, in tree order."""
  return [(masks_lib.path_name(p), leaf) for p, leaf in jax.tree_util.tree_flatten_with_path(
      tree, is_leaf=lambda x: x is None)[0] if leaf is not None]


def _counts(tree: Any, densities: dict[str, float] | None, density: float) -> list[int]:
  """How many entries `keep_by_scores` keeps: per non-None leaf of `tree`
  (`layer_counts` of `densities`), or `[round(density * N)]` over all of them."""
  named = _named_leaves(tree)
  if densities is None:
    return [round(density * sum(leaf.size for _, leaf in named))]
  return distributions.layer_counts([leaf.shape for _, leaf in named],
                                    [densities[name] for name, _ in named])


@functools.partial(jax.jit, static_argnames=("joint",))
def _keep_counts(scores: Any, counts: jax.Array, *, joint: bool) -> Any:
  """`keep_by_scores` for given `counts: [number of scored leaves]` (`[1]` when `joint`)."""
  flat, treedef = jax.tree.flatten(scores, is_leaf=lambda x: x is None)
  present = [i for i, leaf in enumerate(flat) if leaf is not None]
  out = [None] * len(flat)
  if joint:
    joined = jnp.concatenate([flat[i].ravel() for i in present])
    keep = keep_top_k(joined, counts[0])
    for i, part in zip(present, jnp.split(keep, np.cumsum([flat[i].size for i in present])[:-1])):
      out[i] = part.reshape(flat[i].shape)
  else:
    for k, i in enumerate(present):
      out[i] = keep_top_k(flat[i].ravel(), counts[k]).reshape(flat[i].shape)
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


def _geometric(start: float, end: float, k: int, rounds: int) -> float:
  """Round `k` of `rounds` on the geometric path from density `start` to `end` (`end` exactly
  at the last round)."""
  return end if k == rounds else start * (end / start) ** (k / rounds)


def synflow_masks(output_fn: Any, params: Any, prunable_masks: Any,
                  densities: dict[str, float] | None, density: float,
                  rounds: int = SYNFLOW_ROUNDS) -> Any:
  """SynFlow (Tanaka et al. 2020): `rounds` rounds of pruning by `|w * dR/dw|`, inside
  `prunable_masks` (all alive, or a start mask: round k keeps density
  `s * (d / s) ** (k / rounds)` from each start density `s`, so no weight outside it returns).

  `output_fn(params)` returns the network's outputs on an all-ones input; R is their sum with
  every parameter replaced by its absolute value. Each prunable leaf is divided by its largest
  magnitude first: R is multilinear in the layers, so this rescales every score by the same
  factor (same ranking) and keeps float32 from overflowing in deep networks.
  """
  def normalised(p, m):
    return jnp.abs(p) if m is None else jnp.abs(p) / jnp.maximum(jnp.max(jnp.abs(p)), 1e-30)

  base = jax.tree.map(lambda p, m: normalised(p, m), params, prunable_masks,
                      is_leaf=lambda x: x is None)
  score_fn = jax.grad(lambda w: jnp.sum(output_fn(w)))

  @jax.jit
  def round_scores(base, masks):  # |w * dR/dw| of the masked network, -1 where pruned.
    current = masks_lib.apply_masks(base, masks)
    return jax.tree.map(lambda m, w, g: None if m is None else jnp.where(m, w * g, -1.0),
                        masks, current, score_fn(current), is_leaf=lambda x: x is None)

  named = _named_leaves(prunable_masks)
  start = {name: float(m.mean()) for name, m in named}  # 1.0 each when all alive.
  start_global = sum(float(m.sum()) for _, m in named) / sum(m.size for _, m in named)
  masks = prunable_masks
  for k in range(1, rounds + 1):
    scores = round_scores(base, masks)
    round_densities = None if densities is None else {
        name: _geometric(start[name], d, k, rounds) for name, d in densities.items()}
    masks = keep_by_scores(scores, round_densities,
                           _geometric(start_global, density, k, rounds))
  return masks
