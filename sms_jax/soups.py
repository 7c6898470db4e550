"""Soups: averages of candidates that share one mask, and BatchNorm recalibration.

A soup is a tree map over the candidate axis. Uniform: the mean of all m candidates.
Greedy (the SMS reference's rule): candidates sorted by validation accuracy, best first;
start with the best; add the next if the soup's validation accuracy does not drop (>=);
the final soup is the uniform mean of the accepted ones. Averaging moves the BatchNorm
statistics away from what the averaged weights produce, so before a soup is evaluated its
statistics are recomputed by train-mode forward passes (`recalibrate_batch_stats`).
"""

import functools
import math
from typing import Any, Callable, Iterable, Iterator, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from sms_jax.data import Dataset, first_batches
from sms_jax.sparsity import masks as masks_lib

SOUP_METHODS = ("uniform", "greedy")


def uniform_soup(stacked: Any, indices: Sequence[int] | None = None, *,
                 masks: Any = None) -> Any:
  """The mean over the candidate axis of `stacked: [m, ...]` (of `indices` only, if given).

  Args:
    stacked: the candidates' trees, each leaf `[m, ...]`.
    indices: the candidates averaged (default: all): distinct, in 0..m-1, at least one.
    masks: the candidates' stacked masks `[m, ...]` (e.g. `sparsity.masks_of(opt_state)`),
      if given checked to be one mask (a soup of different masks is denser than each).
  Raises:
    ValueError: bad `indices`, or the averaged candidates' masks differ.
  """
  leaves = jax.tree.leaves(stacked)
  if not leaves:
    return stacked
  m = leaves[0].shape[0]
  traced = isinstance(indices, jax.core.Tracer)  # Values unknown: take them as they are.
  chosen = indices if traced else _ingredients(range(m) if indices is None else indices, m)
  if masks is not None:
    check_shared_mask(masks, chosen)
  return _mean(stacked if indices is None else _take(stacked, jnp.asarray(chosen)))


def _ingredients(indices: Iterable[int], m: int) -> list[int]:
  """`indices` as ints, checked to be distinct candidates of `m`, at least one."""
  chosen = [int(k) for k in indices]
  if not chosen:
    raise ValueError("a soup needs at least one candidate; got no indices")
  for k in chosen:
    if not 0 <= k < m or chosen.count(k) > 1:
      raise ValueError(f"soup index {k} is {'repeated' if 0 <= k < m else 'out of range'} in "
                       f"{chosen}; allowed: distinct indices in 0..{m - 1} of the {m} stacked "
                       "candidates")
  return chosen


def check_shared_mask(masks: Any, indices: Sequence[int]) -> None:
  """Raises ValueError unless candidates `indices` of the stacked `masks: [m, ...]` hold one
  mask (skipped for traced masks: it needs their values)."""
  named = jax.tree_util.tree_leaves_with_path(masks)
  leaves = [m for _, m in named]
  if not leaves or any(isinstance(x, jax.core.Tracer) for x in (indices, *leaves)):
    return
  differs = np.asarray(_differs(leaves, jnp.asarray(indices)))
  if differs.any():
    k, leaf = np.argwhere(differs)[0]
    raise ValueError(f"the candidates' masks differ: candidate {indices[k]} has another mask "
                     f"than candidate {indices[0]} at {masks_lib.path_name(named[leaf][0])!r}; a "
                     "uniform or greedy soup needs one shared mask")


@jax.jit
def _differs(masks: list[jax.Array], index: jax.Array) -> jax.Array:
  """`[len(index), leaves]` bool: where candidate `index[k]`'s mask leaf is not `index[0]`'s."""
  return jnp.stack([jnp.any((m[index] != m[index[0]]).reshape(index.shape[0], -1), axis=1)
                    for m in masks], axis=1)


@jax.jit
def _take(stacked: Any, index: jax.Array) -> Any:
  return jax.tree.map(lambda x: x[index], stacked)


@jax.jit
def _mean(stacked: Any) -> Any:
  return jax.tree.map(lambda x: jnp.mean(x, axis=0).astype(x.dtype), stacked)


