"""VGG with BatchNorm, CIFAR variant (Simonyan & Zisserman 2015; BN as in torchvision's *_bn).

13 (VGG-16) 3x3 conv -> BN -> relu layers in five stages, each ended by a 2x2 max-pool, then the
spatial mean (a 32x32 input is 1x1 by then, so this equals flattening) and one linear classifier.
VGG-16-BN has 14.72M parameters at 10 classes.
"""

from typing import Sequence

import flax.linen as nn
import jax.numpy as jnp

from sms_jax.models.layers import Dtype, PAD1, conv_and_norm


# Conv channels per stage; every stage ends with a 2x2 max-pool.
VGG_STAGES = {
    11: ((64,), (128,), (256, 256), (512, 512), (512, 512)),
    13: ((64, 64), (128, 128), (256, 256), (512, 512), (512, 512)),
    16: ((64, 64), (128, 128), (256, 256, 256), (512, 512, 512), (512, 512, 512)),
    19: ((64, 64), (128, 128), (256,) * 4, (512,) * 4, (512,) * 4),
}


class VGG(nn.Module):
  """VGG-BN for small images.

  Input `x: [n, h, w, c]` float32 (CIFAR: `[n, 32, 32, 3]`); output `[n, num_classes]` float32
  logits. Layers, in forward order: `conv1_1`, `bn1_1`, `conv1_2`, ..., `conv5_3`, `bn5_3`,
  `classifier` (stage_conv numbering, as in the paper).

  Attributes:
    num_classes: number of output logits.
    stages: conv channels per stage, e.g. `VGG_STAGES[16]`.
    dtype: computation dtype; parameters stay float32.
  """
  num_classes: int
  stages: Sequence[Sequence[int]] = VGG_STAGES[16]
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x, train: bool = False):
    conv, norm = conv_and_norm(self.dtype, train)
    x = jnp.asarray(x, self.dtype)
    for i, stage in enumerate(self.stages):
      for j, channels in enumerate(stage):
        x = conv(channels, (3, 3), padding=PAD1, name=f"conv{i + 1}_{j + 1}")(x)
        x = nn.relu(norm(name=f"bn{i + 1}_{j + 1}")(x))
      x = nn.max_pool(x, (2, 2), strides=(2, 2))
    x = jnp.mean(x, axis=(1, 2))
    x = nn.Dense(self.num_classes, dtype=self.dtype, param_dtype=jnp.float32, name="classifier")(x)
    return jnp.asarray(x, jnp.float32)


def vgg(depth: int, num_classes: int, dtype: Dtype = jnp.float32) -> VGG:
  """VGG-`depth`-BN, depth in 11, 13, 16, 19."""
  if depth not in VGG_STAGES:
    raise ValueError(f"VGG depth must be one of {sorted(VGG_STAGES)}, got {depth}")
  return VGG(num_classes, VGG_STAGES[depth], dtype=dtype)
