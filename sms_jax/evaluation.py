"""Evaluation as pure functions: of logits and labels (accuracy, loss, calibration, the
candidates, the best candidate by validation, the prediction ensemble, OOD sets), and of
parameters (inference FLOPs of a sparse model, distances between soup candidates).

Everything here is host-side NumPy (float64) on arrays that the caller computed: eager JAX
would compile every operation anew for each shape, and pure functions are unit-testable on
scripted inputs. `sms_jax.training.evaluator` computes the logits.
"""

import math
from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from flax import traverse_util

from sms_jax.models import param_paths
from sms_jax.sparsity import masks as masks_lib


def accuracy(logits: np.ndarray, labels: np.ndarray) -> float:
  """Fraction of `labels: [n]` equal to the arg-max of `logits: [n, c]`."""
  return float((np.asarray(logits).argmax(-1) == np.asarray(labels)).mean())


def calibration_errors(probs: np.ndarray, labels: np.ndarray,
                       bins: int = 15) -> tuple[float, float]:
  """Expected and maximum calibration error (ECE, MCE) with `bins` equal-width bins.

  Args:
    probs: `[n, c]` predicted class probabilities.
    labels: `[n]` int labels.
  Returns:
    (ece, mce): ECE = sum over bins of |accuracy - confidence| weighted by the bin's share
    of examples; MCE = the largest |accuracy - confidence| over non-empty bins.
  """
  probs, labels = np.asarray(probs, np.float64), np.asarray(labels)
  confidence = probs.max(-1)
  correct = probs.argmax(-1) == labels
  bin_index = np.clip(np.ceil(confidence * bins).astype(int) - 1, 0, bins - 1)
  ece, mce = 0.0, 0.0
  for b in range(bins):
    in_bin = bin_index == b
    if in_bin.any():
      gap = abs(correct[in_bin].mean() - confidence[in_bin].mean())
      ece += in_bin.mean() * gap
      mce = max(mce, gap)
  return float(ece), float(mce)


def log_softmax(logits: np.ndarray) -> np.ndarray:
  """Log-probabilities `[n, c]` of `logits: [n, c]`, in float64 NumPy (host side)."""
  shifted = np.asarray(logits, np.float64) - np.max(logits, -1, keepdims=True)
  return shifted - np.log(np.exp(shifted).sum(-1, keepdims=True))


def worst_class_accuracy(logits: np.ndarray, labels: np.ndarray) -> float:
  """The lowest per-class accuracy of `logits: [n, c]` on `labels: [n]`, over the classes
  that occur in `labels` (the paper's fairness view)."""
  predicted, labels = np.asarray(logits).argmax(-1), np.asarray(labels)
  return float(min((predicted[labels == k] == k).mean() for k in np.unique(labels)))


def evaluate_logits(logits: np.ndarray, labels: np.ndarray) -> dict[str, float]:
  """Loss, accuracy, ECE, MCE and worst-class accuracy of `logits: [n, c]` on `labels: [n]`,
  as Python floats.

  Computed on the host in NumPy (float64): eager JAX would compile every operation anew for
  each split's shape.
  """
  logits, labels = np.asarray(logits, np.float64), np.asarray(labels)
  log_probs = log_softmax(logits)
  ece, mce = calibration_errors(np.exp(log_probs), labels)
  return {"loss": float(-log_probs[np.arange(len(labels)), labels].mean()),
          "accuracy": float((logits.argmax(-1) == labels).mean()), "ece": ece, "mce": mce,
          "worst_class_accuracy": worst_class_accuracy(logits, labels)}


def candidate_accuracies(logits: np.ndarray, labels: np.ndarray) -> list[float]:
  """The accuracy of each candidate's `logits: [m, n, c]` on `labels: [n]`."""
  return [accuracy(l, labels) for l in logits]


def best_candidate(val_accuracies: Sequence[float]) -> int:
  """The index of the highest validation accuracy (the first of equals)."""
  return int(np.argmax(val_accuracies))


