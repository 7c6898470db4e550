"""Tests for sms_jax.models: parameter counts, shapes, BatchNorm modes, names, the registry."""

import functools

import jax

jax.config.update("jax_disable_most_optimizations", True)

import chex  # pylint: disable=g-import-not-at-top
import flax.linen as nn  # pylint: disable=g-import-not-at-top
import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
import numpy as np  # pylint: disable=g-import-not-at-top
import pytest  # pylint: disable=g-import-not-at-top
from flax import traverse_util  # pylint: disable=g-import-not-at-top

from sms_jax.models import (  # pylint: disable=g-import-not-at-top
    MODEL_NAMES_HELP, create_model, is_known_model, param_paths)

CIFAR = (32, 32, 3)


def abstract_init(model, input_shape, batch=2):
  """Variables' shapes and the logits' shape, traced without compute."""
  x = jax.ShapeDtypeStruct((batch, *input_shape), jnp.float32)

  def init_apply(rng, x):
    variables = model.init(rng, x, train=False)
    return variables, model.apply(variables, x, train=False)

  return jax.eval_shape(init_apply, jax.random.key(0), x)


def num_params(params):
  return sum(int(np.prod(p.shape)) for p in jax.tree.leaves(params))


# name, classes, input shape, exact count (PyTorch reference implementation), published figure.
COUNTS = [
    ("resnet20", 10, CIFAR, 269_722, 0.27e6),  # He et al. 2016, Table 6.
    ("resnet56", 10, CIFAR, 853_018, 0.85e6),
    ("resnet18", 10, CIFAR, 11_173_962, 11.17e6),  # kuangliu/pytorch-cifar.
    ("wrn28_10", 10, CIFAR, 36_479_194, 36.5e6),  # Zagoruyko & Komodakis 2016, Table 1.
    ("wrn28_10", 100, CIFAR, 36_536_884, 36.5e6),
    ("vgg16", 10, CIFAR, 14_724_042, 14.7e6),  # torchvision vgg16_bn features, no conv bias.
    ("resnet50", 1000, (224, 224, 3), 25_557_032, 25.56e6),  # torchvision resnet50.
]


@pytest.mark.parametrize("name,num_classes,input_shape,exact,published", COUNTS)
def test_param_counts_and_output_shape(name, num_classes, input_shape, exact, published):
  variables, logits = abstract_init(create_model(name, num_classes), input_shape)
  count = num_params(variables["params"])
  assert abs(count - published) / published < 0.02, count
  assert count == exact
  assert logits.shape == (2, num_classes) and logits.dtype == jnp.float32


def wrn_param_count(depth, width, num_classes):
  """WRN-depth-width's parameters, counted by hand from Zagoruyko & Komodakis's architecture:
  a 3x3 stem conv 3 -> 16; per block (c_in -> c_out) BN(c_in) + 3x3 conv c_in -> c_out +
  BN(c_out) + 3x3 conv c_out -> c_out, plus a 1x1 shortcut conv where c_in != c_out; a final
  BN and a linear classifier with bias. Convs carry no bias; a BN has a scale and a shift."""
  n = (depth - 4) // 6
  count, c_in = 3 * 3 * 3 * 16, 16
  for c_out in (16 * width, 32 * width, 64 * width):
    for _ in range(n):
      count += 2 * c_in + 9 * c_in * c_out + 2 * c_out + 9 * c_out * c_out
      count += c_in * c_out if c_in != c_out else 0
      c_in = c_out
  return count + 2 * c_in + c_in * num_classes + num_classes


def test_wrn_hand_count_matches_the_published_pytorch_counts():
  """The hand count reproduces COUNTS' WRN-28-10 figures (from the PyTorch implementation),
  and WRN-22-2 at 100 classes worked out on paper: stem 432; stage 1 (16 -> 32) 14,432 +
  2 x 18,560; stage 2 (32 -> 64) 57,536 + 2 x 73,984; stage 3 (64 -> 128) 229,760 +
  2 x 295,424; final BN 256; classifier 12,900."""
  assert wrn_param_count(28, 10, 10) == 36_479_194
  assert wrn_param_count(28, 10, 100) == 36_536_884
  assert wrn_param_count(22, 2, 100) == 1_091_252


# The SMS reference's WideResNets: depth 22 (its class WideResNet20) of width 2 and 10, and
# WRN-28-10, all with dropout 0.3; dropout adds no parameters.
@pytest.mark.parametrize("name,depth,width", [
    ("wrn22_2_d0.3", 22, 2), ("wrn22_10_d0.3", 22, 10), ("wrn28_10_d0.3", 28, 10),
    ("wrn22_2", 22, 2)])
