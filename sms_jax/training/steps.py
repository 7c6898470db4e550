"""Jitted training and evaluation: one train step, a whole epoch as one `lax.scan`.

Every strategy (dense, IMP, SMS, gradual pruning) trains through `train_step`; the model
and optimizer are bound with `functools.partial` before `jax.jit`, the arrays are
arguments (never closed-over constants).
"""

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax
from jax.sharding import PartitionSpec

from sms_jax import metrics
from sms_jax.data import device
from sms_jax.training.state import TrainState


def train_step(state: TrainState, inputs: jax.Array, labels: jax.Array, *, model: nn.Module,
               tx: optax.GradientTransformation,
               label_smoothing: float = 0.0) -> tuple[TrainState, dict[str, jax.Array]]:
  """One SGD step on `inputs: [b, ...]`, `labels: [b]`; returns the new state, loss, accuracy."""

  def loss_fn(params):
    logits, updates = model.apply({"params": params, "batch_stats": state.batch_stats},
                                  inputs, train=True, mutable=["batch_stats"])
    loss = metrics.cross_entropy(logits, labels, label_smoothing)
    return loss, (logits, updates.get("batch_stats", state.batch_stats))

  (loss, (logits, batch_stats)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
  updates, opt_state = tx.update(grads, state.opt_state, state.params)
  new_state = state.replace(step=state.step + 1, params=optax.apply_updates(state.params, updates),
                            batch_stats=batch_stats, opt_state=opt_state)
  return new_state, {"loss": loss, "accuracy": metrics.accuracy(logits, labels)}


def epoch_plan(key: jax.Array, num_examples: int, batch_size: int) -> tuple[jax.Array, jax.Array]:
  """An epoch's batch order `[steps, batch_size]` and augmentation key, both from `key` alone."""
  order_key, augment_key = jax.random.split(key)
  return device.epoch_batches(order_key, num_examples, batch_size), augment_key


def train_epoch_step(state: TrainState, augment_key: jax.Array, step_index: jax.Array,
                     batches: jax.Array, inputs: jax.Array, labels: jax.Array, *, augment: str,
                     batch_spec: PartitionSpec | None = None,
                     **step_kwargs) -> tuple[TrainState, dict[str, jax.Array]]:
  """Step `step_index` of an epoch planned by `epoch_plan`, on in-memory `inputs: [n, ...]`.

  Gathers the batch `batches[step_index]`, augments it with `fold_in(augment_key,
  step_index)` and takes one `train_step` (`step_kwargs`: model, tx, label_smoothing).
  `batch_spec` (inside a mesh) shards the batch, e.g. over the mesh's data axis.
  """
  idx = batches[step_index]
  batch = device.augment(jax.random.fold_in(augment_key, step_index), inputs[idx], augment)
  batch_labels = labels[idx]
  if batch_spec is not None:
    batch, batch_labels = jax.lax.with_sharding_constraint((batch, batch_labels), batch_spec)
  return train_step(state, batch, batch_labels, **step_kwargs)


def train_epoch(state: TrainState, key: jax.Array, inputs: jax.Array, labels: jax.Array, *,
                batch_size: int, augment: str, **step_kwargs) -> tuple[TrainState, dict[str, Any]]:
  """One epoch over in-memory data `inputs: [n, ...]`, `labels: [n]`, in one `lax.scan`.

  The batch order and the augmentation are functions of `key` alone. Returns the new state
  and per-step metrics `{'loss': [steps], 'accuracy': [steps]}`. Equal to calling
  `train_epoch_step` for each step (see `sms_jax.training.loop.in_memory_epochs`), which is
  the faster form on CPU: XLA:CPU's backward convolutions run 7-31x slower inside a loop.
  """
  batches, augment_key = epoch_plan(key, labels.shape[0], batch_size)
  body = lambda state, i: train_epoch_step(state, augment_key, i, batches, inputs, labels,
                                           augment=augment, **step_kwargs)
  return jax.lax.scan(body, state, jnp.arange(batches.shape[0]))


def predict(state: TrainState, inputs: jax.Array, *, model: nn.Module,
            batch_size: int) -> jax.Array:
  """Logits `[n, num_classes]` of `inputs: [n, ...]` in eval mode, `batch_size` at a time."""
  n = inputs.shape[0]
  batch_size = min(batch_size, n)
  num_batches = -(-n // batch_size)
  padded = jnp.pad(inputs, [(0, num_batches * batch_size - n)] + [(0, 0)] * (inputs.ndim - 1))
  variables = {"params": state.params, "batch_stats": state.batch_stats}
  logits = jax.lax.map(lambda x: model.apply(variables, x, train=False),
                       padded.reshape(num_batches, batch_size, *inputs.shape[1:]))
  return logits.reshape(num_batches * batch_size, -1)[:n]
