#!/usr/bin/env python
"""Throughput and compile time of the project's train step on the current JAX backend.

Times `sms_jax.training.engine.train_step` itself (the one step every strategy uses), jitted
the way the epoch runner jits it (model and optimizer bound with `functools.partial`), on
synthetic data of the real shapes:

  * resnet20: CIFAR-shaped input `[b, 32, 32, 3]`, 10 classes;
  * cnn1d (the default config's model): MNIST-1D-shaped input `[b, 40, 1]`, 10 classes.

Reported per run: compile time (`lower` + `compile`, seconds), images/s of the per-step call
(median over `--repeats` timed calls after warm-up, each ended by `block_until_ready`) and,
with `--epoch_steps N`, the same for an N-step epoch of the library's own
`engine.EpochRunner` in its two forms (`train.epoch_loop`): 'scan' (one compiled `lax.scan`)
and 'steps' (one compiled step dispatched per batch).
`--check_steps N` also records the loss of N consecutive steps from a fixed initialisation on
fixed data (the sweep compares these trajectories between settings).

XLA_FLAGS is read when JAX starts its backend, so each flag setting needs its own process; see
`bench/sweep_cpu.py`, which runs this script once per setting.

Run from the repository root:

  python bench/bench_step.py --model resnet20 --batch_size 128 --repeats 10
  python bench/bench_step.py --model cnn1d --json /tmp/cnn1d.json
  XLA_FLAGS=--xla_cpu_use_onednn=true python bench/bench_step.py --model resnet20
"""

import argparse
import functools
import json
import os
import platform
import statistics
import sys
import time

# Run as `python bench/bench_step.py` from the repository root: make `configs` importable.
_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if _ROOT not in sys.path:
  sys.path.insert(0, _ROOT)

from machine import cpu_model  # pylint: disable=wrong-import-position  # bench/machine.py

# Per-example input shape (no batch dimension) for the models the project trains on.
INPUT_SHAPES = {
    "cnn1d": (40, 1),  # MNIST-1D signals.
    "mlp": (40, 1),
    "cnn2d": (28, 28, 1),  # MNIST.
}
CIFAR_SHAPE = (32, 32, 3)


def parse_args(argv=None) -> argparse.Namespace:
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--model", default="resnet20", help="model name for create_model")
  p.add_argument("--batch_size", type=int, default=128)
  p.add_argument("--num_classes", type=int, default=10)
  p.add_argument("--input_shape", default="",
                 help="per-example shape, e.g. 32,32,3 (default: by model name)")
  p.add_argument("--repeats", type=int, default=10, help="timed per-step calls")
  p.add_argument("--warmup", type=int, default=2, help="untimed calls after compiling")
  p.add_argument("--epoch_steps", type=int, default=-1,
                 help="steps in the timed epoch; 0 = skip the epoch forms, -1 = 20 for "
                      "cnn1d/mlp and 0 otherwise (on XLA:CPU the scan form of a conv net runs "
                      "its backward convolutions unoptimised: ResNet-20 takes ~30 s a step)")
  p.add_argument("--epoch_repeats", type=int, default=3, help="timed epoch calls")
  p.add_argument("--epoch_warmup", type=int, default=1, help="untimed epoch calls first")
  p.add_argument("--epoch_form", default="both", choices=("scan", "steps", "both"),
                 help="scan / steps: the engine.EpochRunner form (train.epoch_loop); the "
                      "scan's body jitted and called from Python once per batch")
  p.add_argument("--check_steps", type=int, default=0,
                 help="record the loss of this many steps from a fixed init on fixed data")
  p.add_argument("--dtype", default="float32", choices=("float32", "bfloat16"),
                 help="model computation dtype (create_model(dtype=...))")
  p.add_argument("--matmul_precision", default="",
                 help="jax_default_matmul_precision (e.g. highest, float32, bfloat16)")
  p.add_argument("--donate", type=int, default=1, help="donate the train state (1) or not (0)")
  p.add_argument("--variant", default="none", choices=("none", "nchw", "bn_two_pass"),
                 help="benchmark-only model formulation (resnet-cifar only): 'nchw' runs the "
                      "convs in NCHW layout, 'bn_two_pass' uses BatchNorm(use_fast_variance="
                      "False); both keep the project model's parameter tree")
  p.add_argument("--breakdown", action="store_true",
                 help="also time the forward pass and forward+backward alone")
  p.add_argument("--seed", type=int, default=0)
  p.add_argument("--json", default="", help="write the results to this JSON file")
  p.add_argument("--quiet", action="store_true")
  return p.parse_args(argv)


