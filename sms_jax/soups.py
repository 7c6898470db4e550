"""Soups: averages of candidates that share one mask, and BatchNorm recalibration.

A soup is a tree map over the candidate axis. Uniform: the mean of all m candidates.
Greedy (the SMS reference's rule): candidates sorted by validation accuracy, best first;
start with the best; add the next if the soup's validation accuracy does not drop (>=);
the final soup is the uniform mean of the accepted ones. Averaging moves the BatchNorm
statistics away from what the averaged weights produce, so before a soup is evaluated its
statistics are recomputed by train-mode forward passes (`recalibrate_batch_stats`).
"""

import functools
from typing import Any, Callable, Iterable, Iterator, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from sms_jax.data import Dataset, first_batches

SOUP_METHODS = ("uniform", "greedy")


def uniform_soup(stacked: Any, indices: Sequence[int] | None = None) -> Any:
  """The mean over the candidate axis of `stacked: [m, ...]` (of `indices` only, if given)."""
  if indices is not None:
    stacked = _take(stacked, jnp.asarray(list(indices)))
  return _mean(stacked)


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
    val_accuracies: each candidate's own validation accuracy.
    soup_val_accuracy: validation accuracy of the uniform soup of some candidates (after
      BatchNorm recalibration).
  Returns:
    The accepted candidate indices: the best candidate, then each next one (in order of
    decreasing validation accuracy, ties by index) whose addition keeps the soup's validation
    accuracy at least as high as the best so far.
  """
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
