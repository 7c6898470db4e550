"""Model names -> Flax modules.

Every model is called as `model.apply(variables, x, train=bool)` on float32 NHWC images (or NLC
signals) and returns `[n, num_classes]` float32 logits. `variables` holds 'params' and, for
models with BatchNorm, 'batch_stats': with `train=True` BatchNorm uses batch statistics and the
caller passes `mutable=["batch_stats"]`; with `train=False` it uses the running averages.
Models with dropout (`wrn..._d{rate}`) drop only when called with `train=True` and
`rngs={"dropout": key}`; every other call is deterministic.
"""

import re
from typing import Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
from flax import traverse_util

from sms_jax.models.cnn import CNN1D, CNN2D
from sms_jax.models.layers import Dtype
from sms_jax.models.mlp import MLP
from sms_jax.models.resnet import RESNET_IMAGENET, resnet_imagenet
from sms_jax.models.resnet_cifar import resnet18_cifar, resnet_cifar
from sms_jax.models.vgg import VGG_STAGES, vgg
from sms_jax.models.wide_resnet import WideResNet

Builder = Callable[[int, Dtype], nn.Module]

MODEL_NAMES_HELP = (
    "mlp, cnn1d, cnn2d, resnet{20,32,44,56,110} (CIFAR, 6n+2), resnet18 (CIFAR), "
    "wrn{depth}_{width}[_d{rate}] (depth = 6n+4, e.g. wrn28_10, wrn22_2_d0.3: dropout 0.3), "
    "vgg{11,13,16,19} (BN, CIFAR), "
    "resnet50 (ImageNet; also resnet101, resnet152, resnet{18,34,50,101,152}_imagenet)")

_FIXED: dict[str, Builder] = {
    "mlp": lambda c, dtype: MLP(c, dtype=dtype),
    "cnn1d": lambda c, dtype: CNN1D(c, dtype=dtype),
    "cnn2d": lambda c, dtype: CNN2D(c, dtype=dtype),
    "resnet18": resnet18_cifar,
    # ImageNet ResNets; the short names win over the CIFAR 6n+2 pattern (50 and 152 fit it).
    "resnet50": lambda c, dtype: resnet_imagenet(50, c, dtype),
    "resnet101": lambda c, dtype: resnet_imagenet(101, c, dtype),
    "resnet152": lambda c, dtype: resnet_imagenet(152, c, dtype),
}
for _depth in RESNET_IMAGENET:
  _FIXED[f"resnet{_depth}_imagenet"] = lambda c, dtype, d=_depth: resnet_imagenet(d, c, dtype)
for _depth in VGG_STAGES:
  _FIXED[f"vgg{_depth}"] = lambda c, dtype, d=_depth: vgg(d, c, dtype)

_RESNET_CIFAR = re.compile(r"resnet([1-9][0-9]*)")
# An optional dropout rate, written as a decimal in (0, 1) without trailing zeros (one
# spelling per model): wrn22_2_d0.3 is the SMS reference's CIFAR-100 WideResNet.
_WRN = re.compile(r"wrn([1-9][0-9]*)_([1-9][0-9]*)(?:_d(0\.[0-9]*[1-9]))?")


def _builder(name: str) -> Builder | None:
  """The constructor for `name`, or None if the name is not a model."""
  if name in _FIXED:
    return _FIXED[name]
  if m := _RESNET_CIFAR.fullmatch(name):
    depth = int(m.group(1))
    if depth >= 8 and (depth - 2) % 6 == 0:
      return lambda c, dtype: resnet_cifar(depth, c, dtype)
  if m := _WRN.fullmatch(name):
    depth, width, dropout = int(m.group(1)), int(m.group(2)), float(m.group(3) or 0.0)
    if depth >= 10 and (depth - 4) % 6 == 0:
      return lambda c, dtype: WideResNet(c, depth, width, dropout, dtype=dtype)
  return None


COMPUTE_DTYPES = ("auto", "float32", "bfloat16")


def compute_dtype(name: str) -> Dtype:
  """The dtype called `name` (one of COMPUTE_DTYPES); 'auto' is bfloat16 on accelerators
  (GPU, TPU), float32 on CPU, where bfloat16 convolutions are emulated and slower."""
  if name not in COMPUTE_DTYPES:
    raise ValueError(f"unknown compute dtype {name!r}; allowed: {', '.join(COMPUTE_DTYPES)}")
  if name == "auto":
    name = "float32" if jax.default_backend() == "cpu" else "bfloat16"
  return jnp.dtype(name)


def input_ndim(name: str) -> int | None:
  """Dimensions of one example the model expects: 2 for `[length, channels]` signals (cnn1d),
  3 for `[height, width, channels]` images, None for any (mlp flattens)."""
  return {"mlp": None, "cnn1d": 2}.get(name, 3)


def is_known_model(name: str) -> bool:
  """Whether `create_model` accepts `name`."""
  return isinstance(name, str) and _builder(name) is not None


def create_model(name: str, num_classes: int, *, dtype: Dtype = jnp.float32) -> nn.Module:
  """Builds the model called `name` with `num_classes` output logits.

  Args:
    name: one of MODEL_NAMES_HELP, e.g. "resnet20", "wrn28_10", "vgg16", "resnet50";
      "wrn22_2_d0.3" is a WRN-22-2 with dropout 0.3 in every block, active only in training
      calls given a 'dropout' PRNG stream (see `sms_jax.models.wide_resnet`).
    num_classes: number of output logits (>= 1).
    dtype: computation dtype (e.g. jnp.bfloat16); parameters and logits stay float32.

  Returns:
    An unbound `flax.linen.Module`; call `init(rng, x, train=False)` and
    `apply(variables, x, train=...)`.

  Raises:
    ValueError: for an unknown name or a non-positive `num_classes`.
  """
  builder = _builder(name) if isinstance(name, str) else None
  if builder is None:
    raise ValueError(f"unknown model {name!r}; allowed: {MODEL_NAMES_HELP}")
  if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
    raise ValueError(f"num_classes must be a positive int, got {num_classes!r}")
  return builder(num_classes, dtype)


def param_paths(model: nn.Module, input_shape: Sequence[int]) -> list[str]:
  """The model's parameter paths, e.g. "stage1_block0/conv1/kernel", in forward order.

  Param dicts lose their creation order under jit, `jax.eval_shape` and tree maps (dict keys
  are sorted), so per-layer reports should order layers with this list. Traces an abstract
  `init` on `input_shape` (one example, no batch dimension); no FLOPs are spent.
  """
  paths = []

  def init(rng, x):
    variables = model.init(rng, x, train=False)
    # Outside jax's tree ops, the dict is in creation order, i.e. forward order.
    paths.extend("/".join(k) for k in traverse_util.flatten_dict(variables["params"]))
    return variables

  jax.eval_shape(init, jax.random.key(0),
                 jax.ShapeDtypeStruct((1, *input_shape), jnp.float32))
  return paths
