#!/usr/bin/env python
"""m stacked candidates: one train step of all m in each of the library's executions.

Modes, each timed as the wall time of one train step of all m candidates (batch b each):
  vmap, map, loop: `engine.over_candidates(engine.train_step, mode)` on the stacked state,
        jitted as the epoch runner jits it, one call: `jax.vmap`; `lax.map` (a while loop:
        XLA:CPU runs backward convolutions inside loop bodies through a slow generic path,
        jax-ml/jax#12868); the m single steps one after another in one program;
  dispatch: m calls of the jitted single step, each on its own (unstacked) candidate's
        state, dispatched back to back and blocked on once at the end (what the project ran
        as 'loop' on CPU before the one-program loop; kept for comparison).
t(1) is one call of the jitted single step. Printed per mode: the median time, images/s
(m * b / t) and the candidate-axis efficiency m * t(1) / t(mode) (1.0: as fast as m single
steps back to back; above 1 the mode wins). Every mode threads its state from call to call
(`state = fn(state, x, y)[0]`) and donates it (`--donate 1`, all modes and t(1) alike) or
none does (`--donate 0`). Modes are interleaved within a round; rounds repeat the lot.
Programs are compiled ahead of time (compile seconds printed), so `--warmup 0` skips the
untimed call. Run from the repository root:

  python bench/bench_candidates.py --model cnn1d --repeats 50 --rounds 3
  python bench/bench_candidates.py --model resnet20 --candidates 2 --repeats 2 --warmup 0
"""

import argparse
import os
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# pylint: disable=g-import-not-at-top,wrong-import-position
from machine import cpu_model  # bench/machine.py
from configs import default
from sms_jax import models
from sms_jax.training import engine, optimizers, state as state_lib
# pylint: enable=g-import-not-at-top,wrong-import-position

SHAPES = {"cnn1d": (40, 1), "mlp": (40, 1)}
MODES = ("vmap", "map", "loop", "dispatch")


def _copy(tree):
  return jax.tree.map(jnp.copy, tree)


class _Runner:
  """One execution mode: a compiled program and the state it threads from call to call."""

  def __init__(self, name, call, state):
    self.name, self.call, self.state = name, call, state
    self.first_loss = None  # Losses of the first call: the same in every mode.

  def __call__(self):
    self.state, metrics = self.call(self.state)
    jax.block_until_ready((self.state, metrics))
    if self.first_loss is None:
      self.first_loss = np.asarray(metrics["loss"]).reshape(-1)