def greedy_soup(val_accuracies: Sequence[float],
                soup_val_accuracy: Callable[[list[int]], float]) -> list[int]:
  """The candidates that a greedy soup accepts, best first.

  Args:
    val_accuracies: each candidate's own validation accuracy (finite, at least one).
    soup_val_accuracy: validation accuracy of the uniform soup of some candidates (after
      BatchNorm recalibration).
  Returns:
    The accepted candidate indices: the best candidate, then each next one (in order of
    decreasing validation accuracy, ties by index) whose addition keeps the soup's validation
    accuracy at least as high as the best so far.
  Raises:
    ValueError: no candidates, or a non-finite validation accuracy (it cannot be ranked).
  """
  if not len(val_accuracies):  # pylint: disable=g-explicit-length-test  (arrays too)
    raise ValueError("a greedy soup needs at least one candidate; got no validation accuracies")
  for k, accuracy in enumerate(val_accuracies):
    if not math.isfinite(accuracy):
      raise ValueError(f"candidate {k} has validation accuracy {accuracy}; a greedy soup ranks "
                       "candidates by it; allowed: finite accuracies")
  order = sorted(range(len(val_accuracies)), key=lambda k: (-val_accuracies[k], k))
  accepted, best = [order[0]], val_accuracies[order[0]]
  for k in order[1:]:
    score = soup_val_accuracy(accepted + [k])
    if score >= best:
      accepted, best = accepted + [k], score
  return accepted


@functools.partial(jax.jit, static_argnums=0)
def _batch_stats_after(model: nn.Module, params: Any, batch_stats: Any, x: jax.Array) -> Any:
  """The `batch_stats` after one train-mode forward pass on `x`, starting from `batch_stats`."""
  _, updates = model.apply({"params": params, "batch_stats": batch_stats}, x, train=True,
                           mutable=["batch_stats"])
  return updates["batch_stats"]


@jax.jit
def _unbias(zeros_run: Any, ones_run: Any) -> Any:
  # BatchNorm's update is new = momentum * old + (1 - momentum) * batch_statistic; from
  # old = 0 and old = 1: momentum = ones_run - zeros_run, batch_statistic = zeros_run / (1 - it).
  return jax.tree.map(lambda z, o: z / (1.0 - (o - z)), zeros_run, ones_run)


def recalibrate_batch_stats(model: nn.Module, params: Any, batch_stats: Any,
                            batches: Iterable[jax.Array]) -> Any:
  """BatchNorm statistics recomputed for `params` on `batches`; the params are untouched.

  Each BatchNorm layer's running mean and variance become the average over `batches` (each
  `[b, ...]` inputs) of that batch's mean and variance in a train-mode forward pass: a
  cumulative average (PyTorch's `momentum=None`) rather than the exponential one of
  training. Works for any BatchNorm momentum: it is recovered from two forward passes.

  Returns:
    The new `batch_stats` ({} stays {}).
  """
  if not jax.tree.leaves(batch_stats):
    return batch_stats
  zeros = jax.tree.map(jnp.zeros_like, batch_stats)
  ones = jax.tree.map(jnp.ones_like, batch_stats)
  total, count = None, 0
  for x in batches:
    batch = _unbias(_batch_stats_after(model, params, zeros, x),
                    _batch_stats_after(model, params, ones, x))
    total = batch if total is None else jax.tree.map(jnp.add, total, batch)
    count += 1
  if not count:
    raise ValueError("BatchNorm recalibration needs at least one batch")
  return jax.tree.map(lambda t, s: (t / count).astype(s.dtype), total, batch_stats)


def recalibration_batches(dataset: Dataset, fraction: float, batch_size: int) -> Iterator[Any]:
  """The inputs of the first `fraction` of the training split (at least one batch),
  unaugmented, in its stored order, `batch_size` examples a batch (the last may be smaller)."""
  n = max(batch_size, int(round(fraction * dataset.train.num_examples)))
  return (x for x, _ in first_batches(dataset.train, n, batch_size))
