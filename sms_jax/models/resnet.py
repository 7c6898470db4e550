"""ImageNet ResNets (He et al. 2016): ResNet-18/34 (basic blocks), ResNet-50/101/152 (bottleneck).

7x7 stride-2 conv stem with BN, relu and a 3x3 stride-2 max-pool; four stages with 64 / 128 /
256 / 512 base channels (bottlenecks expand by 4), stride 2 at the start of stages 2-4 (on the
3x3 conv, as in torchvision, "ResNet v1.5"); 1x1 conv + BN projection shortcuts where the shape
changes; global average pooling and a linear classifier. ResNet-50 has 25.56M parameters at
1000 classes.
"""

from typing import Sequence

import flax.linen as nn
import jax.numpy as jnp

from sms_jax.models.layers import Dtype, PAD1, conv_and_norm
from sms_jax.models.resnet_cifar import BasicBlock


class BottleneckBlock(nn.Module):
  """Bottleneck block: 1x1 (features) -> 3x3 (features, strides) -> 1x1 (4 * features), + shortcut.

  Input `x: [n, h, w, c]`; output `[n, h / strides, w / strides, 4 * features]`. Layers:
  `conv1`, `bn1`, `conv2`, `bn2`, `conv3`, `bn3` and, when the shape changes, `shortcut_conv`,
  `shortcut_bn`.
  """
  features: int
  strides: int = 1
  dtype: Dtype = jnp.float32
  expansion: int = 4

  @nn.compact
  def __call__(self, x, train: bool = False):
    conv, norm = conv_and_norm(self.dtype, train)
    s = self.strides
    out = self.features * self.expansion
    y = conv(self.features, (1, 1), name="conv1")(x)
    y = nn.relu(norm(name="bn1")(y))
    y = conv(self.features, (3, 3), strides=(s, s), padding=PAD1, name="conv2")(y)
    y = nn.relu(norm(name="bn2")(y))
    y = conv(out, (1, 1), name="conv3")(y)
    y = norm(name="bn3")(y)
    if s != 1 or x.shape[-1] != out:
      x = conv(out, (1, 1), strides=(s, s), name="shortcut_conv")(x)
      x = norm(name="shortcut_bn")(x)
    return nn.relu(x + y)


class ResNet(nn.Module):
  """ImageNet ResNet.

  Input `x: [n, h, w, c]` float32 (ImageNet: `[n, 224, 224, 3]`, downsampled 32x to 7x7);
  output `[n, num_classes]` float32 logits. Layers, in forward order: `stem_conv`, `stem_bn`,
  `stage1_block0`, ..., `stage4_block{k}`, `classifier`.

  Attributes:
    num_classes: number of output logits.
    stage_sizes: blocks per stage, e.g. (3, 4, 6, 3) for ResNet-50.
    bottleneck: BottleneckBlock if True, else BasicBlock with projection shortcuts.
    dtype: computation dtype; parameters stay float32.
  """
  num_classes: int
  stage_sizes: Sequence[int] = (3, 4, 6, 3)
  bottleneck: bool = True
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x, train: bool = False):
    conv, norm = conv_and_norm(self.dtype, train)
    block_cls = BottleneckBlock if self.bottleneck else BasicBlock
    x = jnp.asarray(x, self.dtype)
    x = conv(64, (7, 7), strides=(2, 2), padding=((3, 3), (3, 3)), name="stem_conv")(x)
    x = nn.relu(norm(name="stem_bn")(x))
    x = nn.max_pool(x, (3, 3), strides=(2, 2), padding=PAD1)
    for i, num_blocks in enumerate(self.stage_sizes):
      for j in range(num_blocks):
        strides = 2 if i > 0 and j == 0 else 1
        x = block_cls(64 * 2**i, strides, dtype=self.dtype, name=f"stage{i + 1}_block{j}")(x, train)
    x = jnp.mean(x, axis=(1, 2))
    x = nn.Dense(self.num_classes, dtype=self.dtype, param_dtype=jnp.float32, name="classifier")(x)
    return jnp.asarray(x, jnp.float32)


# depth -> (stage sizes, bottleneck)
RESNET_IMAGENET = {
    18: ((2, 2, 2, 2), False),
    34: ((3, 4, 6, 3), False),
    50: ((3, 4, 6, 3), True),
    101: ((3, 4, 23, 3), True),
    152: ((3, 8, 36, 3), True),
}


def resnet_imagenet(depth: int, num_classes: int, dtype: Dtype = jnp.float32) -> ResNet:
  """ImageNet ResNet-`depth`, depth in 18, 34, 50, 101, 152."""
  if depth not in RESNET_IMAGENET:
    raise ValueError(f"ImageNet ResNet depth must be one of {sorted(RESNET_IMAGENET)}, got {depth}")
  stage_sizes, bottleneck = RESNET_IMAGENET[depth]
  return ResNet(num_classes, stage_sizes, bottleneck, dtype=dtype)
