"""Edge-Popup (Ramanujan et al., 2020): a subnetwork of frozen random weights, found by scores.

Every weight stays at a scaled random initialisation; each prunable weight has a real-valued
score, and the network computes with `w * m`, where `m` keeps the `k_l` highest scores of layer
`l` (exact counts, ties to the lower index: `pruning.keep_top_k`). The gradient reaches the
scores straight through the top-k: `dL/ds = dL/d(w * m) * w` (`popup`'s custom VJP).

The trained tree is `{'scores': ..., 'weights': ...}`: `scores` holds one array per prunable
kernel (nested dicts, like the params but only those leaves), `weights` the model's whole
frozen params tree. `ScoredModel` applies a Flax model to it, so the project's train step and
evaluator train and evaluate the scores unchanged; `scores_optimizer` updates only the scores
(the weights, biases and BatchNorm scales get zero updates: bit-identical after training).

Initialisations (`edge_popup.init`) of every conv / dense kernel:
  signed_constant  each weight +c or -c with random sign, c = sqrt(2 / fan_in) (Kaiming's std);
  kaiming_normal   N(0, 2 / fan_in).
Scores start Kaiming uniform as the reference's (`kaiming_uniform_(a=sqrt(5))`):
U(-1/sqrt(fan_in), 1/sqrt(fan_in)).
"""

import dataclasses
import functools
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import traverse_util

from sms_jax.sparsity import distributions, masks as masks_lib
from sms_jax.sparsity.init_masks import fan_in
from sms_jax.sparsity.pruning import keep_top_k

INITS = ("signed_constant", "kaiming_normal")


@functools.partial(jax.jit, static_argnames=("how",))
def frozen_weights(key: jax.Array, params: Any, how: str = "signed_constant") -> Any:
  """`params` with every conv / dense kernel (`masks.is_kernel`) redrawn as `how` (one of
  INITS); leaf `i` (tree order) draws with `fold_in(key, i)`. Other leaves (biases,
  BatchNorm) are returned as they are. One compiled program."""
  if how not in INITS:
    raise ValueError(f"unknown edge_popup.init {how!r}; allowed: {', '.join(INITS)}")

  def one(i, path, p):
    if not masks_lib.is_kernel(masks_lib.path_name(path), p):
      return p
    std, key_i = np.sqrt(2.0 / fan_in(p.shape)), jax.random.fold_in(key, i)
    if how == "signed_constant":
      signs = jnp.where(jax.random.bernoulli(key_i, 0.5, p.shape), 1.0, -1.0)
      return (std * signs).astype(p.dtype)
    return (std * jax.random.normal(key_i, p.shape)).astype(p.dtype)

  leaves, treedef = jax.tree_util.tree_flatten_with_path(params)
  return jax.tree.unflatten(treedef, [one(i, path, p) for i, (path, p) in enumerate(leaves)])


def init_scores(key: jax.Array, params: Any, names: Any) -> dict[str, Any]:
  """Scores of the leaves of `params` named in `names` (e.g. the keys of the layer
  densities): nested dicts holding only those leaves, each U(-1/sqrt(fan_in), 1/sqrt(fan_in))
  of its leaf's shape, drawn with `fold_in(key, i)` for leaf `i` in tree order."""
  return _init_scores(key, params, tuple(sorted(names)))


@functools.partial(jax.jit, static_argnums=2)
def _init_scores(key: jax.Array, params: Any, names: tuple[str, ...]) -> dict[str, Any]:
  flat = {}
  for i, (path, p) in enumerate(jax.tree_util.tree_leaves_with_path(params)):
    name = masks_lib.path_name(path)
    if name in names:
      bound = 1.0 / np.sqrt(fan_in(p.shape))
      flat[tuple(name.split("/"))] = jax.random.uniform(
          jax.random.fold_in(key, i), p.shape, jnp.float32, -bound, bound)
  return traverse_util.unflatten_dict(flat)