def machine_info() -> dict:
  import flax
  import jax
  import jaxlib
  import optax
  dev = jax.devices()[0]
  try:
    affinity = len(os.sched_getaffinity(0))
  except AttributeError:
    affinity = None
  return {
      "platform": dev.platform,
      "device_kind": dev.device_kind,
      "num_devices": jax.device_count(),
      "cpu_model": cpu_model(),
      "cpu_count": os.cpu_count(),
      "cpu_affinity": affinity,
      "python": platform.python_version(),
      "jax": jax.__version__,
      "jaxlib": jaxlib.__version__,
      "flax": flax.__version__,
      "optax": optax.__version__,
      "XLA_FLAGS": os.environ.get("XLA_FLAGS", ""),
      "hostname": platform.node(),
  }


def _nchw_resnet(num_classes, stage_sizes, widths, dtype):
  """ResNet-{6n+2} (option A) computed in NCHW with HWIO kernels: same parameter tree and
  initialisation as `sms_jax.models.resnet_cifar.CifarResNet`, input still NHWC."""
  import flax.linen as nn
  import jax
  import jax.numpy as jnp
  kernel_init = nn.initializers.variance_scaling(2.0, "fan_out", "normal")  # As the project.

  class Conv(nn.Module):
    features: int
    strides: int = 1

    @nn.compact
    def __call__(self, x):  # x: NCHW
      kernel = self.param("kernel", kernel_init,
                          (3, 3, x.shape[1], self.features), jnp.float32)
      x, kernel = jnp.asarray(x, dtype), jnp.asarray(kernel, dtype)
      return jax.lax.conv_general_dilated(
          x, kernel, (self.strides, self.strides), ((1, 1), (1, 1)),
          dimension_numbers=("NCHW", "HWIO", "NCHW"))

  def norm(train, name):
    return nn.BatchNorm(use_running_average=not train, axis=1, momentum=0.9, epsilon=1e-5,
                        dtype=dtype, param_dtype=jnp.float32, name=name)

  class Block(nn.Module):
    features: int
    strides: int

    @nn.compact
    def __call__(self, x, train):
      y = Conv(self.features, self.strides, name="conv1")(x)
      y = nn.relu(norm(train, "bn1")(y))
      y = Conv(self.features, name="conv2")(y)
      y = norm(train, "bn2")(y)
      if self.strides != 1 or x.shape[1] != self.features:
        x = x[:, :, ::self.strides, ::self.strides]
        extra = self.features - x.shape[1]
        x = jnp.pad(x, ((0, 0), (extra // 2, extra - extra // 2), (0, 0), (0, 0)))
      return nn.relu(x + y)

  class ResNetNCHW(nn.Module):

    @nn.compact
    def __call__(self, x, train: bool = False):
      x = jnp.transpose(jnp.asarray(x, dtype), (0, 3, 1, 2))
      x = Conv(widths[0], name="stem_conv")(x)
      x = nn.relu(norm(train, "stem_bn")(x))
      for i, (num_blocks, width) in enumerate(zip(stage_sizes, widths)):
        for j in range(num_blocks):
          x = Block(width, 2 if i > 0 and j == 0 else 1, name=f"stage{i + 1}_block{j}")(x, train)
      x = jnp.mean(x, axis=(2, 3))
      x = nn.Dense(num_classes, dtype=dtype, param_dtype=jnp.float32, name="classifier")(x)
      return jnp.asarray(x, jnp.float32)

  return ResNetNCHW()


def build_model(name: str, num_classes: int, dtype, variant: str):
  import flax.linen as nn
  from sms_jax.models import create_model, resnet_cifar
  model = create_model(name, num_classes, dtype=dtype)
  if variant == "none":
    return model
  if not isinstance(model, resnet_cifar.CifarResNet) or model.shortcut != "zero_pad":
    raise SystemExit(f"--variant {variant} is only implemented for resnet{{6n+2}}")
  if variant == "nchw":
    return _nchw_resnet(num_classes, model.stage_sizes, model.widths, dtype)
  if variant == "bn_two_pass":
    # Same module tree; BatchNorm computes E[(x - E[x])^2] instead of E[x^2] - E[x]^2. The
    # models build BatchNorm through `nn.BatchNorm` in their layer-factory module: swap it there.
    import importlib
    import pkgutil
    import sms_jax.models as models_pkg

    class TwoPassBatchNorm(nn.BatchNorm):
      use_fast_variance: bool = False

    patched = []
    for info in pkgutil.iter_modules(models_pkg.__path__):
      mod = importlib.import_module(f"sms_jax.models.{info.name}")
      if getattr(mod, "nn", None) is nn and any(hasattr(mod, f) for f in ("conv_and_norm",
                                                                          "_layers")):
        mod.nn = _PatchedNN(nn, BatchNorm=TwoPassBatchNorm)
        patched.append(info.name)
    if not patched:
      raise SystemExit("bn_two_pass: found no layer-factory module to patch")
    return model
  raise SystemExit(f"unknown variant {variant}")


class _PatchedNN:
  """`flax.linen` with some attributes replaced (bench-only formulation experiments)."""

  def __init__(self, base, **overrides):
    self._base, self._overrides = base, overrides

  def __getattr__(self, name):
    return self._overrides.get(name, getattr(self._base, name))


def _median_time(fn, repeats):
  times = []
  for _ in range(repeats):
    t0 = time.perf_counter()
    fn()
    times.append(time.perf_counter() - t0)
  return statistics.median(times), times


def main(argv=None) -> dict:
  args = parse_args(argv)
  import jax
  import jax.numpy as jnp
  import numpy as np

  from configs import default
  from sms_jax.data import Dataset, Split
  from sms_jax.training import engine, optimizers, schedules, state as state_lib

  if args.matmul_precision:
    jax.config.update("jax_default_matmul_precision", args.matmul_precision)
  log = (lambda *a: None) if args.quiet else (lambda *a: print(*a, flush=True))

  info = machine_info()
  log("machine: " + ", ".join(f"{k}={v}" for k, v in info.items()))

  if args.input_shape:
    input_shape = tuple(int(s) for s in args.input_shape.split(","))
  else:
    input_shape = INPUT_SHAPES.get(args.model, CIFAR_SHAPE)
  b = args.batch_size
  dtype = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}[args.dtype]
  model = build_model(args.model, args.num_classes, dtype, args.variant)
  epoch_steps = args.epoch_steps
  if epoch_steps < 0:
    epoch_steps = 20 if args.model in ("cnn1d", "mlp") else 0

  config = default.get_config()
  config.train.batch_size = b
  steps_per_epoch = 390  # Only shapes the LR schedule; any value > the steps run here.
  tx = optimizers.make_optimizer(config.train,
                                 schedules.make_schedule(config.train, steps_per_epoch))
  step_kwargs = dict(model=model, tx=tx, label_smoothing=config.train.label_smoothing)

  def fresh_state():
    return state_lib.create_train_state(model, tx, jax.random.key(args.seed), input_shape)

  # Fixed synthetic data: a pool of batches (standard normal inputs, uniform labels).
  rng = np.random.default_rng(args.seed)
  pool = max(args.check_steps, 4)
  xs = rng.standard_normal((pool, b, *input_shape), dtype=np.float32)
  ys = rng.integers(0, args.num_classes, (pool, b), dtype=np.int32)
  xs, ys = jax.device_put(xs), jax.device_put(ys)
  batches = [(xs[i], ys[i]) for i in range(pool)]

  donate = (0,) if args.donate else ()
  step_fn = jax.jit(functools.partial(engine.train_step, **step_kwargs), donate_argnums=donate)
  step_key = jax.random.key(2)
  state = fresh_state()
  jax.block_until_ready(state)
  t0 = time.perf_counter()
  lowered = step_fn.lower(state, *batches[0], step_key)
  t1 = time.perf_counter()
  compiled = lowered.compile()
  t2 = time.perf_counter()
  result = {
      "model": args.model, "batch_size": b, "input_shape": list(input_shape),
      "dtype": args.dtype, "matmul_precision": args.matmul_precision or "default",
      "donate": bool(args.donate), "variant": args.variant, "machine": info,
      "step": {"lower_s": t1 - t0, "compile_s": t2 - t1, "lower_compile_s": t2 - t0},
  }
  log(f"step: lower {t1 - t0:.2f}s + compile {t2 - t1:.2f}s = {t2 - t0:.2f}s")

  # Loss trajectory from the fixed initialisation (also serves as warm-up).
  if args.check_steps:
    losses = []
    for i in range(args.check_steps):
      state, m = compiled(state, *batches[i], step_key)
      losses.append(float(m["loss"]))
    result["check_losses"] = losses
    log(f"check: {args.check_steps} steps, loss {losses[0]:.6f} -> {losses[-1]:.6f}")
  for i in range(args.warmup):
    state, m = compiled(state, *batches[i % pool], step_key)
    jax.block_until_ready((state, m))

  counter = [0]

  def one_step():
    nonlocal state
    state, m = compiled(state, *batches[counter[0] % pool], step_key)
    counter[0] += 1
    jax.block_until_ready((state, m))

  med, times = _median_time(one_step, args.repeats)
  result["step"].update(images_per_s=b / med, median_s=med, times_s=times)
  log(f"step: {b / med:.1f} images/s (median {med * 1e3:.1f} ms over {args.repeats}; "
      f"min {min(times) * 1e3:.1f}, max {max(times) * 1e3:.1f})")
  del state

  if args.breakdown:
    variables = fresh_state()
    x0, y0 = batches[0]

    def fwd(params, batch_stats, x):
      return model.apply({"params": params, "batch_stats": batch_stats}, x, train=True,
                         mutable=["batch_stats"])

    def fwd_bwd(params, batch_stats, x, y):
      from sms_jax import metrics
      def loss_fn(p):
        logits, _ = fwd(p, batch_stats, x)
        return metrics.cross_entropy(logits, y, 0.0)
      return jax.value_and_grad(loss_fn)(params)

    bd = {}
    for name, fn, fargs in (
        ("forward", jax.jit(fwd), (variables.params, variables.batch_stats, x0)),
        ("forward_backward", jax.jit(fwd_bwd),
         (variables.params, variables.batch_stats, x0, y0))):
      c = fn.lower(*fargs).compile()
      for _ in range(args.warmup):
        jax.block_until_ready(c(*fargs))
      med_b, _ = _median_time(lambda: jax.block_until_ready(c(*fargs)), args.repeats)
      bd[name] = {"median_s": med_b, "images_per_s": b / med_b}
      log(f"{name}: {b / med_b:.1f} images/s (median {med_b * 1e3:.1f} ms)")
    result["breakdown"] = bd

  if epoch_steps:
    n = epoch_steps * b
    ex = jnp.reshape(xs[: -(-n // b)], (-1, *input_shape))[:n]
    ey = jnp.reshape(ys[: -(-n // b)], (-1,))[:n]
    if ex.shape[0] < n:  # pool smaller than the epoch: tile it.
      reps = -(-n // ex.shape[0])
      ex = jnp.tile(ex, (reps,) + (1,) * len(input_shape))[:n]
      ey = jnp.tile(ey, reps)[:n]
    key = jax.random.key(1)
    dataset = Dataset("synthetic", *[Split(np.asarray(ex), np.asarray(ey))] * 3, args.num_classes,
                      "none")
    forms = ("scan", "steps") if args.epoch_form == "both" else (args.epoch_form,)
    for form in forms:
      state = fresh_state()
      t0 = time.perf_counter()  # The library's epoch, compiled as training compiles it.
      runner = engine.EpochRunner(state, dataset, batch_size=b, epoch_loop=form, **step_kwargs)
      t1 = time.perf_counter()
      losses, first_call_s = None, None
      for _ in range(args.epoch_warmup):
        t2 = time.perf_counter()
        state, m = runner(state, key)
        jax.block_until_ready((state, m))
        first_call_s = first_call_s or time.perf_counter() - t2
        losses = [float(v) for v in m["loss"]]

      def one_epoch():
        nonlocal state, losses
        state, m = runner(state, key)
        jax.block_until_ready((state, m))
        losses = losses or [float(v) for v in m["loss"]]

      med_e, times_e = _median_time(one_epoch, args.epoch_repeats)
      name = "epoch" if form == "scan" else "epoch_loop"
      result[name] = {"steps": epoch_steps, "first_call_s": first_call_s,
                      "lower_compile_s": t1 - t0, "images_per_s": n / med_e, "median_s": med_e,
                      "times_s": times_e, "first_epoch_losses": losses}
      first_msg = "" if first_call_s is None else f", first call {first_call_s:.2f}s"
      log(f"epoch (EpochRunner, epoch_loop={form}, {epoch_steps} steps, augment=none): "
          f"lower+compile {t1 - t0:.2f}s{first_msg}, {n / med_e:.1f} images/s "
          f"(median over {args.epoch_repeats})")
    if "epoch" in result and "epoch_loop" in result:
      a, c = result["epoch"]["first_epoch_losses"], result["epoch_loop"]["first_epoch_losses"]
      d = max(abs(u - v) / max(abs(v), 1e-12) for u, v in zip(a, c))
      result["epoch_scan_vs_loop_loss_max_rel_diff"] = d
      log(f"epoch: scan vs steps losses, max rel diff {d:.1e}")

  if args.json:
    with open(args.json, "w") as f:
      json.dump(result, f, indent=1)
  return result


if __name__ == "__main__":
  main()
