"""Masks: pytrees shaped like the parameters, bool arrays on prunable leaves, None elsewhere.

A mask leaf is True where the weight is alive. Which leaves are prunable is decided by one
filter function of the leaf's path name (e.g. "stage1_block0/conv1/kernel") and value; by
default every conv and dense kernel, the first and the last layer included, as in the SMS
reference. Biases and BatchNorm parameters are never pruned.

Any Flax parameter tree works: a linen params dict, or a Flax NNX state
(`nnx.state(model, nnx.Param)`), whose leaves sit in Variable wrappers: the attribute that
holds a Variable's array ('value', or 'raw_value' in some Flax versions) is left out of
path names, so an NNX kernel is named "linear/kernel" as in linen. Masks have the structure
of the tree they were made from (for an NNX state: an `nnx.State` of Variables holding the
bool arrays or None); functions that take params and masks pair their leaves by path name,
so either form of the masks goes with either form of the params.
"""

from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

PrunableFn = Callable[[str, Any], bool]
_is_none = lambda x: x is None
_VARIABLE_VALUE = ("value", "raw_value")  # The attribute of an NNX Variable holding its array.


def path_name(path) -> str:
  """'conv0/kernel' for a jax key path such as (DictKey('conv0'), DictKey('kernel')), also for
  an NNX Variable's (DictKey('conv0'), DictKey('kernel'), GetAttrKey('value'))."""
  keys = tuple(path)
  if (keys and isinstance(keys[-1], jax.tree_util.GetAttrKey)
      and keys[-1].name in _VARIABLE_VALUE):
    keys = keys[:-1]
  return "/".join(str(getattr(k, "key", getattr(k, "name", getattr(k, "idx", k)))) for k in keys)


def is_kernel(name: str, leaf: Any) -> bool:
  """True for conv and dense kernels: leaves named 'kernel' with at least 2 dimensions."""
  return name.rsplit("/", 1)[-1] == "kernel" and len(leaf.shape) >= 2


def prunable_filter(ordered_paths: Sequence[str], *, keep_first_dense: bool = False,
                    keep_last_dense: bool = False) -> PrunableFn:
  """The kernels of a model, optionally without the first and/or last one.

  Args:
    ordered_paths: the model's parameter paths in forward order
      (`sms_jax.models.param_paths`), which decides what "first" and "last" mean.
    keep_first_dense: never prune the first kernel (the input layer).
    keep_last_dense: never prune the last kernel (the classifier).
  """
  kernels = [p for p in ordered_paths if p.rsplit("/", 1)[-1] == "kernel"]
  excluded = set()
  if kernels and keep_first_dense:
    excluded.add(kernels[0])
  if kernels and keep_last_dense:
    excluded.add(kernels[-1])
  return lambda name, leaf: is_kernel(name, leaf) and name not in excluded


def create_masks(params: Any, prunable: PrunableFn = is_kernel) -> Any:
  """All-alive masks: `True` arrays shaped like each prunable leaf, None for the others.

  Args:
    params: a linen params dict or an NNX state (`nnx.state(model, nnx.Param)`).
    prunable: `(path name, leaf) -> bool`; default: `is_kernel`.
  Returns:
    A tree of the structure of `params` (NNX: Variables holding the masks).
  """
  return jax.tree_util.tree_map_with_path(
      lambda path, p: jnp.ones(p.shape, bool) if prunable(path_name(path), p) else None, params)


def leaf_pairs(params: Any, masks: Any, *,
               one_mask_for_all: bool = False) -> list[tuple[str, Any, Any]]:
  """`(name, param, mask)` for every leaf of `params` in `jax.tree.leaves` order (mask None
  where the leaf is not pruned), after checking that `masks` is a mask tree of `params`.

  Needs only the trees' structure and shapes, so it also checks traced arrays (at trace time).

  Args:
    params: the parameters (stacked `[m, ...]` or not).
    masks: their masks: the same leaves, each None or of its parameter's shape.
    one_mask_for_all: also allow a mask `[1, ...]` against stacked params `[m, ...]`.
  Raises:
    ValueError: `masks` lacks a leaf of `params` or has one that `params` lacks (the first is
      named), or a mask's shape is not its parameter's.
  """
  named = [(path_name(path), p) for path, p in jax.tree_util.tree_leaves_with_path(params)]
  mask_leaves = jax.tree_util.tree_leaves_with_path(masks, is_leaf=_is_none)
  names, mask_names = [n for n, _ in named], [path_name(path) for path, _ in mask_leaves]
  if names != mask_names:
    raise ValueError(f"masks do not match params: {_first_difference(names, mask_names)}; pass "
                     "masks from create_masks(params)")
  for (name, p), (_, m) in zip(named, mask_leaves):
    shape, allowed = np.shape(m), np.shape(p)
    one_for_all = one_mask_for_all and allowed and shape == (1, *allowed[1:])
    if m is not None and shape != allowed and not one_for_all:
      raise ValueError(f"masks do not match params: mask {name!r} has shape {shape}; allowed: the "
                       f"shape of its parameter, {allowed}")
  return [(name, p, m) for (name, p), (_, m) in zip(named, mask_leaves)]


