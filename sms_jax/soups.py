"""Soups: averages of candidates that share one mask, and BatchNorm recalibration.

A soup is a tree map over the candidate axis. Uniform: the mean of all m candidates.
Greedy (the SMS reference's rule): candidates sorted by validation accuracy, best first;
start with the best; add the next if the soup's validation accuracy does not drop (>=);
the final soup is the uniform mean of the accepted ones. Averaging moves the BatchNorm
statistics away from what the averaged weights produce, so before a soup is evaluated its
statistics are recomputed by train-mode forward passes (`recalibrate_batch_stats`).

Trees may be linen dicts or Flax NNX states. `stack_candidates` builds the stacked input from
m trees; `soup_variables` and `greedy_soup_variables` soup a model's `{"params",
"batch_stats"}` with the recalibration done, for training loops of one's own.
"""

import functools
import math
from typing import Any, Callable, Iterable, Iterator, Mapping, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from sms_jax.data import Dataset, Split, device, first_batches
from sms_jax.sparsity import masks as masks_lib
from sms_jax.training import engine

SOUP_METHODS = ("uniform", "greedy")
# Which models a phase recalibrates (`soup.bn_recalibration`), and how it averages.
BN_RECALIBRATIONS = ("all", "soups", "none")
BN_AVERAGES = ("cumulative", "ema")
EMA_MOMENTUM = 0.1  # The reference's: PyTorch's BatchNorm default.
VARIABLE_COLLECTIONS = ("params", "batch_stats")  # What `soup_variables` averages.


def stack_candidates(trees: Sequence[Any]) -> Any:
  """One tree with leaves `[m, ...]` from m trees of one structure and shapes (e.g. m
  candidates' params dicts or NNX states), the input of the soups.

  Raises:
    ValueError: no trees, or a tree whose structure or shapes differ from the first's.
  """
  trees = list(trees)
  if not trees:
    raise ValueError("stack_candidates needs at least one tree; got none")
  first = jax.tree.structure(trees[0])
  shapes = [np.shape(x) for x in jax.tree.leaves(trees[0])]
  for k, tree in enumerate(trees[1:], 1):
    if jax.tree.structure(tree) != first or [np.shape(x) for x in jax.tree.leaves(tree)] != shapes:
      raise ValueError(f"candidate {k}'s tree differs from candidate 0's in structure or "
                       "shapes; allowed: trees of one model")
  return engine.stack(trees)


def unstack_candidates(stacked: Any) -> list[Any]:
  """The m trees of `stacked: [m, ...]` (also from a device mesh), on this process's device."""
  return engine.unstack(stacked)


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


def _nnx():
  """flax.nnx, imported only once an NNX model is given (linen users do not pay its import)."""
  from flax import nnx  # pylint: disable=g-import-not-at-top
  return nnx


def _static(apply_kwargs: Mapping[str, Any]) -> tuple[tuple[str, Any], ...]:
  """`apply_kwargs` as a hashable, ordered tuple (a static argument of the jitted pass)."""
  if not isinstance(apply_kwargs, Mapping) or not all(isinstance(k, str) for k in apply_kwargs):
    raise ValueError(f"apply_kwargs {apply_kwargs!r} is not allowed; allowed: a mapping of "
                     "keyword names to values, e.g. {'train': True}")
  if "mutable" in apply_kwargs:
    raise ValueError("apply_kwargs must not hold 'mutable': recalibration makes only "
                     "'batch_stats' mutable")
  items = tuple(sorted(apply_kwargs.items()))
  try:
    hash(items)
  except TypeError:
    raise ValueError(f"apply_kwargs {apply_kwargs!r} is not allowed; allowed: hashable values "
                     "(bools, numbers, strings): they select the program") from None
  return items


@functools.partial(jax.jit, static_argnums=(0, 1))
def _linen_stats_after(model: nn.Module, kwargs: tuple[tuple[str, Any], ...], params: Any,
                       batch_stats: Any, x: jax.Array) -> Any:
  """The `batch_stats` after one train-mode pass of a linen `model` on `x`."""
  _, updates = model.apply({"params": params, "batch_stats": batch_stats}, x,
                           mutable=["batch_stats"], **dict(kwargs))
  return updates["batch_stats"]


@functools.partial(jax.jit, static_argnums=(0, 1))
def _nnx_stats_after(graphdef: Any, kwargs: tuple[tuple[str, Any], ...], params: Any, rest: Any,
                     batch_stats: Any, x: jax.Array) -> Any:
  """The `batch_stats` (in their own tree structure) after one pass on `x` of the NNX model
  `graphdef` in training mode (`Module.train()`)."""
  nnx = _nnx()
  model = nnx.merge(graphdef, params, batch_stats, rest)
  model.train()
  model(x, **dict(kwargs))
  new = jax.tree.leaves(nnx.state(model, nnx.BatchStat))
  return jax.tree.unflatten(jax.tree.structure(batch_stats), new)


