"""Classification metrics computed from logits: loss, accuracy, calibration error."""

import jax
import jax.numpy as jnp
import numpy as np
import optax


def cross_entropy(logits: jax.Array, labels: jax.Array, label_smoothing: float = 0.0) -> jax.Array:
  """Mean softmax cross-entropy of `logits: [n, c]` against int `labels: [n]`."""
  targets = jax.nn.one_hot(labels, logits.shape[-1])
  if label_smoothing:
    targets = optax.smooth_labels(targets, label_smoothing)
  return optax.softmax_cross_entropy(logits, targets).mean()


def accuracy(logits: jax.Array, labels: jax.Array) -> jax.Array:
  """Fraction of `labels: [n]` equal to the arg-max of `logits: [n, c]`."""
  return (jnp.argmax(logits, -1) == labels).mean()


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


def evaluate_logits(logits: np.ndarray, labels: np.ndarray) -> dict[str, float]:
  """Loss, accuracy, ECE and MCE of `logits: [n, c]` on `labels: [n]`, as Python floats.

  Computed on the host in NumPy (float64): eager JAX would compile every operation anew for
  each split's shape.
  """
  logits, labels = np.asarray(logits, np.float64), np.asarray(labels)
  shifted = logits - logits.max(-1, keepdims=True)
  log_probs = shifted - np.log(np.exp(shifted).sum(-1, keepdims=True))
  ece, mce = calibration_errors(np.exp(log_probs), labels)
  return {"loss": float(-log_probs[np.arange(len(labels)), labels].mean()),
          "accuracy": float((logits.argmax(-1) == labels).mean()), "ece": ece, "mce": mce}
