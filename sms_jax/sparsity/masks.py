"""Masks: pytrees shaped like the parameters, bool arrays on prunable leaves, None elsewhere.

A mask leaf is True where the weight is alive. Which leaves are prunable is decided by one
filter function of the leaf's path name (e.g. "stage1_block0/conv1/kernel") and value; by
default every conv and dense kernel, the first and the last layer included, as in the SMS
reference. Biases and BatchNorm parameters are never pruned.
"""

from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

PrunableFn = Callable[[str, Any], bool]


def path_name(path) -> str:
  """'conv0/kernel' for a jax key path such as (DictKey('conv0'), DictKey('kernel'))."""
  return "/".join(str(getattr(k, "key", getattr(k, "name", getattr(k, "idx", k)))) for k in path)


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
  """All-alive masks: `True` arrays shaped like each prunable leaf, None for the others."""
  return jax.tree_util.tree_map_with_path(
      lambda path, p: jnp.ones(p.shape, bool) if prunable(path_name(path), p) else None, params)


@jax.jit
def apply_masks(params: Any, masks: Any) -> Any:
  """`params` with every pruned entry set to exactly 0 (leaves whose mask is None unchanged).

  Works on stacked trees too: a mask `[...]` broadcasts against params `[m, ...]` only if
  stacked alike, so stack masks and params together. Jitted: one program per tree
  structure, not one per leaf shape.
  """
  return jax.tree.map(lambda p, m: p if m is None else jnp.where(m, p, jnp.zeros_like(p)),
                      params, masks)


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
  """True if every entry of `params` outside `masks` is exactly 0 (masks may broadcast)."""
  return all(np.array_equal(a, b) for a, b in zip(
      jax.tree.leaves(apply_masks(params, masks)), jax.tree.leaves(params)))


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
  flat = {path_name(path): (p, m) for (path, p), m in zip(
      jax.tree_util.tree_leaves_with_path(params),
      jax.tree.leaves(masks, is_leaf=lambda x: x is None))}
  return [{"name": name, "shape": list(flat[name][0].shape), "size": int(flat[name][0].size),
           "nonzero": int(np.count_nonzero(np.asarray(flat[name][0])))}
          for name in ordered_paths if name in flat and flat[name][1] is not None]