def _train_pass(model: Any, params: Any,
                apply_kwargs: Mapping[str, Any] | None) -> Callable[[Any, jax.Array], Any]:
  """`(batch_stats, x) -> batch_stats` after one train-mode forward pass of `model`."""
  if isinstance(model, nn.Module):
    kwargs = _static({"train": True} if apply_kwargs is None else apply_kwargs)
    return functools.partial(_linen_stats_after, model, kwargs, params)
  nnx = _nnx()
  if not isinstance(model, nnx.Module):
    raise ValueError(f"cannot recalibrate the BatchNorm statistics of a {type(model).__name__}; "
                     "allowed: a flax.linen Module or a flax.nnx Module")
  graphdef, _, _, rest = nnx.split(model, nnx.Param, nnx.BatchStat, ...)
  kwargs = _static({} if apply_kwargs is None else apply_kwargs)
  return functools.partial(_nnx_stats_after, graphdef, kwargs, params, rest)


@jax.jit
def _unbias(zeros_run: Any, ones_run: Any) -> Any:
  # BatchNorm's update is new = momentum * old + (1 - momentum) * batch_statistic; from
  # old = 0 and old = 1: momentum = ones_run - zeros_run, batch_statistic = zeros_run / (1 - it).
  return jax.tree.map(lambda z, o: z / (1.0 - (o - z)), zeros_run, ones_run)


def recalibrate_batch_stats(model: Any, params: Any, batch_stats: Any,
                            batches: Iterable[jax.Array], *,
                            apply_kwargs: Mapping[str, Any] | None = None,
                            momentum: float | None = None) -> Any:
  """BatchNorm statistics recomputed for `params` on `batches`; the params are untouched.

  Each BatchNorm layer's running mean and variance become the average over `batches` (each
  `[b, ...]` inputs) of that batch's mean and variance in a train-mode forward pass: by
  default a cumulative average (PyTorch's `momentum=None`), the exact mean over the
  batches; with `momentum` the exponential average of the SMS reference (PyTorch's
  `reset_running_stats()` then train-mode passes: from mean 0 and variance 1, each batch
  moves the statistics by `momentum` towards its own). Works for any BatchNorm momentum of
  the model: it is recovered from two forward passes.

  Args:
    model: a flax.linen Module, called `model.apply({"params": params, "batch_stats": ...},
      x, mutable=["batch_stats"], **apply_kwargs)`; or a flax.nnx Module (its graph and
      other state are used, not its weights), put in training mode (`Module.train()`:
      `use_running_average=False`, `deterministic=False`) and called `model(x,
      **apply_kwargs)`.
    params: linen: the params dict; NNX: `nnx.state(model, nnx.Param)` or one like it.
    batch_stats: linen: the batch_stats dict; NNX: `nnx.state(model, nnx.BatchStat)`.
    batches: input batches `[b, ...]`, at least one.
    apply_kwargs: how the model is called in training mode (hashable values): default
      `{"train": True}` for linen and none for NNX; e.g. `{"use_running_average": False}`
      or `{"deterministic": False}` for a model whose flag is named so.
    momentum: None for the cumulative average; in (0, 1] for the exponential one (the
      reference: 0.1).
  Returns:
    The new `batch_stats`, in the structure given ({} stays {}).
  Raises:
    ValueError: no batches, a model of another kind, bad `apply_kwargs` or `momentum`.
  """
  if momentum is not None and not 0.0 < momentum <= 1.0:
    raise ValueError(f"BatchNorm recalibration momentum {momentum} is not allowed; allowed: "
                     "None (a cumulative average) or a number in (0, 1]")
  if not jax.tree.leaves(batch_stats):
    return batch_stats
  after = _train_pass(model, params, apply_kwargs)
  zeros = jax.tree.map(jnp.zeros_like, batch_stats)
  ones = jax.tree.map(jnp.ones_like, batch_stats)
  total, count = None, 0
  if momentum is not None:  # PyTorch's reset statistics: mean 0, variance 1.
    total = jax.tree_util.tree_map_with_path(
        lambda path, s: jnp.ones_like(s) if _is_variance(path) else jnp.zeros_like(s),
        batch_stats)
  for x in batches:
    batch = _unbias(after(zeros, x), after(ones, x))
    if momentum is not None:
      total = jax.tree.map(lambda t, b: (1.0 - momentum) * t + momentum * b, total, batch)
    else:
      total = batch if total is None else jax.tree.map(jnp.add, total, batch)
    count += 1
  if not count:
    raise ValueError("BatchNorm recalibration needs at least one batch")
  scale = 1.0 if momentum is not None else 1.0 / count
  return jax.tree.map(lambda t, s: (t * scale).astype(s.dtype), total, batch_stats)


def _is_variance(path: tuple[Any, ...]) -> bool:
  """Whether a batch_stats leaf at `path` is a variance (named `var`, linen and NNX alike)."""
  return "var" in {str(getattr(k, "key", getattr(k, "name", k))) for k in path}


