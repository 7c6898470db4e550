"""Multi-layer perceptron: flatten, ReLU hidden layers, linear classifier."""

from typing import Sequence

import flax.linen as nn
import jax.numpy as jnp

from sms_jax.models.layers import Dtype


class MLP(nn.Module):
  """Flatten -> Dense(256) -> relu -> Dense(256) -> relu -> Dense(num_classes).

  Input `x: [n, ...]` float32 (any trailing shape, flattened); output `[n, num_classes]` float32
  logits. There is no BatchNorm, so the variables hold only 'params'; `train` is accepted (and
  ignored) so that every model shares one call convention.

  Attributes:
    num_classes: number of output logits.
    hidden_sizes: widths of the hidden layers, named `dense0`, `dense1`, ...
    dtype: computation dtype; parameters stay float32.
  """
  num_classes: int
  hidden_sizes: Sequence[int] = (256, 256)
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x, train: bool = False):
    del train  # No train-dependent layers.
    x = jnp.asarray(x, self.dtype).reshape((x.shape[0], -1))
    for i, width in enumerate(self.hidden_sizes):
      x = nn.Dense(width, dtype=self.dtype, param_dtype=jnp.float32, name=f"dense{i}")(x)
      x = nn.relu(x)
    x = nn.Dense(self.num_classes, dtype=self.dtype, param_dtype=jnp.float32, name="classifier")(x)
    return jnp.asarray(x, jnp.float32)
