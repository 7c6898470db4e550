"""Wide residual networks (Zagoruyko & Komodakis 2016), pre-activation, for CIFAR-sized images.

WRN-d-k: a 3x3 conv with 16 channels, three stages of n = (d - 4) / 6 pre-activation blocks with
16k / 32k / 64k channels (strides 1, 2, 2), BN -> relu, global average pooling, linear classifier.
Where a block changes shape its shortcut is a 1x1 conv applied to the pre-activated input.
WRN-28-10 has 36.48M parameters at 10 classes, 36.54M at 100 (the paper's 36.5M).

Dropout (`dropout > 0`; the SMS reference uses 0.3 in its CIFAR-100 WideResNets) sits where the
reference puts it: on the first conv's output, before `bn2` (Zagoruyko & Komodakis put it after
`bn2`'s relu; both are "between the convs"). It adds no parameters. It is active only when the
model is called with `train=True` AND a 'dropout' PRNG stream (`rngs={"dropout": key}`, as
`engine.train_step` passes the step's key); a train-mode call without one (BatchNorm
recalibration, SNIP scores) runs the deterministic network, and `train=False` always does.

Left as in the paper, where the reference's PyTorch WRN differs: its convs carry biases, its
stride sits on the second conv, its shortcut takes the block's input before BN-relu, and its
final BatchNorm uses PyTorch momentum 0.9.
"""


import flax.linen as nn
import jax.numpy as jnp

from sms_jax.models.layers import Dtype, PAD1, conv_and_norm


def check_dropout(rate) -> None:
  """Raises ValueError unless `rate` is a dropout rate: a number in [0, 1)."""
  if isinstance(rate, bool) or not isinstance(rate, (int, float)) or not 0.0 <= rate < 1.0:
    raise ValueError(f"dropout rate {rate!r} is not allowed; allowed: a number in [0, 1)")


class WideBasicBlock(nn.Module):
  """Pre-activation block: conv3x3(relu(BN(dropout(conv3x3(relu(BN(x))))))) + shortcut.

  Input `x: [n, h, w, c]`; output `[n, h / strides, w / strides, features]`. Layers: `bn1`,
  `conv1`, `dropout` (only if `dropout > 0`), `bn2`, `conv2` and, when the shape changes,
  `shortcut_conv` (1x1, on relu(bn1(x))).

  Attributes:
    features: output channels.
    strides: stride of the first conv (and of the shortcut).
    dropout: rate of the dropout on conv1's output (see the module docstring for when it acts).
    dtype: computation dtype.
  """
  features: int
  strides: int = 1
  dropout: float = 0.0
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x, train: bool = False):
    conv, norm = conv_and_norm(self.dtype, train)
    s = self.strides
    pre = nn.relu(norm(name="bn1")(x))
    y = conv(self.features, (3, 3), strides=(s, s), padding=PAD1, name="conv1")(pre)
    if self.dropout > 0:
      active = train and self.has_rng("dropout")
      y = nn.Dropout(self.dropout, deterministic=not active, name="dropout")(y)
    y = nn.relu(norm(name="bn2")(y))
    y = conv(self.features, (3, 3), padding=PAD1, name="conv2")(y)
    if s != 1 or x.shape[-1] != self.features:
      x = conv(self.features, (1, 1), strides=(s, s), name="shortcut_conv")(pre)
    return x + y


class WideResNet(nn.Module):
  """WRN-depth-width for small images.

  Input `x: [n, h, w, c]` float32 (CIFAR: `[n, 32, 32, 3]`); output `[n, num_classes]` float32
  logits. Layers, in forward order: `stem_conv`, `stage1_block0`, ..., `stage3_block{n-1}`,
  `final_bn`, `classifier`.

  Attributes:
    num_classes: number of output logits.
    depth: total depth, 6n + 4 (e.g. 16, 22, 28, 40).
    width: widening factor k.
    dropout: dropout rate inside every block, in [0, 1); 0 builds no dropout layers.
    dtype: computation dtype; parameters stay float32.
  """
  num_classes: int
  depth: int = 28
  width: int = 10
  dropout: float = 0.0
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x, train: bool = False):
    if self.depth < 10 or (self.depth - 4) % 6 or self.width < 1:
      raise ValueError(f"WRN needs depth 6n + 4 (n >= 1) and width >= 1, got {self.depth}, "
                       f"{self.width}")
    check_dropout(self.dropout)
    n = (self.depth - 4) // 6
    conv, norm = conv_and_norm(self.dtype, train)
    x = jnp.asarray(x, self.dtype)
    x = conv(16, (3, 3), padding=PAD1, name="stem_conv")(x)
    for i, channels in enumerate((16, 32, 64)):
      for j in range(n):
        strides = 2 if i > 0 and j == 0 else 1
        x = WideBasicBlock(channels * self.width, strides, self.dropout, dtype=self.dtype,
                           name=f"stage{i + 1}_block{j}")(x, train)
    x = nn.relu(norm(name="final_bn")(x))
    x = jnp.mean(x, axis=(1, 2))
    x = nn.Dense(self.num_classes, dtype=self.dtype, param_dtype=jnp.float32, name="classifier")(x)
    return jnp.asarray(x, jnp.float32)
