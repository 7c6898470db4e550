"""In-memory splits: the `Split` container, the validation hold-out, standardisation."""

from typing import NamedTuple

import numpy as np


class Split(NamedTuple):
  """One in-memory split: `x: [n, ...] float32` (NHWC images or NLC signals), `y: [n] int32`."""
  x: np.ndarray
  y: np.ndarray

  @property
  def num_examples(self) -> int:
    return len(self.y)


def hold_out_validation(train: Split, fraction: float, seed: int) -> tuple[Split, Split]:
  """Splits `train` into (train, val) with `round(fraction * n)` validation examples.

  The hold-out is a fixed permutation of `seed` (numpy's PCG64), so it is the same on
  every machine and every run; both parts keep the original order of their examples.
  """
  n = len(train.y)
  n_val = int(round(fraction * n))
  if n_val == 0:
    return train, Split(train.x[:0], train.y[:0])
  val_idx = np.sort(np.random.default_rng(seed).permutation(n)[:n_val])
  is_val = np.zeros(n, bool)
  is_val[val_idx] = True
  return (Split(train.x[~is_val], train.y[~is_val]), Split(train.x[is_val], train.y[is_val]))


def standardization_stats(reference: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """Per-channel (last axis) `(mean, std)` of `reference`, float32 `[channels]`; a channel
  without spread gets std 1."""
  reduce_axes = tuple(range(reference.ndim - 1))
  mean = reference.mean(axis=reduce_axes, dtype=np.float64)
  std = reference.std(axis=reduce_axes, dtype=np.float64)
  return mean.astype(np.float32), np.where(std > 0, std, 1.0).astype(np.float32)


def standardize(reference: np.ndarray, *arrays: np.ndarray) -> list[np.ndarray]:
  """Standardises `arrays` per channel (last axis) with `reference`'s mean and std.

  Returns float32 arrays. The statistics come from the training inputs only, so that the
  validation and test splits are transformed the same way without leaking into them.
  """
  return standardize_with(standardization_stats(reference), *arrays)


def standardize_with(stats: tuple[np.ndarray, np.ndarray],
                     *arrays: np.ndarray) -> list[np.ndarray]:
  """`(a - mean) / std` in float32 for each of `arrays`, with `stats = (mean, std)`."""
  mean, std = stats
  return [(a.astype(np.float32) - mean) / std for a in arrays]