def ensemble_probabilities(logits: np.ndarray) -> np.ndarray:
  """The prediction ensemble of m candidates: the mean over `logits: [m, n, c]` of their
  softmax probabilities, `[n, c]`."""
  return np.mean([np.exp(log_softmax(l)) for l in logits], axis=0)


def ensemble_accuracy(logits: np.ndarray, labels: np.ndarray) -> float:
  """Accuracy of the ensemble's averaged probabilities (`logits: [m, n, c]`, `labels: [n]`)."""
  return accuracy(ensemble_probabilities(logits), labels)


def ood_accuracies(logits: dict[str, np.ndarray],
                   labels: dict[str, np.ndarray]) -> dict[str, float]:
  """`{set name: accuracy}` of each OOD set's `logits: [n, c]` on its `labels: [n]`."""
  return {name: accuracy(logits[name], labels[name]) for name in logits}


def _output_shapes(model: nn.Module, variables: Any,
                   input_shape: Sequence[int]) -> dict[str, list[tuple[int, ...]]]:
  """Output shapes of every submodule call on one example, by module path, e.g. "a/conv1".

  Traced abstractly (`jax.eval_shape`): no FLOPs are spent. A module called twice has two.
  """
  def forward(variables, x):
    return model.apply(variables, x, train=False, capture_intermediates=True,
                       mutable=["intermediates"])[1]["intermediates"]

  example = jax.ShapeDtypeStruct((1, *input_shape), jnp.float32)
  flat = traverse_util.flatten_dict(jax.eval_shape(forward, variables, example))
  return {"/".join(path[:-1]): [out.shape for out in outputs]
          for path, outputs in flat.items() if path[-1] == "__call__"}


def layer_flops(model: nn.Module, variables: Any,
                input_shape: Sequence[int]) -> list[dict[str, Any]]:
  """Dense and nonzero inference FLOPs (multiply-adds per example) of each kernel, in forward order.

  A kernel's dense FLOPs are its size times the spatial positions of its module's output:
  conv = C_in*C_out*k_h*k_w*H_out*W_out (1-D: C_in*C_out*k*L_out), linear = in*out. Its nonzero
  FLOPs scale them by the kernel's fraction of nonzero entries, i.e. nonzero entries times the
  output positions. Biases, BatchNorm and activations are not counted.

  Args:
    model: the Flax module.
    variables: its variables: 'params' and, for BatchNorm models, 'batch_stats'.
    input_shape: the shape of one example, e.g. (32, 32, 3) or (40, 1).
  Returns:
    `[{'name': 'stage1_block0/conv1/kernel', 'dense_flops': int, 'nonzero_flops': int}, ...]`,
    one record per parameter whose path ends in 'kernel'.
  """
  outputs = _output_shapes(model, variables, input_shape)
  flat = traverse_util.flatten_dict(variables["params"], sep="/")
  records = []
  for name in param_paths(model, input_shape):
    if not name.endswith("/kernel"):
      continue
    kernel = np.asarray(flat[name])
    positions = sum(math.prod(shape[1:-1]) for shape in outputs[name.rsplit("/", 1)[0]])
    records.append({"name": name, "dense_flops": int(kernel.size * positions),
                    "nonzero_flops": int(np.count_nonzero(kernel) * positions)})
  return records


def flops_summary(records: Sequence[dict[str, Any]]) -> dict[str, Any]:
  """Totals of `layer_flops` records and the theoretical speedup of the sparse model.

  Returns:
    `{'dense': int, 'nonzero': int, 'theoretical_speedup': dense / nonzero}`; the speedup is
    None (JSON null) when no FLOPs are nonzero, where it is unbounded.
  """
  dense = sum(r["dense_flops"] for r in records)
  nonzero = sum(r["nonzero_flops"] for r in records)
  return {"dense": dense, "nonzero": nonzero,
          "theoretical_speedup": dense / nonzero if nonzero else None}


