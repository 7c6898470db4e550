"""CIFAR ResNets: He et al. 2016 ResNet-{6n+2} (option A shortcuts) and the ResNet-18 variant.

ResNet-{20, 32, 44, 56, 110} (He et al., "Deep Residual Learning", Sec. 4.2): a 3x3 conv with 16
channels, three stages of n BasicBlocks with 16 / 32 / 64 channels, global average pooling and
a linear classifier; shortcuts are identities, with stride-2 subsampling and zero-padded extra
channels where the shape changes (option A), so ResNet-20 has 0.27M parameters.

ResNet-18 (CIFAR variant, as in kuangliu/pytorch-cifar): 3x3 stride-1 stem, no max-pool, four
stages of 2 BasicBlocks with 64 .. 512 channels and 1x1 conv + BN projection shortcuts.

3x3 convs pad 1 pixel on each side (PyTorch's `padding=1`), so a stride-2 conv samples the same
pixels as the stride-2 shortcut.
"""

from typing import Sequence

import flax.linen as nn
import jax.numpy as jnp

from sms_jax.models.layers import Dtype, PAD1, conv_and_norm


class BasicBlock(nn.Module):
  """Post-activation basic block: relu(BN(conv3x3(relu(BN(conv3x3(x))))) + shortcut(x)).

  Input `x: [n, h, w, c]`; output `[n, h / strides, w / strides, features]`. Layers: `conv1`,
  `bn1`, `conv2`, `bn2` and, for a projection shortcut, `shortcut_conv`, `shortcut_bn`.

  Attributes:
    features: output channels.
    strides: stride of the first conv (and of the shortcut).
    shortcut: how the shortcut changes shape when needed: "zero_pad" (option A: subsample and
      zero-pad channels, no parameters) or "projection" (1x1 conv + BN).
    dtype: computation dtype.
  """
  features: int
  strides: int = 1
  shortcut: str = "projection"
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x, train: bool = False):
    conv, norm = conv_and_norm(self.dtype, train)
    s = self.strides
    y = conv(self.features, (3, 3), strides=(s, s), padding=PAD1, name="conv1")(x)
    y = nn.relu(norm(name="bn1")(y))
    y = conv(self.features, (3, 3), padding=PAD1, name="conv2")(y)
    y = norm(name="bn2")(y)
    if s != 1 or x.shape[-1] != self.features:
      if self.shortcut == "zero_pad":
        x = x[:, ::s, ::s, :]
        extra = self.features - x.shape[-1]
        x = jnp.pad(x, ((0, 0), (0, 0), (0, 0), (extra // 2, extra - extra // 2)))
      elif self.shortcut == "projection":
        x = conv(self.features, (1, 1), strides=(s, s), name="shortcut_conv")(x)
        x = norm(name="shortcut_bn")(x)
      else:
        raise ValueError(f"unknown shortcut {self.shortcut!r}; allowed: zero_pad, projection")
    return nn.relu(x + y)


class CifarResNet(nn.Module):
  """ResNet for small images: 3x3 stem, stages of BasicBlocks, global pool, linear classifier.

  Input `x: [n, h, w, c]` float32 (CIFAR: `[n, 32, 32, 3]`); output `[n, num_classes]` float32
  logits. Layers, in forward order: `stem_conv`, `stem_bn`, `stage1_block0`, ...,
  `stage{len(stage_sizes)}_block{k}`, `classifier`. The first block of every stage after the
  first has stride 2.

  Attributes:
    num_classes: number of output logits.
    stage_sizes: blocks per stage, e.g. (3, 3, 3) for ResNet-20.
    widths: channels per stage; the stem has `widths[0]` channels.
    shortcut: "zero_pad" (option A) or "projection" (see `BasicBlock`).
    dtype: computation dtype; parameters stay float32.
  """
  num_classes: int
  stage_sizes: Sequence[int] = (3, 3, 3)
  widths: Sequence[int] = (16, 32, 64)
  shortcut: str = "zero_pad"
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x, train: bool = False):
    conv, norm = conv_and_norm(self.dtype, train)
    x = jnp.asarray(x, self.dtype)
    x = conv(self.widths[0], (3, 3), padding=PAD1, name="stem_conv")(x)
    x = nn.relu(norm(name="stem_bn")(x))
    for i, (num_blocks, width) in enumerate(zip(self.stage_sizes, self.widths)):
      for j in range(num_blocks):
        strides = 2 if i > 0 and j == 0 else 1
        x = BasicBlock(width, strides, self.shortcut, dtype=self.dtype,
                       name=f"stage{i + 1}_block{j}")(x, train)
    x = jnp.mean(x, axis=(1, 2))
    x = nn.Dense(self.num_classes, dtype=self.dtype, param_dtype=jnp.float32, name="classifier")(x)
    return jnp.asarray(x, jnp.float32)


def resnet_cifar(depth: int, num_classes: int, dtype: Dtype = jnp.float32) -> CifarResNet:
  """He et al. CIFAR ResNet-`depth`, `depth = 6n + 2` (20, 32, 44, 56, 110, ...)."""
  if depth < 8 or (depth - 2) % 6:
    raise ValueError(f"CIFAR ResNet depth must be 6n + 2 with n >= 1, got {depth}")
  n = (depth - 2) // 6
  return CifarResNet(num_classes, (n, n, n), (16, 32, 64), "zero_pad", dtype=dtype)


def resnet18_cifar(num_classes: int, dtype: Dtype = jnp.float32) -> CifarResNet:
  """ResNet-18, CIFAR variant: 3x3 stride-1 stem, no max-pool, projection shortcuts."""
  return CifarResNet(num_classes, (2, 2, 2, 2), (64, 128, 256, 512), "projection", dtype=dtype)