def _first_difference(names: list[str], mask_names: list[str]) -> str:
  """What differs first between the leaf names of params and of masks."""
  missing, extra = set(names) - set(mask_names), set(mask_names) - set(names)
  if missing:
    return f"params has leaf {next(n for n in names if n in missing)!r} that masks lacks"
  if extra:
    return f"masks has leaf {next(n for n in mask_names if n in extra)!r} that params lacks"
  return "they hold the same leaves in another order"


def masks_like(params: Any, masks: Any) -> Any:
  """`masks` (checked by `leaf_pairs`) in the tree structure of `params`: e.g. with or without
  the Variable wrappers of an NNX state, so that `jax.tree.map(f, params, masks_like(params,
  masks))` calls `f(param, mask or None)` on every leaf."""
  mask_leaves = [m for _, _, m in leaf_pairs(params, masks)]
  return jax.tree.unflatten(jax.tree.structure(params), mask_leaves)


@jax.jit
def apply_masks(params: Any, masks: Any) -> Any:
  """`params` with every pruned entry set to exactly 0 (leaves whose mask is None unchanged).

  Each mask has its parameter's shape (`leaf_pairs`): for stacked trees `[m, ...]`, stack
  masks and params together. Jitted: one program per tree structure, not one per leaf shape.
  """
  leaves = [p if m is None else jnp.where(m, p, jnp.zeros_like(p))
            for _, p, m in leaf_pairs(params, masks)]
  return jax.tree.unflatten(jax.tree.structure(params), leaves)


def layer_alive(masks: Any) -> tuple[list[int], list[int]]:
  """Alive entries and sizes of each prunable leaf of `masks` (`jax.tree.leaves` order)."""
  leaves = [np.asarray(m) for m in jax.tree.leaves(masks)]
  return [int(np.count_nonzero(m)) for m in leaves], [int(m.size) for m in leaves]


def count_alive(masks: Any) -> tuple[int, int]:
  """(alive, total) entries over the prunable leaves of `masks`."""
  alive, sizes = layer_alive(masks)
  return sum(alive), sum(sizes)


def sparsity(masks: Any) -> float:
  """Fraction of pruned entries over the prunable leaves."""
  alive, total = count_alive(masks)
  return 1.0 - alive / total if total else 0.0


def zero_outside(params: Any, masks: Any) -> bool:
  """True if every entry of `params` outside `masks` is exactly 0; against stacked params
  `[m, ...]`, a mask `[1, ...]` stands for every candidate's (`leaf_pairs`)."""
  pairs = [(p, m) for _, p, m in leaf_pairs(params, masks, one_mask_for_all=True)
           if m is not None]
  return not pairs or not bool(_nonzero_outside(*zip(*pairs)))


@jax.jit
def _nonzero_outside(params: tuple[jax.Array, ...], masks: tuple[jax.Array, ...]) -> jax.Array:
  """Whether any of `params` is nonzero outside its mask: one program for the whole tree."""
  return jnp.any(jnp.stack([jnp.any(jnp.where(m, 0, p) != 0) for p, m in zip(params, masks)]))


def masks_equal(a: Any, b: Any) -> bool:
  """True if two mask trees have the same structure and identical entries."""
  if jax.tree.structure(a) != jax.tree.structure(b):
    return False
  return all(np.array_equal(np.asarray(x), np.asarray(y))
             for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


def layer_stats(params: Any, masks: Any, ordered_paths: Sequence[str]) -> list[dict[str, Any]]:
  """Per prunable layer, in forward order: `name`, `shape`, `size` and `nonzero` weights.

  `nonzero` counts the parameter values that are not exactly 0, so it checks the mask
  invariant rather than trusting the mask.
  """
  flat = {name: (p, m) for name, p, m in leaf_pairs(params, masks)}
  return [{"name": name, "shape": list(flat[name][0].shape), "size": int(flat[name][0].size),
           "nonzero": int(np.count_nonzero(np.asarray(flat[name][0])))}
          for name in ordered_paths if name in flat and flat[name][1] is not None]