def candidate_distances(params: Any, soup_params: Any) -> dict[str, list]:
  """L2 distances and angles between candidates, and their L2 distances to the soup.

  Each candidate is the vector of all its parameters (every leaf, flattened and concatenated),
  computed in float64 on the host, one leaf at a time.

  Args:
    params: a pytree whose leaves have a leading candidate axis: `[m, ...]`.
    soup_params: the soup, the same pytree without the candidate axis.
  Returns:
    JSON-ready lists: 'pairwise_l2' `[m][m]`, 'pairwise_angle_deg' `[m][m]` (degrees in
    [0, 180], 0 on the diagonal; None where a candidate is all zeros) and 'to_soup_l2' `[m]`.
  """
  leaves = jax.tree.leaves(params)
  m = leaves[0].shape[0]
  squared = np.zeros((m, m))  # squared[i, j] = |w_i - w_j|^2
  gram = np.zeros((m, m))  # gram[i, j] = <w_i, w_j>
  to_soup = np.zeros(m)
  for leaf, soup_leaf in zip(leaves, jax.tree.leaves(soup_params), strict=True):
    w = np.asarray(leaf, np.float64).reshape(m, -1)
    gram += w @ w.T
    to_soup += np.square(w - np.asarray(soup_leaf, np.float64).reshape(1, -1)).sum(1)
    for i in range(m):  # Differences rather than the Gram matrix: no cancellation.
      squared[i] += np.square(w - w[i]).sum(1)
  norms = np.sqrt(np.diag(gram))
  with np.errstate(divide="ignore", invalid="ignore"):
    cosine = np.clip(gram / np.outer(norms, norms), -1.0, 1.0)
  angles = np.degrees(np.arccos(cosine))
  np.fill_diagonal(angles, 0.0)
  angles = [[None if np.isnan(a) else float(a) for a in row] for row in angles]
  return {"pairwise_l2": np.sqrt(squared).tolist(), "pairwise_angle_deg": angles,
          "to_soup_l2": np.sqrt(to_soup).tolist()}


def distances_to(params: Any, start: Any) -> list[float]:
  """The L2 distance of each candidate to `start` over all parameters (every leaf, float64).

  Args:
    params: a pytree whose leaves have a leading candidate axis: `[m, ...]`.
    start: the same pytree without the candidate axis (e.g. the phase's pruned model).
  Returns:
    `[m]` distances.
  """
  leaves = jax.tree.leaves(params)
  squared = np.zeros(leaves[0].shape[0])
  for leaf, start_leaf in zip(leaves, jax.tree.leaves(start), strict=True):
    w = np.asarray(leaf, np.float64).reshape(len(squared), -1)
    squared += np.square(w - np.asarray(start_leaf, np.float64).reshape(1, -1)).sum(1)
  return np.sqrt(squared).tolist()


def sparsity_record(params: Any, masks: Any, ordered_paths: Sequence[str]) -> dict[str, Any]:
  """The sparsity of `masks` over the prunable weights and over all parameters, and per
  prunable layer (forward order) its `name`, `shape`, `size`, `alive` (in the mask) and
  `nonzero` (parameter values that are not exactly 0: at most `alive`)."""
  is_none = lambda x: x is None
  alive = {masks_lib.path_name(path): int(np.count_nonzero(np.asarray(m)))
           for path, m in jax.tree_util.tree_leaves_with_path(masks, is_leaf=is_none)
           if m is not None}
  layers = [{**layer, "alive": alive[layer["name"]]}
            for layer in masks_lib.layer_stats(params, masks, ordered_paths)]
  size, kept = sum(l["size"] for l in layers), sum(l["alive"] for l in layers)
  total = sum(int(x.size) for x in jax.tree.leaves(params))
  return {"sparsity": 1.0 - kept / size, "sparsity_all": (size - kept) / total,
          "layers": layers}