def test_reference_wide_resnet_param_counts(name, depth, width):
  variables, logits = abstract_init(create_model(name, 100), CIFAR)
  assert num_params(variables["params"]) == wrn_param_count(depth, width, 100)
  assert logits.shape == (2, 100)


def test_wrn_dropout_acts_only_in_training_with_a_dropout_key():
  """Dropout (rate 0.3) on conv1's output, before bn2, only with train=True and a 'dropout'
  key (the stream engine.train_step feeds the step's key: tests/test_engine.py); without one
  (BatchNorm recalibration) and in eval the network is the dropout-free one, with the same
  parameters."""
  drop, plain = create_model("wrn10_1_d0.3", 10), create_model("wrn10_1", 10)
  x = jax.random.normal(jax.random.key(1), (8, 8, 8, 3))
  capture = lambda mdl, _: isinstance(mdl, (nn.Conv, nn.Dropout))

  @jax.jit
  def run(x):
    variables = drop.init(jax.random.key(0), x, train=False)
    keyed = lambda k: {"dropout": jax.random.key(k)}
    train = lambda model, **kw: model.apply(variables, x, train=True,
                                            **{"mutable": ["batch_stats"], **kw})
    return dict(
        variables=variables,
        key1=train(drop, rngs=keyed(1), mutable=["batch_stats", "intermediates"],
                   capture_intermediates=capture),
        key2=train(drop, rngs=keyed(2))[0], no_key=train(drop)[0], plain=train(plain)[0],
        eval_key=drop.apply(variables, x, train=False, rngs=keyed(1)),
        plain_eval=plain.apply(variables, x, train=False))

  out = run(x)
  chex.assert_trees_all_equal_shapes(  # Dropout adds no parameters.
      out["variables"], jax.eval_shape(functools.partial(plain.init, train=False),
                                       jax.random.key(0), x))
  logits, state = out["key1"]
  assert np.abs(logits - out["key2"]).max() > 1e-3  # The key draws the dropout.
  assert np.abs(logits - out["no_key"]).max() > 1e-3
  chex.assert_trees_all_equal(out["no_key"], out["plain"])  # No key: no dropout.
  chex.assert_trees_all_equal(out["eval_key"], out["plain_eval"])  # Eval: no dropout.
  # Every block: the dropout output is conv1's output, zeroed at about 30% of the entries and
  # scaled by 1 / 0.7 elsewhere; bn2's running mean moved towards the dropout output's mean.
  for block in ("stage1_block0", "stage2_block0", "stage3_block0"):
    conv1 = np.asarray(state["intermediates"][block]["conv1"]["__call__"][0])
    dropped = np.asarray(state["intermediates"][block]["dropout"]["__call__"][0])
    kept = dropped != 0
    assert 0.25 < 1 - kept.mean() < 0.35, 1 - kept.mean()
    np.testing.assert_allclose(dropped[kept], conv1[kept] / 0.7, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(state["batch_stats"][block]["bn2"]["mean"],
                               0.1 * dropped.mean(axis=(0, 1, 2)), rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("rate", [-0.1, 1.0, 1.5, True, "0.3"])
def test_bad_dropout_rates_raise(rate):
  from sms_jax.models.wide_resnet import WideResNet  # pylint: disable=g-import-not-at-top
  with pytest.raises(ValueError, match=r"dropout rate .* allowed: a number in \[0, 1\)"):
    abstract_init(WideResNet(10, 10, 1, dropout=rate), (8, 8, 3))


@pytest.mark.parametrize("name,input_shape", [
    ("mlp", (28, 28, 1)), ("cnn1d", (40, 1)), ("cnn2d", (8, 8, 1)), ("cnn2d", (28, 28, 1)),
    ("resnet32", CIFAR), ("resnet110", CIFAR), ("wrn16_8", CIFAR), ("vgg11", CIFAR),
    ("resnet18_imagenet", (64, 64, 3)),
])
def test_output_shapes(name, input_shape):
  _, logits = abstract_init(create_model(name, 7), input_shape)
  assert logits.shape == (2, 7) and logits.dtype == jnp.float32


@pytest.mark.parametrize("name", ["resnet20", "resnet18", "wrn16_2", "vgg16", "resnet50"])
def test_conv_and_dense_layout(name):
  """Every weight is a 'kernel'; convs carry no bias (BN follows); BN has scale and bias."""
  variables, _ = abstract_init(create_model(name, 10), CIFAR)
  flat = traverse_util.flatten_dict(variables["params"])
  kernels = {k[:-1]: v for k, v in flat.items() if k[-1] == "kernel"}
  assert set(k[-1] for k in flat) <= {"kernel", "bias", "scale"}
  for module, kernel in kernels.items():
    if kernel.ndim == 4:
      assert module + ("bias",) not in flat, module
    else:
      assert module[-1] == "classifier" and module + ("bias",) in flat
  assert set(variables["batch_stats"]) <= set(variables["params"])


def test_forward_order_and_names():
  paths = param_paths(create_model("resnet20", 10), CIFAR)
  kernels = [p for p in paths if p.endswith("/kernel")]
  assert kernels[0] == "stem_conv/kernel"
  assert kernels[1:3] == ["stage1_block0/conv1/kernel", "stage1_block0/conv2/kernel"]
  assert kernels[-1] == "classifier/kernel"
  assert len(kernels) == 20  # 19 convs + the classifier: the "20" in ResNet-20.
  wrn = [p for p in param_paths(create_model("wrn16_2", 10), CIFAR) if p.endswith("kernel")]
  assert wrn[:5] == ["stem_conv/kernel", "stage1_block0/conv1/kernel",
                     "stage1_block0/conv2/kernel", "stage1_block0/shortcut_conv/kernel",
                     "stage1_block1/conv1/kernel"]


@pytest.mark.parametrize("name,input_shape", [
    ("mlp", (28, 28, 1)), ("cnn1d", (40, 1)), ("cnn2d", (8, 8, 1)), ("resnet20", CIFAR)])
def test_forward_pass_and_batch_norm_modes(name, input_shape):
  model = create_model(name, 10)
  x = jax.random.normal(jax.random.key(1), (2, *input_shape))

  @jax.jit  # One compile for all three calls: much faster than eager dispatch.
  def run(x):
    variables = model.init(jax.random.key(0), x, train=False)
    logits = model.apply(variables, x, train=False)
    train = model.apply(variables, x, train=True, mutable=["batch_stats"])
    evaluate = model.apply(variables, x, train=False, mutable=["batch_stats"])
    return variables, logits, train, evaluate

  variables, logits, (logits_train, updates), (_, same) = run(x)
  for out in (logits, logits_train):
    chex.assert_shape(out, (2, 10))
    chex.assert_type(out, jnp.float32)
    chex.assert_tree_all_finite(out)
  if name == "mlp":
    assert set(variables) == {"params"} and not updates.get("batch_stats")
    np.testing.assert_allclose(logits_train, logits, rtol=1e-6)
    return
  old, new = variables["batch_stats"], updates["batch_stats"]
  chex.assert_trees_all_equal_structs(old, new)
  assert all(not np.allclose(a, b) for a, b in zip(jax.tree.leaves(old), jax.tree.leaves(new)))
  # Eval mode uses (and does not change) the running averages.
  chex.assert_trees_all_equal(same["batch_stats"], old)


def test_batch_norm_running_statistics():
  """Momentum 0.9 (PyTorch's 0.1) and eps 1e-5; the running variance is updated with the
  biased batch variance (Flax), where PyTorch uses the unbiased one."""
  model = create_model("cnn1d", 10)
  x = jax.random.normal(jax.random.key(1), (4, 40, 1))

  @jax.jit
  def run(x):
    variables = model.init(jax.random.key(0), x, train=False)
    _, state = model.apply(
        variables, x, train=True, mutable=["batch_stats", "intermediates"],
        capture_intermediates=lambda mdl, _: isinstance(mdl, nn.Conv))
    return variables, state

  variables, state = run(x)
  conv0 = state["intermediates"]["conv0"]["__call__"][0]
  stats = state["batch_stats"]["bn0"]
  np.testing.assert_allclose(stats["mean"], 0.1 * conv0.mean(axis=(0, 1)), rtol=1e-4, atol=1e-6)
  np.testing.assert_allclose(stats["var"], 0.9 + 0.1 * conv0.var(axis=(0, 1)), rtol=1e-4)
  bn = variables["params"]["bn0"]
  chex.assert_trees_all_equal((bn["scale"], bn["bias"]), (jnp.ones(32), jnp.zeros(32)))


def test_conv_init_is_he_fan_out():
  model = create_model("cnn2d", 10)  # Every model builds its convs the same way.
  init = jax.jit(functools.partial(model.init, train=False))
  variables = init(jax.random.key(0), jnp.zeros((1, 8, 8, 1)))
  kernel = variables["params"]["conv1"]["kernel"]
  chex.assert_shape(kernel, (3, 3, 32, 64))
  np.testing.assert_allclose(np.std(kernel), np.sqrt(2.0 / (3 * 3 * 64)), rtol=0.05)


def test_bfloat16_compute_keeps_float32_params_and_logits():
  variables, logits = abstract_init(create_model("resnet20", 10, dtype=jnp.bfloat16), CIFAR)
  assert all(p.dtype == jnp.float32 for p in jax.tree.leaves(variables))
  assert logits.dtype == jnp.float32


@pytest.mark.parametrize("name", [
    "mlp", "cnn1d", "cnn2d", "resnet20", "resnet32", "resnet44", "resnet56", "resnet110",
    "resnet18", "wrn28_10", "wrn16_8", "wrn40_4", "vgg16", "resnet50", "resnet101",
    "resnet34_imagenet", "wrn22_2", "wrn22_10", "wrn22_2_d0.3", "wrn22_10_d0.3", "wrn28_10_d0.3",
    "wrn16_8_d0.05"])
def test_known_names(name):
  assert is_known_model(name)
  assert isinstance(create_model(name, 10), nn.Module)


@pytest.mark.parametrize("name", [
    "resnet21", "resnet2", "resnet", "resnet020", "wrn27_10", "wrn28_0", "wrn28", "vgg15",
    "mlp2", "transformer", "", "ResNet-20", "wrn22_2_d0", "wrn22_2_d0.30", "wrn22_2_d1",
    "wrn22_2_d.3", "wrn22_2_d0.3x", "wrn22_2_d", "wrn27_2_d0.3", "resnet56_d0.3"])
def test_unknown_names_raise(name):
  assert not is_known_model(name)
  with pytest.raises(ValueError, match="unknown model") as err:
    create_model(name, 10)
  message = str(err.value)
  assert repr(name) in message and MODEL_NAMES_HELP in message and "\n" not in message


@pytest.mark.parametrize("num_classes", [0, -1, 2.0, True])
def test_bad_num_classes_raise(num_classes):
  with pytest.raises(ValueError, match="num_classes"):
    create_model("resnet20", num_classes)


def test_names_help_is_one_short_line():
  assert "\n" not in MODEL_NAMES_HELP and len(MODEL_NAMES_HELP) < 300
  for name in ("mlp", "cnn1d", "cnn2d", "resnet18", "wrn", "vgg", "resnet50"):
    assert name in MODEL_NAMES_HELP


def test_bfloat16_compute_keeps_float32_state():
  """train.dtype=bfloat16: convolutions and matmuls run in bfloat16, while parameters,
  BatchNorm statistics, optimizer state and logits stay float32; the step tracks float32's."""
  import optax  # pylint: disable=g-import-not-at-top
  from sms_jax.models import compute_dtype  # pylint: disable=g-import-not-at-top
  from sms_jax.training import engine, state as state_lib  # pylint: disable=g-import-not-at-top
  assert compute_dtype("auto") == jnp.float32  # These tests run on CPU.
  assert compute_dtype("bfloat16") == jnp.bfloat16
  with pytest.raises(ValueError, match="allowed: auto, float32, bfloat16"):
    compute_dtype("float16")
  x = jax.random.normal(jax.random.key(1), (32, 8, 8, 1))
  y = jax.random.randint(jax.random.key(2), (32,), 0, 10)
  results = {}
  for dtype in (jnp.float32, jnp.bfloat16):
    model = create_model("cnn2d", 10, dtype=dtype)
    tx = optax.sgd(0.1, momentum=0.9)
    state = state_lib.create_train_state(model, tx, jax.random.key(0), (8, 8, 1))
    step = functools.partial(engine.train_step, model=model, tx=tx)
    key = jax.random.key(3)
    jaxpr = str(jax.make_jaxpr(step)(state, x, y, key))
    assert ("conv_general_dilated" in jaxpr and "bf16[32,8,8,32]" in jaxpr) == (
        dtype == jnp.bfloat16)
    new_state, metrics = jax.jit(step)(state, x, y, key)
    for leaf in jax.tree.leaves((new_state.params, new_state.batch_stats, new_state.opt_state)):
      assert leaf.dtype in (jnp.float32, jnp.int32), leaf.dtype
    assert model.apply({"params": new_state.params, "batch_stats": new_state.batch_stats}, x,
                       train=False).dtype == jnp.float32
    results[dtype] = metrics["loss"]
  assert abs(float(results[jnp.bfloat16]) - float(results[jnp.float32])) < 0.05
