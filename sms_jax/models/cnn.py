"""Small convolutional networks: a 1-D CNN for MNIST-1D and a 2-D CNN for digits / MNIST."""


import flax.linen as nn
import jax.numpy as jnp

from sms_jax.models.layers import Dtype, conv_and_norm


class CNN1D(nn.Module):
  """1-D CNN for signals: 3 x [Conv(k=5, stride 2, SAME) -> BN -> relu], Dense(128), classifier.

  Input `x: [n, length, channels]` float32 (MNIST-1D: `[n, 40, 1]`, giving 40 -> 20 -> 10 -> 5
  steps); output `[n, num_classes]` float32 logits. Layers: `conv0`/`bn0` .. `conv2`/`bn2`,
  `dense`, `classifier`.

  Attributes:
    num_classes: number of output logits.
    features: channels of each conv layer.
    hidden: width of the Dense layer before the classifier.
    dtype: computation dtype; parameters stay float32.
  """
  num_classes: int
  features: int = 32
  num_convs: int = 3
  hidden: int = 128
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x, train: bool = False):
    conv, norm = conv_and_norm(self.dtype, train)
    x = jnp.asarray(x, self.dtype)
    for i in range(self.num_convs):
      x = conv(self.features, (5,), strides=(2,), padding="SAME", name=f"conv{i}")(x)
      x = nn.relu(norm(name=f"bn{i}")(x))
    x = x.reshape((x.shape[0], -1))
    x = nn.relu(nn.Dense(self.hidden, dtype=self.dtype, param_dtype=jnp.float32, name="dense")(x))
    x = nn.Dense(self.num_classes, dtype=self.dtype, param_dtype=jnp.float32, name="classifier")(x)
    return jnp.asarray(x, jnp.float32)


class CNN2D(nn.Module):
  """Small 2-D CNN: Conv3x3(32) -> BN -> relu, Conv3x3(64, stride 2) -> BN -> relu, Dense(128).

  Input `x: [n, h, w, c]` float32 (8x8x1 digits or 28x28x1 MNIST); output `[n, num_classes]`
  float32 logits. Layers: `conv0`, `bn0`, `conv1`, `bn1`, `dense`, `classifier`.

  Attributes:
    num_classes: number of output logits.
    features: channels of the two conv layers.
    hidden: width of the Dense layer before the classifier.
    dtype: computation dtype; parameters stay float32.
  """
  num_classes: int
  features: tuple[int, int] = (32, 64)
  hidden: int = 128
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x, train: bool = False):
    conv, norm = conv_and_norm(self.dtype, train)
    x = jnp.asarray(x, self.dtype)
    for i, (width, stride) in enumerate(zip(self.features, (1, 2))):
      x = conv(width, (3, 3), strides=(stride, stride), padding="SAME", name=f"conv{i}")(x)
      x = nn.relu(norm(name=f"bn{i}")(x))
    x = x.reshape((x.shape[0], -1))
    x = nn.relu(nn.Dense(self.hidden, dtype=self.dtype, param_dtype=jnp.float32, name="dense")(x))
    x = nn.Dense(self.num_classes, dtype=self.dtype, param_dtype=jnp.float32, name="classifier")(x)
    return jnp.asarray(x, jnp.float32)
