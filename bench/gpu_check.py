#!/usr/bin/env python
"""GPU self-check: every accelerator path of the training engine, then its speed, in one command.

On synthetic CIFAR-shaped data (random images `[n, 32, 32, 3]`, 10 labels) it checks, each
against an independent run of the same numbers:

  scan      an epoch as one `lax.scan` gives the losses of the same epoch as dispatched steps;
  vmap      m stacked candidates under `jax.vmap` give the losses of the same m as a loop;
  bfloat16  the step in bfloat16 is finite and its first loss within 0.05 of float32's;
  auto      `candidate_execution=auto` resolves to vmap or loop (measured on accelerators);
  mesh      the candidates on a 1-device `(candidates, data)` mesh under `shard_map` give the
            losses of the plain program;

then measures ResNet-20 epochs at batch 128 (images/s of all candidates together) for m = 1,
4 and 8 as loop and as vmap, the compile time of each program, and the model FLOP utilisation
(the model's counted training FLOPs against a measured matmul peak in the run's dtype). It prints
the issue-17 targets: m = 4 in at most 1.5x the time of m = 1, and 100k images/s or more.

  python bench/gpu_check.py [--json /tmp/gpu_check.json]    # a GPU: about 2-3 minutes
  JAX_PLATFORMS=cpu python bench/gpu_check.py --tiny        # seconds; the test suite runs it

Needs jax, flax, optax and numpy only (what a bare GPU machine has; no ml_collections,
TensorFlow or the embedded data). Exit code 1 if any check failed.
"""

import argparse
import functools
import json
import os
import statistics
import sys
import time
import types

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# pylint: disable=g-import-not-at-top,wrong-import-position
from sms_jax import evaluation, models, parallel
from sms_jax.data.arrays import Split
from sms_jax.data.dataset import Dataset
from sms_jax.training import engine, optimizers, state as state_lib
# pylint: enable=g-import-not-at-top,wrong-import-position

# SGD with Nesterov momentum 0.9 and weight decay 5e-4 at a constant learning rate 0.1.
TRAIN = types.SimpleNamespace(optimizer="sgd", weight_decay=5e-4, momentum=0.9, nesterov=True)
FULL = dict(model="resnet20", image=32, batch=128, steps=40, ms=(1, 4, 8), repeats=3,
            matmul=8192)
# Checks compare the first steps: later ones drift apart by rounding (TF32 convolutions on
# GPUs) that the chaotic training dynamics amplify.
COMPARED = 3
TOLERANCE = 1e-2
TINY = dict(model="mlp", image=4, batch=8, steps=3, ms=(1, 2), repeats=1, matmul=256)


def synthetic(image: int, batch: int, steps: int) -> Dataset:
  """Random standardised images `[steps * batch, image, image, 3]` with random labels."""
  rng = np.random.default_rng(0)
  split = lambda n: Split(rng.standard_normal((n, image, image, 3), np.float32),
                          rng.integers(0, 10, n).astype(np.int32))
  return Dataset("synthetic", split(steps * batch), split(batch), split(batch), 10, "crop_flip")


class Bench:
  """The model, optimizer and data of the check, and the programs built from them."""

  def __init__(self, sizes: dict, dtype):
    self.sizes, self.dtype = sizes, dtype
    self.data = synthetic(sizes["image"], sizes["batch"], sizes["steps"])
    self.tx = optimizers.make_optimizer(TRAIN, lambda count: jnp.float32(0.1))

  def model(self, dtype=None):
    return models.create_model(self.sizes["model"], 10, dtype=dtype or self.dtype)

  def state(self, m: int, dtype=None):
    """A copy of m stacked fresh states `[m, ...]` (m = 0: one unstacked state); the
    runners donate what they are given."""
    return jax.tree.map(jnp.copy, self._fresh(m, dtype or self.dtype))

  @functools.lru_cache(maxsize=None)
  def _fresh(self, m: int, dtype):
    model, shape = self.model(dtype), self.data.input_shape
    create = lambda key: state_lib.create_train_state(model, self.tx, key, shape)
    if m == 0:
      return create(jax.random.key(0))
    return jax.vmap(create)(jax.random.split(jax.random.key(0), m))

  def runner(self, m: int, *, epoch_loop="scan", execution=None, mesh=None, dtype=None):
    """(compiled epoch runner for `state(m)`, its compile seconds)."""
    tic = time.perf_counter()
    runner = engine.EpochRunner(self.state(m, dtype), self.data, model=self.model(dtype),
                                tx=self.tx, batch_size=self.sizes["batch"],
                                epoch_loop=epoch_loop, execution=execution, mesh=mesh)
    return runner, time.perf_counter() - tic

  def losses(self, runner, m: int, dtype=None) -> np.ndarray:
    """The step losses of one epoch from the fresh state: `[steps]` or `[steps, m]`."""
    if m == 0:
      return np.asarray(runner(self.state(0, dtype), jax.random.key(1))[1]["loss"])
    keys = jax.random.split(jax.random.key(1), m)
    return np.asarray(runner(self.state(m, dtype), keys, jnp.ones((m,), bool))[1]["loss"])


