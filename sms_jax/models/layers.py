"""Layer factories shared by every model family: He-normal (fan-out) convolutions as in
torchvision's ResNets, and BatchNorm with PyTorch's momentum and epsilon. Dense layers keep
Flax's default (LeCun normal) initialisation."""

import functools
from typing import Any

import flax.linen as nn
import jax.numpy as jnp

Dtype = Any

# He (Kaiming) normal, fan_out mode: PyTorch's `kaiming_normal_(mode="fan_out")`.
conv_kernel_init = nn.initializers.variance_scaling(2.0, "fan_out", "normal")
# One pixel of zero padding on each side (PyTorch's padding=1): unlike 'SAME', a stride-2
# 3x3 conv then samples the same pixels as its stride-2 shortcut.
PAD1 = ((1, 1), (1, 1))


def conv_and_norm(dtype: Dtype, train: bool):
  """Conv (no bias, He fan_out init) and BatchNorm (PyTorch's momentum and epsilon) factories.

  Computation runs in `dtype`; parameters stay float32. BatchNorm uses batch statistics when
  `train`, else its running averages.
  """
  conv = functools.partial(
      nn.Conv, use_bias=False, kernel_init=conv_kernel_init, dtype=dtype, param_dtype=jnp.float32)
  norm = functools.partial(
      nn.BatchNorm, use_running_average=not train, momentum=0.9, epsilon=1e-5, dtype=dtype,
      param_dtype=jnp.float32)
  return conv, norm