def _median_time(fn, repeats: int, warmup: int, budget_s: float | None) -> tuple[float, int]:
  """Median wall time of `fn()` over `repeats` calls (fewer, at least 1, past `budget_s`)."""
  for _ in range(warmup):
    fn()
  times, start = [], time.perf_counter()
  for _ in range(repeats):
    tic = time.perf_counter()
    fn()
    times.append(time.perf_counter() - tic)
    if budget_s is not None and time.perf_counter() - start > budget_s:
      break
  return float(np.median(times)), len(times)


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--model", default="cnn1d")
  parser.add_argument("--candidates", type=int, default=4)
  parser.add_argument("--batch_size", type=int, default=128)
  parser.add_argument("--repeats", type=int, default=10)
  parser.add_argument("--rounds", type=int, default=2)
  parser.add_argument("--modes", default=",".join(MODES),
                      help=f"comma-separated subset of {','.join(MODES)}")
  parser.add_argument("--warmup", type=int, default=1, help="untimed calls before timing")
  parser.add_argument("--donate", type=int, default=1,
                      help="donate the state in every program (1) or in none (0)")
  parser.add_argument("--budget_s", type=float, default=None,
                      help="stop a measurement's repeats after this many seconds (min 1 call)")
  args = parser.parse_args()
  modes = [mo for mo in args.modes.split(",") if mo]
  if unknown := set(modes) - set(MODES):
    parser.error(f"unknown modes {sorted(unknown)}; choose from {MODES}")
  m, b, shape = args.candidates, args.batch_size, SHAPES.get(args.model, (32, 32, 3))
  donate = (0,) if args.donate else ()

  model = models.create_model(args.model, 10)
  tx = optimizers.make_optimizer(default.get_config().train, lambda count: 0.05)
  keys = jax.random.split(jax.random.key(0), m)
  stacked = jax.vmap(lambda k: state_lib.create_train_state(model, tx, k, shape))(keys)
  unstacked = [jax.tree.map(lambda a, i=i: a[i], stacked) for i in range(m)]
  x = jax.random.normal(jax.random.key(1), (m, b, *shape))
  y = jax.random.randint(jax.random.key(2), (m, b), 0, 10)
  xs, ys = [x[i] for i in range(m)], [y[i] for i in range(m)]
  step_keys = jax.random.split(jax.random.key(3), m)
  active = jnp.ones((m,), bool)
  step = lambda s, key, x, y: engine.train_step(s, x, y, key, model=model, tx=tx)

  def compile_(fn, *example):
    tic = time.perf_counter()
    compiled = jax.jit(fn, donate_argnums=donate).lower(*example).compile()
    return compiled, time.perf_counter() - tic

  one, compile_s = compile_(step, unstacked[0], step_keys[0], xs[0], ys[0])
  compile_times = {"t(1)": compile_s}
  runners = {"t(1)": _Runner("t(1)", lambda s: one(s, step_keys[0], xs[0], ys[0]),
                             _copy(unstacked[0]))}
  for mode in ("vmap", "map", "loop"):
    if mode in modes:
      fn, compile_times[mode] = compile_(engine.over_candidates(step, mode, num_shared=0),
                                         stacked, active, step_keys, x, y)
      runners[mode] = _Runner(mode, lambda s, fn=fn: fn(s, active, step_keys, x, y),
                              _copy(stacked))
  if "dispatch" in modes:

    def dispatch(states):
      outs = [one(s, k, xi, yi) for s, k, xi, yi in zip(states, step_keys, xs, ys)]
      return [o[0] for o in outs], {"loss": jnp.stack([o[1]["loss"] for o in outs])}

    runners["dispatch"] = _Runner("dispatch", dispatch, [_copy(s) for s in unstacked])
    compile_times["dispatch"] = 0.0  # The single step, compiled above.

  print(f"backend {jax.default_backend()}, jax {jax.__version__}, {cpu_model()}, "
        f"{os.cpu_count()} CPUs; {args.model} m={m} b={b} donate={bool(args.donate)}")
  print("compile s: " + ", ".join(f"{k} {v:.1f}" for k, v in compile_times.items()), flush=True)
  results = {name: [] for name in runners}
  for r in range(args.rounds):
    line = []
    for name, runner in runners.items():
      t, n = _median_time(runner, args.repeats, args.warmup, args.budget_s)
      results[name].append(t)
      line.append(f"{name} {t * 1e3:.1f} ms (n={n})")
    t1 = results["t(1)"][-1]
    eff = ", ".join(f"{mo} {m * t1 / results[mo][-1]:.2f}" for mo in modes)
    print(f"round {r + 1}: " + ", ".join(line) + f"; efficiency m*t(1)/t: {eff}", flush=True)

  ref = runners["t(1)"].first_loss[0]
  checks = {mo: float(np.max(np.abs(runners[mo].first_loss - runners[modes[0]].first_loss)))
            for mo in modes}
  print(f"first-step losses: t(1) candidate 0 {ref:.6f}; max |diff| to {modes[0]}: "
        + ", ".join(f"{mo} {d:.1e}" for mo, d in checks.items()))
  print(f"\nmedian over {args.rounds} rounds ({args.model}, m={m}, b={b}):")
  print("| mode | time per step of all m | images/s | efficiency m*t(1)/t | per round |")
  print("|---|---|---|---|---|")
  t1 = float(np.median(results["t(1)"]))
  print(f"| t(1) (one candidate) | {t1 * 1e3:.1f} ms | {b / t1:,.0f} | | "
        + ", ".join(f"{t * 1e3:.1f}" for t in results["t(1)"]) + " |")
  for mo in modes:
    t = float(np.median(results[mo]))
    per_round = ", ".join(f"{m * t1r / tr:.2f}" for t1r, tr in zip(results["t(1)"], results[mo]))
    print(f"| {mo} | {t * 1e3:.1f} ms | {m * b / t:,.0f} | {m * t1 / t:.2f} | {per_round} |")


if __name__ == "__main__":
  main()