def checks(bench: Bench, m: int, tolerance: float) -> list[dict]:
  """The five path checks; each `{'name', 'ok', 'detail'}`."""
  results = []

  def record(name, ok, detail):
    results.append({"name": name, "ok": bool(ok), "detail": detail})
    print(f"{'ok  ' if ok else 'FAIL'} {name}: {detail}", flush=True)

  scan = bench.losses(bench.runner(0, epoch_loop="scan")[0], 0)[:COMPARED]
  steps = bench.losses(bench.runner(0, epoch_loop="steps")[0], 0)[:COMPARED]
  diff = float(np.max(np.abs(scan - steps)))
  record("scan", diff <= tolerance, f"the first {len(scan)} step losses of a scan epoch "
         f"against dispatched steps: max |diff| {diff:.1e} (allowed {tolerance:g})")

  vmap = bench.losses(bench.runner(m, execution="vmap")[0], m)[:COMPARED]
  loop = bench.losses(bench.runner(m, execution="loop")[0], m)[:COMPARED]
  diff = float(np.max(np.abs(vmap - loop)))
  record("vmap", diff <= tolerance,
         f"{m} candidates, vmap against loop: max |diff| of the first {len(vmap)} step "
         f"losses {diff:.1e}")

  f32 = bench.losses(bench.runner(0, dtype=jnp.float32)[0], 0, jnp.float32)
  bf16 = bench.losses(bench.runner(0, dtype=jnp.bfloat16)[0], 0, jnp.bfloat16)
  diff = float(abs(bf16[0] - f32[0]))
  record("bfloat16", np.all(np.isfinite(bf16)) and diff <= 0.05,
         f"first loss {bf16[0]:.4f} against float32's {f32[0]:.4f}; all finite: "
         f"{bool(np.all(np.isfinite(bf16)))}")

  lines = []
  choice = engine.choose_execution(
      "auto", bench.state(m), bench.data, mesh=None, batch_size=bench.sizes["batch"],
      log=lines.append, model=bench.model(), tx=bench.tx)
  record("auto", choice in ("vmap", "loop"),
         f"{m} candidates on {jax.default_backend()}: {choice}"
         + (f" ({lines[0]})" if lines else " (CPU: the loop, unmeasured)"))

  mesh = jax.sharding.Mesh(np.asarray(jax.devices()[:1]).reshape(1, 1),
                           (parallel.CANDIDATES, parallel.DATA))
  meshed = bench.losses(bench.runner(m, execution="vmap", mesh=mesh)[0], m)[:COMPARED]
  diff = float(np.max(np.abs(meshed - vmap)))
  record("mesh", diff <= tolerance,
         f"{m} candidates on a 1x1 mesh against no mesh: max |diff| {diff:.1e}")
  return results


def epoch_time(runner, state, m: int, repeats: int) -> float:
  """Median seconds of one epoch after a warm-up epoch; the state threads through."""
  keys = jax.random.split(jax.random.key(2), max(m, 1))
  args = (keys[0],) if m == 0 else (keys, jnp.ones((m,), bool))
  state = jax.block_until_ready(runner(state, *args))[0]
  times = []
  for _ in range(repeats):
    tic = time.perf_counter()
    state = jax.block_until_ready(runner(state, *args))[0]
    times.append(time.perf_counter() - tic)
  return statistics.median(times)


def step_flops(bench: Bench) -> float:
  """FLOPs of one training step of one model: 6 x its dense multiply-adds per example
  (`evaluation.layer_flops`: forward 2 FLOPs a multiply-add, backward twice the forward) x
  the batch. XLA's own count (`cost_analysis`) leaves out the convolutions it hands to cuDNN
  (0.83 GFLOP for ResNet-20's step on an H200, against 31.1 counted so)."""
  model, state = bench.model(), bench.state(0)
  variables = {"params": state.params, "batch_stats": state.batch_stats}
  records = evaluation.layer_flops(model, variables, bench.data.input_shape)
  return 6.0 * evaluation.flops_summary(records)["dense"] * bench.sizes["batch"]


