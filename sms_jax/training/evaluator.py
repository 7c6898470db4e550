"""Eval-mode predictions: logits of a state on in-memory inputs and on a dataset's splits."""

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from sms_jax import evaluation, parallel
from sms_jax.data import Dataset, Split, Stream
from sms_jax.training.state import TrainState


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


class Evaluator:
  """Eval-mode logits of a state on the val and test splits of one dataset."""

  def __init__(self, model: nn.Module, dataset: Dataset, batch_size: int):
    self._batch_size = batch_size
    self._predict = jax.jit(functools.partial(predict, model=model, batch_size=batch_size))
    self._splits = {name: (jax.device_put(split.x), split.y) if isinstance(split, Split) else split
                    for name, split in (("val", dataset.val), ("test", dataset.test))
                    if split.num_examples}

  def logits_and_labels(self, state: TrainState, split: str) -> tuple[np.ndarray, np.ndarray]:
    """`([n, num_classes] logits, [n] labels)` of `split` ('val' or 'test')."""
    data, state = self._splits[split], parallel.to_local(state)
    if not isinstance(data, Stream):
      return np.asarray(self._predict(state, data[0])), data[1]
    batches = [(np.asarray(self._predict(state, x)), y)
               for x, y in data.batches(self._batch_size, train=False)]
    return np.concatenate([b[0] for b in batches]), np.concatenate([b[1] for b in batches])

  def predict(self, state: TrainState, inputs: np.ndarray) -> np.ndarray:
    """Eval-mode logits `[n, num_classes]` of in-memory `inputs: [n, ...]`."""
    return np.asarray(self._predict(parallel.to_local(state), inputs))

  def evaluate(self, state: TrainState, split: str) -> dict[str, float]:
    """Loss, accuracy, ECE and MCE on `split`; {} if the split is empty."""
    if split not in self._splits:
      return {}
    return evaluation.evaluate_logits(*self.logits_and_labels(state, split))
