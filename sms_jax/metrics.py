"""Training metrics in JAX: the loss and accuracy of a batch's logits (jitted in the step)."""

import jax
import jax.numpy as jnp
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