def layer_counts(params: Any, densities: dict[str, float]) -> tuple[tuple[str, int], ...]:
  """`((name, k_l), ...)`: the weights each layer in `densities` keeps, `round(d_l * n_l)`
  (`distributions.layer_counts`), in tree order; hashable, for `ScoredModel`."""
  shapes = {masks_lib.path_name(path): p.shape
            for path, p in jax.tree_util.tree_leaves_with_path(params)}
  names = [n for n in shapes if n in densities]
  counts = distributions.layer_counts([shapes[n] for n in names], [densities[n] for n in names])
  return tuple(zip(names, map(int, counts)))


def top_k_mask(scores: jax.Array, count: int) -> jax.Array:
  """Bool mask of `scores`' shape keeping its `count` largest entries (ties: lower index)."""
  return keep_top_k(scores.ravel(), count).reshape(scores.shape)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def popup(weight: jax.Array, scores: jax.Array, count: int) -> jax.Array:
  """`weight * m`, `m = top_k_mask(scores, count)`; both arrays of one shape.

  Gradients (straight through the top-k): `dL/dscores = dL/dout * weight`,
  `dL/dweight = dL/dout * m`.
  """
  return weight * top_k_mask(scores, count).astype(weight.dtype)


def _popup_fwd(weight, scores, count):
  mask = top_k_mask(scores, count).astype(weight.dtype)
  return weight * mask, (weight, mask)


def _popup_bwd(count, residuals, g):
  del count
  weight, mask = residuals
  return g * mask, (g * weight).astype(jnp.float32)


popup.defvjp(_popup_fwd, _popup_bwd)


def _flat_scores(scores: Any) -> dict[str, jax.Array]:
  return {masks_lib.path_name(p): s for p, s in jax.tree_util.tree_leaves_with_path(scores)}


def effective_params(weights: Any, scores: Any, counts: tuple[tuple[str, int], ...]) -> Any:
  """The params the model computes with: `popup(w, s, k)` on every scored kernel, the other
  leaves of `weights` as they are. `scores` as `init_scores` makes them, `counts` as
  `layer_counts`."""
  flat, k = _flat_scores(scores), dict(counts)
  return jax.tree_util.tree_map_with_path(
      lambda path, w: popup(w, flat[n], k[n]) if (n := masks_lib.path_name(path)) in k else w,
      weights)


@functools.partial(jax.jit, static_argnums=2)
def masks_from_scores(weights: Any, scores: Any, counts: tuple[tuple[str, int], ...]) -> Any:
  """The masks (`sparsity.masks` form: bool on the scored kernels, None elsewhere, the
  structure of `weights`) that `effective_params` applies. Jitted (`counts` static)."""
  flat, k = _flat_scores(scores), dict(counts)
  return jax.tree_util.tree_map_with_path(
      lambda path, w: (top_k_mask(flat[n], k[n]) if (n := masks_lib.path_name(path)) in k
                       else None), weights)


@dataclasses.dataclass(frozen=True)
class ScoredModel:
  """A Flax model applied to `{'scores', 'weights'}` params: `apply` as `nn.Module.apply`
  (what `training.engine` and `training.evaluator` call), computing `inner` with
  `effective_params`.

  Attributes:
    inner: the Flax model.
    counts: `layer_counts` of the scored kernels.
  """
  inner: nn.Module
  counts: tuple[tuple[str, int], ...]

  def apply(self, variables: dict[str, Any], *args, **kwargs) -> Any:
    """`inner.apply` with `variables['params']` replaced by the effective params."""
    params = variables["params"]
    return self.inner.apply(
        {**variables, "params": effective_params(params["weights"], params["scores"],
                                                 self.counts)}, *args, **kwargs)


def scores_optimizer(tx: optax.GradientTransformation) -> optax.GradientTransformation:
  """`tx` on the `scores` subtree, zero updates (`optax.set_to_zero`) on `weights`."""
  def labels(params):
    return {"scores": jax.tree.map(lambda _: "scores", params["scores"]),
            "weights": jax.tree.map(lambda _: "frozen", params["weights"])}
  return optax.multi_transform({"scores": tx, "frozen": optax.set_to_zero()}, labels)
