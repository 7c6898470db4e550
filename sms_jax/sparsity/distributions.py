"""Layerwise densities for a target global density (Gadhikar et al., ICML 2023; REFERENCE.md 2).

Given the prunable kernels' shapes in forward order (Flax: conv `(k_h, k_w, c_in, c_out)`, 1-D
conv `(k, c_in, c_out)`, dense `(c_in, c_out)`), n_l their sizes, N = sum n_l and the target
global density p, each distribution gives densities d_l with sum(d_l * n_l) = p * N:
  uniform    d_l = p;
  er         d_l = eps * (c_in + c_out) / (c_in * c_out)   (Erdos-Renyi: kernel size ignored);
  erk        d_l = eps * sum(shape) / prod(shape)           (kernel dimensions included);
  balanced   d_l = eps / n_l                                (the same nonzero count per layer);
  pyramidal  d_l = r ** l, l = 1..L, r in (0, 1] the root of sum(n_l * r ** l) = p * N.
A layer whose density would exceed 1 is made dense and eps is solved again over the others,
until none exceeds 1, so the achieved density equals the target (the reference clamps at 1
without redistributing and falls short: e.g. balanced 0.190 instead of 0.3 for its CIFAR
ResNet-18).
"""

from typing import Sequence

import numpy as np

DISTRIBUTIONS = ("uniform", "er", "erk", "balanced", "pyramidal")


def _scores(shapes: Sequence[Sequence[int]], distribution: str) -> np.ndarray:
  """The unnormalised density of each layer for the eps-scaled distributions."""
  if distribution == "er":
    return np.asarray([(s[-2] + s[-1]) / (s[-2] * s[-1]) for s in shapes], np.float64)
  if distribution == "erk":
    return np.asarray([sum(s) / np.prod(s) for s in shapes], np.float64)
  if distribution == "balanced":
    return np.asarray([1.0 / np.prod(s) for s in shapes], np.float64)
  raise ValueError(distribution)


def _scaled_with_saturation(scores: np.ndarray, sizes: np.ndarray, budget: float) -> np.ndarray:
  """Densities `eps * scores` summing (weighted by `sizes`) to `budget` nonzeros, with every
  layer that would exceed 1 made dense and eps re-solved over the others."""
  dense = np.zeros(len(sizes), bool)
  while True:
    free = ~dense
    eps = (budget - sizes[dense].sum()) / (scores[free] * sizes[free]).sum()
    densities = np.where(dense, 1.0, eps * scores)
    over = free & (densities > 1.0)
    if not over.any():
      return densities
    dense |= over


def _pyramidal(sizes: np.ndarray, budget: float) -> np.ndarray:
  """`r ** l` with `sum(sizes * r ** l) = budget`, r found by bisection (monotone in r)."""
  powers = np.arange(1, len(sizes) + 1)
  low, high = 0.0, 1.0
  for _ in range(200):
    r = (low + high) / 2
    if (sizes * r ** powers).sum() < budget:
      low = r
    else:
      high = r
  return ((low + high) / 2) ** powers


def layer_densities(shapes: Sequence[Sequence[int]], distribution: str,
                    density: float) -> np.ndarray:
  """Densities `[L]` of the kernels `shapes` (forward order) for a global `density`.

  Raises:
    ValueError: unknown distribution, density outside (0, 1], or no layers.
  """
  if distribution not in DISTRIBUTIONS:
    raise ValueError(f"unknown density distribution {distribution!r}; allowed: "
                     f"{', '.join(DISTRIBUTIONS)}")
  if not 0.0 < density <= 1.0:
    raise ValueError(f"density {density} is not allowed; allowed: a number in (0, 1]")
  if not shapes:
    raise ValueError("no prunable layers to distribute a density over")
  sizes = np.asarray([np.prod(s) for s in shapes], np.float64)
  budget = density * sizes.sum()
  if distribution == "uniform":
    return np.full(len(sizes), float(density))
  if distribution == "pyramidal":
    return _pyramidal(sizes, budget)
  return _scaled_with_saturation(_scores(shapes, distribution), sizes, budget)


def layer_counts(shapes: Sequence[Sequence[int]], densities: np.ndarray) -> list[int]:
  """The number of weights each layer keeps: `round(density_l * n_l)`, at least 1."""
  return [max(1, int(round(d * np.prod(s)))) for s, d in zip(shapes, densities)]