def soup_variables(model: Any, stacked_variables: Mapping[str, Any], indices: Sequence[int],
                   batches: Iterable[jax.Array] | None, *,
                   apply_kwargs: Mapping[str, Any] | None = None, masks: Any = None,
                   momentum: float | None = None) -> dict:
  """The uniform soup of candidates `indices`, its BatchNorm statistics recalibrated.

  Args:
    model: the linen or NNX Module (see `recalibrate_batch_stats`).
    stacked_variables: `{"params": [m, ...], "batch_stats": [m, ...]}` (batch_stats optional;
      NNX: stacked `nnx.Param` and `nnx.BatchStat` states).
    indices: the candidates averaged (see `uniform_soup`).
    batches: the recalibration inputs, each `[b, ...]` (iterated once); None: the
      statistics are averaged like the parameters, not recalibrated.
    apply_kwargs: how to call `model` in training mode (`recalibrate_batch_stats`).
    masks: the candidates' stacked masks `[m, ...]`, if given checked to be one mask.
    momentum: the recalibration's average (`recalibrate_batch_stats`).
  Returns:
    `{"params": ..., "batch_stats": ...}` (the keys given): the means over `indices`, the
    statistics then recalibrated on `batches`, unless there is one ingredient (its own
    statistics are kept).
  Raises:
    ValueError: collections other than VARIABLE_COLLECTIONS, or what `uniform_soup` and
      `recalibrate_batch_stats` raise.
  """
  _check_collections(stacked_variables)
  params = uniform_soup(stacked_variables["params"], indices, masks=masks)
  if "batch_stats" not in stacked_variables:
    return {"params": params}
  batch_stats = uniform_soup(stacked_variables["batch_stats"], indices)
  if len(indices) > 1 and batches is not None:
    batch_stats = recalibrate_batch_stats(model, params, batch_stats, batches,
                                          apply_kwargs=apply_kwargs, momentum=momentum)
  return {"params": params, "batch_stats": batch_stats}


def _check_collections(stacked_variables: Mapping[str, Any]) -> None:
  """Raises ValueError unless `stacked_variables` holds "params" and maybe "batch_stats"."""
  keys = list(stacked_variables) if isinstance(stacked_variables, Mapping) else None
  if keys is None or "params" not in keys or set(keys) - set(VARIABLE_COLLECTIONS):
    raise ValueError(f"stacked variables with collections {keys} are not allowed; allowed: "
                     "{'params': [m, ...]} and optionally 'batch_stats': [m, ...]")


def greedy_soup_variables(model: Any, stacked_variables: Mapping[str, Any],
                          val_accuracies: Sequence[float],
                          evaluate_fn: Callable[[dict], float], batches: Iterable[jax.Array], *,
                          apply_kwargs: Mapping[str, Any] | None = None,
                          masks: Any = None) -> tuple[dict, list[int]]:
  """The greedy soup (`greedy_soup`) of stacked candidates, each trial soup recalibrated.

  Args:
    model: the linen or NNX Module (see `recalibrate_batch_stats`).
    stacked_variables: `{"params": [m, ...], "batch_stats": [m, ...]}` (see `soup_variables`).
    val_accuracies: each candidate's validation accuracy `[m]`.
    evaluate_fn: the validation accuracy of a soup's variables (`soup_variables`' output).
    batches: the recalibration inputs, each `[b, ...]` (read once, then reused).
    apply_kwargs: how to call `model` in training mode (`recalibrate_batch_stats`).
    masks: the candidates' stacked masks `[m, ...]`, if given checked to be one mask.
  Returns:
    The soup's variables (`soup_variables` of the accepted candidates) and the accepted
    candidate indices, best first.
  """
  batches = list(batches)
  accepted = greedy_soup(val_accuracies, lambda indices: evaluate_fn(soup_variables(
      model, stacked_variables, indices, batches, apply_kwargs=apply_kwargs, masks=masks)))
  return soup_variables(model, stacked_variables, accepted, batches, apply_kwargs=apply_kwargs,
                        masks=masks), accepted


def recalibration_batches(dataset: Dataset, fraction: float, batch_size: int, *,
                          augment_key: jax.Array | None = None) -> Iterator[Any]:
  """The inputs of the first `fraction` of the training split (at least one batch), in its
  stored order, `batch_size` examples a batch (the last may be smaller): unaugmented, or
  with `augment_key` given, with the dataset's training augmentation (batch i keyed by
  `fold_in(augment_key, i)`; in-memory data only, as the SMS reference's unshuffled
  training loader does)."""
  n = max(batch_size, int(round(fraction * dataset.train.num_examples)))
  batches = (x for x, _ in first_batches(dataset.train, n, batch_size))
  if augment_key is None or dataset.augment == "none" or not isinstance(dataset.train, Split):
    return batches
  return (_augment(jax.random.fold_in(augment_key, i), x, dataset.augment)
          for i, x in enumerate(batches))


_augment = jax.jit(device.augment, static_argnames="kind")
