#!/usr/bin/env python
"""m stacked candidates: one jit(vmap(train_step)) call against m sequential jitted steps.

Prints the candidate-axis efficiency m * t(1) / t(m) (1.0 = stacking is free, above 1 it
wins). Run from the repository root:

  python bench/bench_candidates.py --model cnn1d --repeats 20
  python bench/bench_candidates.py --model resnet20 --repeats 2
"""

import argparse
import functools
import os
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# pylint: disable=g-import-not-at-top,wrong-import-position
from configs import default
from sms_jax import models
from sms_jax.training import optimizer, state as state_lib, steps
# pylint: enable=g-import-not-at-top,wrong-import-position

SHAPES = {"cnn1d": (40, 1), "mlp": (40, 1)}


def _median_time(fn, repeats: int) -> float:
  fn()  # Compiles and warms up.
  times = []
  for _ in range(repeats):
    tic = time.perf_counter()
    fn()
    times.append(time.perf_counter() - tic)
  return float(np.median(times))


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--model", default="cnn1d")
  parser.add_argument("--candidates", type=int, default=4)
  parser.add_argument("--batch_size", type=int, default=128)
  parser.add_argument("--repeats", type=int, default=10)
  parser.add_argument("--rounds", type=int, default=2)
  args = parser.parse_args()
  m, shape = args.candidates, SHAPES.get(args.model, (32, 32, 3))
  model = models.create_model(args.model, 10)
  tx = optimizer.make_optimizer(default.get_config().train, 10)
  keys = jax.random.split(jax.random.key(0), m)
  stacked = jax.vmap(lambda k: state_lib.create_train_state(model, tx, k, shape))(keys)
  single = state_lib.create_train_state(model, tx, keys[0], shape)
  x = jax.random.normal(jax.random.key(1), (m, args.batch_size, *shape))
  y = jnp.zeros((m, args.batch_size), jnp.int32)
  step = functools.partial(steps.train_step, model=model, tx=tx)
  one, stacked_step = jax.jit(step), jax.jit(jax.vmap(step))
  print(f"backend {jax.default_backend()}, jax {jax.__version__}, {os.cpu_count()} CPUs")
  for _ in range(args.rounds):
    sequential = _median_time(
        lambda: [jax.block_until_ready(one(single, x[i], y[i])) for i in range(m)], args.repeats)
    vmapped = _median_time(lambda: jax.block_until_ready(stacked_step(stacked, x, y)),
                           args.repeats)
    print(f"{args.model} m={m} b={args.batch_size}: sequential {sequential * 1e3:.1f} ms, "
          f"vmap {vmapped * 1e3:.1f} ms, efficiency m*t(1)/t(m) = {sequential / vmapped:.2f}",
          flush=True)


if __name__ == "__main__":
  main()