def matmul_peak(n: int, dtype) -> float:
  """Measured FLOP/s of an `n x n` matrix product in `dtype` (median of 5 after a warm-up)."""
  a = jax.random.normal(jax.random.key(0), (n, n), dtype)
  product = jax.jit(lambda a: a @ a)
  jax.block_until_ready(product(a))
  times = []
  for _ in range(5):
    tic = time.perf_counter()
    jax.block_until_ready(product(a))
    times.append(time.perf_counter() - tic)
  return 2 * n ** 3 / statistics.median(times)


def speed(bench: Bench) -> dict:
  """images/s, compile seconds and MFU of each (m, execution), and the targets."""
  sizes, rows = bench.sizes, []
  images = sizes["steps"] * sizes["batch"]
  flops, peak = step_flops(bench), matmul_peak(sizes["matmul"], bench.dtype)
  for m in sizes["ms"]:
    for execution in (("single",) if m == 1 else ("loop", "vmap")):
      stacked = 0 if m == 1 else m
      runner, compile_s = bench.runner(stacked, execution=None if m == 1 else execution)
      seconds = epoch_time(runner, bench.state(stacked), stacked, sizes["repeats"])
      rows.append({"m": m, "execution": execution, "compile_s": compile_s,
                   "epoch_s": seconds, "images_per_s": m * images / seconds,
                   "mfu": flops * m * sizes["steps"] / seconds / peak if flops else None})
      mfu = f"{rows[-1]['mfu']:.1%}" if flops else "n/a"
      print(f"m={m} {execution:6s} compile {compile_s:5.1f} s  epoch {seconds * 1e3:8.1f} ms  "
            f"{rows[-1]['images_per_s']:>10,.0f} images/s  MFU {mfu}", flush=True)
  one = rows[0]["epoch_s"]
  four = min((r["epoch_s"] for r in rows if r["m"] == 4), default=None)
  best = max(r["images_per_s"] for r in rows)
  targets = {"m4_over_m1": four / one if four else None, "m4_target": 1.5,
             "best_images_per_s": best, "images_per_s_target": 100_000}
  return {"step_flops": flops, "matmul_peak_flops": peak, "rows": rows, "targets": targets}


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--tiny", action="store_true",
                      help="an MLP on 4x4 images, m = 1, 2: a smoke test for any backend")
  parser.add_argument("--dtype", choices=("auto", "float32", "bfloat16"), default="auto",
                      help="of the speed runs; auto: bfloat16 on accelerators, float32 on CPU")
  parser.add_argument("--json", default="", help="also write the results to this file")
  args = parser.parse_args()
  sizes = TINY if args.tiny else FULL
  backend = jax.default_backend()
  name = args.dtype if args.dtype != "auto" else ("float32" if backend == "cpu" else "bfloat16")
  bench = Bench(sizes, jnp.dtype(name))
  device = jax.devices()[0]
  print(f"{backend} {getattr(device, 'device_kind', device.platform)}, jax {jax.__version__}; "
        f"{sizes['model']}, batch {sizes['batch']}, {sizes['steps']} steps an epoch, {name}",
        flush=True)
  tic = time.perf_counter()
  # Path checks in float32 (bfloat16 has its own check): the tolerance is for rounding that
  # differs between differently compiled programs.
  path_bench = Bench(sizes, jnp.dtype(jnp.float32))
  results = {"backend": backend, "device": getattr(device, "device_kind", device.platform),
             "jax": jax.__version__, "dtype": name, "sizes": sizes,
             "checks": checks(path_bench, m=sizes["ms"][-1], tolerance=TOLERANCE)}
  results["speed"] = speed(bench)
  results["wall_s"] = time.perf_counter() - tic
  t = results["speed"]["targets"]
  print(f"\npeak matmul {results['speed']['matmul_peak_flops'] / 1e12:.3g} TFLOP/s ({name}); "
        f"one step {results['speed']['step_flops'] / 1e9:.3g} GFLOP")
  if t["m4_over_m1"] is not None:
    print(f"target: m = 4 in at most {t['m4_target']}x the time of m = 1: "
          f"{t['m4_over_m1']:.2f}x")
  print(f"target: {t['images_per_s_target']:,} images/s: best {t['best_images_per_s']:,.0f}")
  failed = [c["name"] for c in results["checks"] if not c["ok"]]
  print(f"checks: {'all passed' if not failed else 'FAILED ' + ', '.join(failed)}; "
        f"{results['wall_s']:.0f} s")
  if args.json:
    with open(args.json, "w") as f:
      json.dump(results, f, indent=1)
  sys.exit(1 if failed else 0)


if __name__ == "__main__":
  main()
