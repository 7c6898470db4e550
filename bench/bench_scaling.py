#!/usr/bin/env python
"""Scaling of the project's train step with m stacked candidates: throughput, compile, memory, MFU.

For each model in `--models` and each m in `--ms`, one train step of all m candidates
(`sms_jax.training.engine.train_step`, model and the project's optimizer bound with
`functools.partial`, batch b per candidate, each candidate its own batch) is run as:

  loop:     one jitted single-candidate step called m times from Python on m separate states
            (dispatched back to back, blocked on once at the end): the reference t(1);
  unrolled: `engine.over_candidates(step, 'loop')` over the stacked state [m, ...], jitted,
            one call: the m steps one after another in one program (the library's 'loop');
  vmap:     `engine.over_candidates(step, 'vmap')`, one call (the library's 'vmap');
  map:      `engine.over_candidates(step, 'map')`, one call (`lax.map`, the library's 'map').

Every program donates its state and threads it from call to call. Reported per configuration:
  * time of one step of all m candidates (median of up to `--repeats` calls after
    `--warmup` untimed calls), images/s = m * b / t, and the candidate-axis efficiency
    m * t(1) / t(m), with t(1) the loop at m = 1 (1.0: as fast as m single steps back to
    back; above 1 the execution wins);
  * compile time (lower + compile, seconds, ahead of time; the loop reuses the m = 1 step);
  * memory per candidate from `compiled.memory_analysis()`: (temp + argument + output) / m for
    vmap/map; for the loop, whose m states are m separate argument sets run one at a time,
    (temp + m * (argument + output)) / m. Output buffers alias the donated arguments, so this
    counts the state twice (alias bytes are recorded too);
  * model FLOPs utilisation: m * FLOPs of the single step (`compiled.cost_analysis()['flops']`;
    XLA counts a while loop's body once, so `map`'s own figure is not m times anything)
    / t / peak, with peak = 2 n^3 / t of a jitted n x n float32 matmul timed in the same run
    (and a bfloat16 one for the `--bf16_models` rows).

Time budget: before running a configuration the script estimates one call's time from what it
has measured (the single step times m, this execution at a smaller m scaled up, and this
execution's efficiency at the same m on an earlier model) and skips the configuration when
the estimate exceeds `--budget_s` (it still compiles it, for compile time, memory and FLOPs,
unless `--compile_skipped 0`). Timing stops once the next call would pass `--budget_s`; the
warm-up call is dropped when warm-up plus one call would not fit, and when only the warm-up
fit, its time is the sample (flagged). `--total_budget_s` skips whatever would run past it.

Optional extras: `--torch_python` runs bench/torch_resnet20.py (PyTorch in its own venv) right
after the resnet20 m = 1 measurement and re-times the JAX step after it; `--e2e` times
`python -m sms_jax.main --config=configs/mnist1d.py` end to end in a fresh workdir.

Nothing here is CPU-specific: the device is jax.devices()[0]. Run from the repository root:

  JAX_PLATFORMS=cpu python bench/bench_scaling.py --models resnet20,wrn16_8 --ms 1,2,4,8 \\
      --torch_python /root/torchvenv/bin/python --e2e --json bench/scaling_cpu.json
  python bench/bench_scaling.py --models resnet20 --ms 1,2 --repeats 2 --budget_s 20  # quick
"""

import argparse
import datetime
import json
import os
import resource
import subprocess
import sys
import time

_BENCH = os.path.dirname(os.path.abspath(__file__))
_ROOT = os.path.dirname(_BENCH)
for _p in (_BENCH, _ROOT):
  if _p not in sys.path:
    sys.path.insert(0, _p)

# pylint: disable=g-import-not-at-top,wrong-import-position
import jax
import jax.numpy as jnp
import numpy as np

from bench_step import CIFAR_SHAPE, INPUT_SHAPES, machine_info  # bench/bench_step.py
from sms_jax import defaults, models
from sms_jax.training import engine, optimizers, schedules, state as state_lib
# pylint: enable=g-import-not-at-top,wrong-import-position

EXECUTIONS = ("loop", "unrolled", "vmap", "map")
DEFAULT_BATCH = {"resnet20": 128, "wrn16_8": 32}
DEFAULT_CLASSES = {"resnet20": 10, "wrn16_8": 100}  # CIFAR-10 / CIFAR-100


def _log(*a):
  print(*a, flush=True)


def _load():
  return [round(v, 2) for v in os.getloadavg()]


def _now():
  return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


def _pct(v):
  return "n/a" if v is None else f"{100 * v:.0f}%"


def _kv(text: str, cast) -> dict:
  """'a=1,b=2' -> {'a': cast('1'), 'b': cast('2')}."""
  return {k: cast(v) for k, v in (item.split("=") for item in text.split(",") if item)}


class CpuMonitor:
  """Share of the machine's CPU time used by *other* processes between start() and stop().

  From /proc/stat (all CPUs' busy jiffies) minus this process's own CPU time and its waited-for
  children's (os.times); None where /proc/stat is missing. 0: nothing else ran; 1: other
  processes kept every core busy.
  """

  def __init__(self):
    self._hz = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
    self._start = None

  def _snapshot(self):
    try:
      with open("/proc/stat") as f:
        fields = [int(v) for v in f.readline().split()[1:]]
    except (OSError, ValueError):
      return None
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    total = sum(fields[:8])  # user nice system idle iowait irq softirq steal
    t = os.times()
    own = (t.user + t.system + t.children_user + t.children_system) * self._hz
    return total, total - idle, own

  def start(self):
    self._start = self._snapshot()
    return self

  def stop(self):
    end = self._snapshot()
    if self._start is None or end is None:
      return None
    d_total, d_busy, d_own = (e - s for e, s in zip(end, self._start))
    return max(0.0, (d_busy - d_own) / d_total) if d_total > 0 else None


def other_cpu(seconds: float) -> float | None:
  """Other processes' share of the machine over the next `seconds` (sleeping meanwhile)."""
  mon = CpuMonitor().start()
  time.sleep(seconds)
  return mon.stop()


def parse_args(argv=None):
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--models", default="resnet20,wrn16_8")
  p.add_argument("--ms", default="1,2,4,8", help="numbers of stacked candidates")
  p.add_argument("--executions", default=",".join(EXECUTIONS),
                 help=f"subset of {','.join(EXECUTIONS)}")
  p.add_argument("--batch_sizes", default="",
                 help=f"per candidate, e.g. resnet20=128,wrn16_8=32 (defaults {DEFAULT_BATCH}, "
                      "else 128)")
  p.add_argument("--num_classes", default="", help=f"e.g. wrn16_8=100 (defaults "
                                                    f"{DEFAULT_CLASSES}, else 10)")
  p.add_argument("--repeats", type=int, default=5, help="timed calls per configuration (max)")
  p.add_argument("--warmup", type=int, default=1, help="untimed calls before timing")
  p.add_argument("--budget_s", type=float, default=90.0,
                 help="time budget of one configuration's calls (warm-up included)")
  p.add_argument("--total_budget_s", type=float, default=0.0,
                 help="skip configurations estimated to end past this many seconds (0: none)")
  p.add_argument("--quiet_threshold", type=float, default=0.25,
                 help="before a configuration, wait while other processes use more than this "
                      "share of the machine's CPU (sampled over 2 s)")
  p.add_argument("--max_wait_s", type=float, default=60.0, help="longest wait per configuration")
  p.add_argument("--max_total_wait_s", type=float, default=420.0, help="longest wait in all")
  p.add_argument("--ref_repeats", type=int, default=3,
                 help="timed calls of the single step re-measured before each m > 1 (the local "
                      "t(1) of that m's efficiencies; 0: use the m = 1 row only)")
  p.add_argument("--skip", default="",
                 help="configurations to skip (still compiled), e.g. wrn16_8:map:8,wrn16_8:vmap:8")
  p.add_argument("--compile_skipped", type=int, default=1,
                 help="compile skipped configurations anyway (compile time, memory, FLOPs)")
  p.add_argument("--bf16_models", default="resnet20",
                 help="models also measured with bfloat16 compute (loop, m = 1)")
  p.add_argument("--peak_n", type=int, default=2048, help="matmul size for the peak FLOP/s")
  p.add_argument("--peak_repeats", type=int, default=10)
  p.add_argument("--torch_python", default="",
                 help="python of a PyTorch venv: run bench/torch_resnet20.py after resnet20 m=1")
  p.add_argument("--torch_threads", default="0,1",
                 help="torch_resnet20.py --threads values, one run each (0 = all cores)")
  p.add_argument("--torch_repeats", type=int, default=8)
  p.add_argument("--e2e", action="store_true",
                 help="time python -m sms_jax.main --config=configs/mnist1d.py end to end")
  p.add_argument("--e2e_config", default="configs/mnist1d.py")
  p.add_argument("--e2e_workdir", default="/tmp/scaling/e2e",
                 help="prefix; the first unused <prefix>_<n> is used")
  p.add_argument("--e2e_retries", type=int, default=2)
  p.add_argument("--e2e_retry_wait_s", type=float, default=180.0)
  p.add_argument("--json", default="", help="write the results here (after every step)")
  p.add_argument("--seed", type=int, default=0)
  return p.parse_args(argv)


# ----------------------------------------------------------------------------- helpers


def _cost_flops(compiled):
  try:
    cost = compiled.cost_analysis()
  except Exception as e:  # pylint: disable=broad-except
    return None, f"cost_analysis failed: {e!r}"
  if isinstance(cost, (list, tuple)):  # Older jax: one dict per computation.
    cost = cost[0] if cost else {}
  flops = (cost or {}).get("flops")
  return (float(flops) if flops is not None else None), None


_MEM_FIELDS = ("temp_size_in_bytes", "argument_size_in_bytes", "output_size_in_bytes",
               "alias_size_in_bytes", "generated_code_size_in_bytes", "peak_memory_in_bytes")


def _memory(compiled):
  try:
    stats = compiled.memory_analysis()
  except Exception as e:  # pylint: disable=broad-except
    return {"error": repr(e)}
  if stats is None:
    return {"error": "memory_analysis() returned None"}
  return {f: int(getattr(stats, f)) for f in _MEM_FIELDS if hasattr(stats, f)}


def _compile(fn, *example, donate=True):
  """AOT lower + compile; returns (compiled, info dict with times, flops, memory)."""
  jitted = jax.jit(fn, donate_argnums=(0,) if donate else ())
  t0 = time.perf_counter()
  lowered = jitted.lower(*example)
  t1 = time.perf_counter()
  compiled = lowered.compile()
  t2 = time.perf_counter()
  flops, err = _cost_flops(compiled)
  info = {"lower_s": t1 - t0, "compile_s": t2 - t1, "lower_compile_s": t2 - t0,
          "flops": flops, "memory": _memory(compiled)}
  if err:
    info["cost_error"] = err
  return compiled, info


def _time_calls(call, est_s, repeats, warmup, budget_s, cheap_s=5.0):
  """Times `call()` (one step of all m candidates, blocking) within about `budget_s`.

  Warm-up calls run when warm-up plus one timed call fit the budget, or when a call is cheap
  (`est_s` <= `cheap_s`: the first call of a program can cost ~0.5 s extra on XLA:CPU). At
  least one timed call follows, unless the warm-up alone took the whole budget; then the
  warm-up call is the sample (flagged). Timed calls stop at `repeats` or when the next one
  would end past the budget.
  """
  do_warmup = warmup if ((warmup + 1) * est_s <= budget_s or est_s <= cheap_s) else 0
  start = time.perf_counter()
  warm = []
  for _ in range(do_warmup):
    t0 = time.perf_counter()
    call()
    warm.append(time.perf_counter() - t0)
  times = []
  while len(times) < repeats:
    elapsed = time.perf_counter() - start
    if times and elapsed + times[-1] > budget_s:
      break
    if not times and warm and elapsed > budget_s:
      break
    t0 = time.perf_counter()
    call()
    times.append(time.perf_counter() - t0)
  note = ""
  if not times:
    note = "warm-up call only"
  elif warmup and not do_warmup:
    note = "no warm-up (would not fit the budget)"
  sample = times or warm
  return {"median_s": float(np.median(sample)), "times_s": times, "warmup_times_s": warm,
          "n": len(times), "warmup": len(warm), "note": note}


def matmul_peak(n, dtype, repeats):
  """FLOP/s of a jitted n x n @ n x n matmul on jax.devices()[0] (median of `repeats`)."""
  ka, kb = jax.random.split(jax.random.key(123))
  a = jax.random.normal(ka, (n, n), jnp.float32).astype(dtype)
  b = jax.random.normal(kb, (n, n), jnp.float32).astype(dtype)
  f = jax.jit(jnp.matmul).lower(a, b).compile()
  for _ in range(2):
    f(a, b).block_until_ready()
  times = []
  for _ in range(repeats):
    t0 = time.perf_counter()
    f(a, b).block_until_ready()
    times.append(time.perf_counter() - t0)
  t = float(np.median(times))
  return {"n": n, "dtype": jnp.dtype(dtype).name, "median_s": t, "times_s": times,
          "flops_per_s": 2 * n**3 / t, "load": _load(), "utc": _now()}


class _Stacked:
  """One (model, m): the compiled single step, stacked/unstacked initial states and data."""

  def __init__(self, model, tx, shape, num_classes, m, b, seed, label_smoothing):
    self.m, self.b = m, b
    keys = jax.random.split(jax.random.key(seed), m)
    self.stacked = jax.vmap(lambda k: state_lib.create_train_state(model, tx, k, shape))(keys)
    self.x = jax.random.normal(jax.random.key(seed + 1), (m, b, *shape))
    self.y = jax.random.randint(jax.random.key(seed + 2), (m, b), 0, num_classes)
    self.xs = [self.x[i] for i in range(m)]
    self.ys = [self.y[i] for i in range(m)]
    self.keys = jax.random.split(jax.random.key(seed + 3), m)
    self.active = jnp.ones((m,), bool)
    key = self.keys[0]  # The single step's dropout key (none of these models drops out).
    self.keyed_step = lambda s, k, x, y: engine.train_step(
        s, x, y, k, model=model, tx=tx, label_smoothing=label_smoothing)
    self.step = lambda s, x, y: self.keyed_step(s, key, x, y)
    jax.block_until_ready((self.stacked, self.x, self.y))

  def unstacked(self):
    return [jax.tree.map(lambda a, i=i: jnp.copy(a[i]), self.stacked) for i in range(self.m)]

  def stacked_copy(self):
    return jax.tree.map(jnp.copy, self.stacked)


class _Runner:
  """Threads the (donated) state through calls; keeps the first call's losses."""

  def __init__(self, fn, state):
    self.fn, self.state, self.first_loss = fn, state, None

  def __call__(self):
    self.state, metrics = self.fn(self.state)
    jax.block_until_ready((self.state, metrics))
    if self.first_loss is None:
      self.first_loss = np.asarray(metrics["loss"], np.float64).reshape(-1)


# ----------------------------------------------------------------------------- the benchmark


class Bench:

  def __init__(self, args):
    self.args = args
    self.t_start = time.perf_counter()
    self.results = {"started_utc": _now(), "argv": sys.argv, "machine": machine_info(),
                    "args": vars(args), "peaks": [], "configs": [], "bf16": [], "torch": [],
                    "e2e": [], "refs": []}
    self.results["machine"]["device"] = str(jax.devices()[0])
    self.t1s = {}  # model -> medians of every single-step measurement (m = 1 row, refs)
    self.t1_local = {}  # model -> the single step's median measured right before this m
    self.measured = {}  # (model, execution, m) -> median seconds
    self.skipped_est = {}  # (model, execution, m) -> the estimate that skipped it
    self.single_flops = {}  # (model, dtype) -> flops of one single-candidate step
    self.loads = []
    self.total_wait_s = 0.0

  @property
  def t1(self):
    """model -> t(1) for estimates: the median of its single-step measurements so far."""
    return {k: float(np.median(v)) for k, v in self.t1s.items() if v}

  def wait_quiet(self):
    """Waits (within the limits) while other processes load the machine; returns a record."""
    a = self.args
    share = other_cpu(2.0)
    waited, start = 0.0, time.perf_counter()
    while (share is not None and share > a.quiet_threshold and waited < a.max_wait_s
           and self.total_wait_s + waited < a.max_total_wait_s):
      if waited == 0.0:
        _log(f"[{self.elapsed():7.1f}s] other processes use {100 * share:.0f}% of the CPU; "
             f"waiting (up to {a.max_wait_s:.0f}s)")
      time.sleep(3.0)
      share = other_cpu(2.0)
      waited = time.perf_counter() - start
    self.total_wait_s += waited
    return {"other_cpu_before": share, "waited_s": waited}

  # bookkeeping
  def elapsed(self):
    return time.perf_counter() - self.t_start

  def save(self):
    self.results["elapsed_s"] = self.elapsed()
    self.results["load_range"] = ([min(l[0] for l in self.loads), max(l[0] for l in self.loads)]
                                  if self.loads else None)
    if self.args.json:
      tmp = self.args.json + ".tmp"
      with open(tmp, "w") as f:
        json.dump(self.results, f, indent=1, default=str)
      os.replace(tmp, self.args.json)

  def load(self):
    l = _load()
    self.loads.append(l)
    return l

  def peak(self, dtype=jnp.float32):
    name = jnp.dtype(dtype).name
    vals = [p["flops_per_s"] for p in self.results["peaks"] if p["dtype"] == name]
    return max(vals) if vals else None

  def measure_peaks(self, label):
    for dtype in (jnp.float32, jnp.bfloat16):
      try:
        wait = self.wait_quiet()
        mon = CpuMonitor().start()
        r = matmul_peak(self.args.peak_n, dtype, self.args.peak_repeats)
        r.update(wait, other_cpu=mon.stop(), when=label)
        self.loads.append(r["load"])
        self.results["peaks"].append(r)
        _log(f"[{self.elapsed():7.1f}s] peak {r['dtype']} matmul n={r['n']}: "
             f"{r['flops_per_s'] / 1e9:.1f} GFLOP/s ({r['median_s'] * 1e3:.1f} ms), "
             f"load {r['load']}, other CPU {_pct(r['other_cpu'])}")
      except Exception as e:  # pylint: disable=broad-except
        self.results["peaks"].append({"dtype": jnp.dtype(dtype).name, "when": label,
                                      "error": repr(e)})
        _log(f"peak {jnp.dtype(dtype).name} failed: {e!r}")
    self.save()

  def finalize_mfu(self):
    """MFU of every row against the best peak measured in the run (start or end)."""
    p32, p16 = self.peak(jnp.float32), self.peak(jnp.bfloat16)
    self.results["peak_used"] = {"float32": p32, "bfloat16": p16}
    for r in self.results["configs"]:
      if r.get("achieved_flops_per_s") and p32:
        r["mfu"] = r["achieved_flops_per_s"] / p32
    for r in self.results["bf16"]:
      if r.get("achieved_flops_per_s"):
        if p32:
          r["mfu_vs_float32_peak"] = r["achieved_flops_per_s"] / p32
        if p16:
          r["mfu_vs_bfloat16_peak"] = r["achieved_flops_per_s"] / p16
    self.save()

  def estimate(self, model_name, execution, m):
    """Estimated seconds of one call (one step of all m candidates)."""
    t1 = self.t1.get(model_name)
    if t1 is None:
      return 0.0
    # A skipped configuration's estimate stands in for its time, so that what was too slow at
    # a smaller m (or on an earlier model) stays skipped.
    known = {**self.skipped_est, **self.measured}
    est = [m * t1]
    smaller = [mm for (mo, ex, mm) in known if mo == model_name and ex == execution and mm < m]
    if smaller:
      mm = max(smaller)
      est.append(known[(model_name, execution, mm)] * m / mm)
    for other, t1_other in self.t1.items():
      if other != model_name and (other, execution, m) in known:
        eff = m * t1_other / known[(other, execution, m)]
        est.append(m * t1 / eff)
    return max(est)

  # one model
  def run_model(self, name):
    a = self.args
    b = _kv(a.batch_sizes, int).get(name, DEFAULT_BATCH.get(name, 128))
    num_classes = _kv(a.num_classes, int).get(name, DEFAULT_CLASSES.get(name, 10))
    shape = INPUT_SHAPES.get(name, CIFAR_SHAPE)
    config = defaults.get_config()
    config.train.batch_size = b
    tx = optimizers.make_optimizer(  # 390 steps an epoch: only shapes the LR schedule.
        config.train, schedules.make_schedule(config.train, 390))
    ls = config.train.label_smoothing
    model = models.create_model(name, num_classes)
    executions = [e for e in a.executions.split(",") if e]
    ms = sorted({int(v) for v in a.ms.split(",") if v})
    _log(f"\n=== {name}: batch {b} per candidate, {num_classes} classes, input {shape}, "
         f"m in {ms}, executions {executions}")

    single = None  # compiled single-candidate step and its info, per model
    for m in ms:
      try:
        data = _Stacked(model, tx, shape, num_classes, m, b, a.seed, ls)
      except Exception as e:  # pylint: disable=broad-except
        _log(f"{name} m={m}: state creation failed: {e!r}")
        self.results["configs"].append({"model": name, "m": m, "batch": b,
                                        "error": f"state creation: {e!r}"})
        continue
      if single is None:
        s0 = data.unstacked()[0]
        try:
          single = _compile(data.step, s0, data.xs[0], data.ys[0])
          self.single_flops[(name, "float32")] = single[1]["flops"]
          _log(f"[{self.elapsed():7.1f}s] {name} single step compiled in "
               f"{single[1]['lower_compile_s']:.1f}s, {single[1]['flops'] or 0:.3e} FLOPs")
        except Exception as e:  # pylint: disable=broad-except
          _log(f"{name}: single-step compile failed: {e!r}")
          self.results["configs"].append({"model": name, "m": m, "batch": b,
                                          "error": f"single compile: {e!r}"})
          return
        del s0
      self.t1_local.pop(name, None)
      if m > 1 and a.ref_repeats > 0:
        self.reference(name, m, b, data, single)
      losses = {}
      # The loop first: its m = 1 row is t(1), the reference of every efficiency.
      order = [e for e in executions if e != "loop"]
      if "loop" in executions or m == 1:
        order = ["loop"] + order
      for execution in order:
        rec = self.run_config(name, execution, m, b, data, single, losses)
        self.results["configs"].append(rec)
        self.save()
        if m == 1 and execution == "loop" and "median_s" in rec:
          if name == "resnet20" and a.torch_python:
            self.torch_compare(name, b, data, single)
          if name in a.bf16_models.split(","):
            self.run_bf16(name, num_classes, shape, b, tx, ls)
      del data

  def time_single(self, single, data, estimate, repeats, warmup, rec):
    """Times the compiled single-candidate step on the first batch; records in `rec` the CPU
    share other processes took meanwhile."""
    compiled = single[0]
    x0, y0 = data.xs[0], data.ys[0]
    runner = _Runner(lambda s: compiled(s, x0, y0), data.unstacked()[0])
    mon = CpuMonitor().start()
    timing = _time_calls(runner, estimate, repeats, warmup, self.args.budget_s)
    rec["other_cpu"] = mon.stop()
    return timing

  def reference(self, name, m, b, data, single):
    """The single step again, right before the m block: that block's local t(1)."""
    rec = {"model": name, "before_m": m, "batch": b, "start_utc": _now()}
    rec.update(self.wait_quiet())
    rec["load_start"] = self.load()
    try:
      timing = self.time_single(single, data, self.t1.get(name, 0.0), self.args.ref_repeats, 0,
                                rec)
      rec.update(timing)
      self.t1_local[name] = timing["median_s"]
      self.t1s.setdefault(name, []).append(timing["median_s"])
      _log(f"[{self.elapsed():7.1f}s] {name} t(1) reference before m={m}: "
           f"{timing['median_s'] * 1e3:.1f} ms (n={timing['n']}), other CPU "
           f"{_pct(rec['other_cpu'])}")
    except Exception as e:  # pylint: disable=broad-except
      rec["error"] = repr(e)
      _log(f"{name} reference before m={m} failed: {e!r}")
    rec["load_end"] = self.load()
    self.results["refs"].append(rec)

  def run_config(self, name, execution, m, b, data, single, losses):
    a = self.args
    rec = {"model": name, "execution": execution, "m": m, "batch": b,
           "start_utc": _now(), "load_start": self.load()}
    est = self.estimate(name, execution, m)
    rec["estimate_s"] = est
    skip = None
    if f"{name}:{execution}:{m}" in a.skip.split(","):
      skip = "skipped by --skip"
    elif m > 1 or execution != "loop":
      if est > a.budget_s:
        skip = f"estimated {est:.0f} s per call > budget {a.budget_s:.0f} s"
      elif a.total_budget_s and self.elapsed() + est > a.total_budget_s:
        skip = f"estimated {est:.0f} s per call would pass the total budget"
    try:
      if execution == "loop":
        compiled, info = single
        info = dict(info, lower_s=0.0, compile_s=0.0, lower_compile_s=0.0,
                    note="reuses the single step compiled for m=1",
                    single_step_compile_s=single[1]["lower_compile_s"])
      elif skip and not a.compile_skipped:
        compiled, info = None, {}
      else:
        stacked = engine.over_candidates(
            data.keyed_step, {"unrolled": "loop"}.get(execution, execution), num_shared=0)
        fn = lambda s, x, y: stacked(s, data.active, data.keys, x, y)
        compiled, info = _compile(fn, data.stacked, data.x, data.y)
      rec.update(info)
      mem = info.get("memory", {})
      if "temp_size_in_bytes" in mem:
        arg_out = mem["argument_size_in_bytes"] + mem["output_size_in_bytes"]
        if execution == "loop":
          rec["mem_per_candidate_bytes"] = (mem["temp_size_in_bytes"] + m * arg_out) / m
        else:
          rec["mem_per_candidate_bytes"] = (mem["temp_size_in_bytes"] + arg_out) / m
      if skip:
        rec["skipped"] = skip
        if skip.startswith("estimated"):
          self.skipped_est[(name, execution, m)] = est
        _log(f"[{self.elapsed():7.1f}s] {name} {execution} m={m}: SKIPPED ({skip})"
             + (f"; compiled in {info['lower_compile_s']:.1f}s" if info else ""))
        return rec
      if execution == "loop":
        xs, ys = data.xs, data.ys

        def loop(states):
          outs = [compiled(s, xi, yi) for s, xi, yi in zip(states, xs, ys)]
          return [o[0] for o in outs], {"loss": jnp.stack([o[1]["loss"] for o in outs])}

        runner = _Runner(loop, data.unstacked())
      else:
        x, y = data.x, data.y
        runner = _Runner(lambda s: compiled(s, x, y), data.stacked_copy())
      rec.update(self.wait_quiet())
      rec["load_start"] = self.load()
      _log(f"[{self.elapsed():7.1f}s] {name} {execution} m={m}: compile "
           f"{rec['lower_compile_s']:.1f}s, est {est:.1f}s/call, load {rec['load_start']}, "
           f"other CPU {_pct(rec['other_cpu_before'])} ...")
      mon = CpuMonitor().start()
      timing = _time_calls(runner, est, a.repeats, a.warmup, a.budget_s)
      rec["other_cpu"] = mon.stop()
      rec.update(timing)
      t = timing["median_s"]
      self.measured[(name, execution, m)] = t
      if execution == "loop" and m == 1:
        self.t1s.setdefault(name, []).append(t)
        self.t1_local[name] = t
      t1_first = self.t1s.get(name, [None])[0]  # The m = 1 loop row.
      t1 = self.t1_local.get(name, t1_first)
      rec["t1_ref_s"] = t1
      rec["images_per_s"] = m * b / t
      rec["efficiency"] = m * t1 / t if t1 else None  # Against the local t(1).
      rec["efficiency_vs_m1_row"] = m * t1_first / t if t1_first else None
      flops1 = self.single_flops.get((name, "float32"))
      if flops1:
        rec["flops_per_step_all_m"] = m * flops1
        rec["achieved_flops_per_s"] = m * flops1 / t
        if self.peak():
          rec["mfu"] = m * flops1 / t / self.peak()
      losses[execution] = runner.first_loss
      if "loop" in losses and execution != "loop":
        rec["first_loss_max_abs_diff_vs_loop"] = float(
            np.max(np.abs(losses[execution] - losses["loop"])))
      rec["first_losses"] = runner.first_loss.tolist()
      del runner
      rec["load_end"] = self.load()
      _log(f"[{self.elapsed():7.1f}s] {name} {execution} m={m}: {t * 1e3:.1f} ms/step, "
           f"{rec['images_per_s']:.1f} img/s, eff {rec['efficiency'] or 0:.2f}, "
           f"MFU {100 * rec.get('mfu', 0):.1f}%, n={timing['n']} (+{timing['warmup']} warm-up)"
           f"{' [' + timing['note'] + ']' if timing['note'] else ''}, load {rec['load_end']}, "
           f"other CPU {_pct(rec['other_cpu'])}")
    except Exception as e:  # pylint: disable=broad-except
      rec["error"] = repr(e)
      _log(f"[{self.elapsed():7.1f}s] {name} {execution} m={m}: FAILED {e!r}")
    return rec

  def run_bf16(self, name, num_classes, shape, b, tx, ls):
    """bfloat16 compute (create_model(dtype=bfloat16)), loop m = 1, against float32."""
    rec = {"model": name, "execution": "loop", "m": 1, "batch": b, "dtype": "bfloat16",
           "start_utc": _now()}
    try:
      model = models.create_model(name, num_classes, dtype=jnp.bfloat16)
      data = _Stacked(model, tx, shape, num_classes, 1, b, self.args.seed, ls)
      compiled, info = _compile(data.step, data.unstacked()[0], data.xs[0], data.ys[0])
      rec.update(info)
      x0, y0 = data.xs[0], data.ys[0]
      runner = _Runner(lambda s: compiled(s, x0, y0), data.unstacked()[0])
      rec.update(self.wait_quiet())
      rec["load_start"] = self.load()
      mon = CpuMonitor().start()
      timing = _time_calls(runner, self.t1.get(name, 0.0), self.args.repeats, self.args.warmup,
                           self.args.budget_s)
      rec["other_cpu"] = mon.stop()
      rec.update(timing)
      t = timing["median_s"]
      t32 = self.t1s[name][-1] if self.t1s.get(name) else None  # Latest float32 measurement.
      rec["float32_ref_s"] = t32
      rec["images_per_s"] = b / t
      rec["speedup_vs_float32"] = t32 / t if t32 else None
      flops = info["flops"] or self.single_flops.get((name, "float32"))
      rec["achieved_flops_per_s"] = flops / t if flops else None
      rec["first_losses"] = runner.first_loss.tolist()
      rec["load_end"] = self.load()
      _log(f"[{self.elapsed():7.1f}s] {name} bfloat16 loop m=1: compile "
           f"{info['lower_compile_s']:.1f}s, {t * 1e3:.1f} ms/step, {b / t:.1f} img/s "
           f"(float32 {(t32 or float('nan')) * 1e3:.1f} ms), load {rec['load_end']}, other CPU "
           f"{_pct(rec['other_cpu'])}")
    except Exception as e:  # pylint: disable=broad-except
      rec["error"] = repr(e)
      _log(f"{name} bfloat16 failed: {e!r}")
    self.results["bf16"].append(rec)
    self.finalize_mfu()

  def torch_compare(self, name, b, data, single):
    """bench/torch_resnet20.py now, then the JAX single step again (same data, fresh state)."""
    a = self.args
    jax_before = b / self.t1s[name][0]
    for threads in [int(v) for v in a.torch_threads.split(",") if v]:
      out = f"/tmp/scaling/torch_t{threads}_{os.getpid()}.json"
      cmd = [a.torch_python, os.path.join(_BENCH, "torch_resnet20.py"), "--batch_size", str(b),
             "--repeats", str(a.torch_repeats), "--warmup", "2", "--threads", str(threads),
             "--json", out]
      rec = {"cmd": " ".join(cmd), "threads": threads, "start_utc": _now()}
      rec.update(self.wait_quiet())
      rec["load_start"] = self.load()
      mon = CpuMonitor().start()
      try:
        os.makedirs(os.path.dirname(out), exist_ok=True)
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, cwd=_ROOT, capture_output=True, text=True, check=False,
                              timeout=max(120, 20 * a.budget_s))
        rec["wall_s"] = time.perf_counter() - t0
        rec["stdout_tail"] = proc.stdout[-1500:]
        if proc.returncode:
          raise RuntimeError(f"rc {proc.returncode}: {proc.stderr[-1500:]}")
        with open(out) as f:
          res = json.load(f)
        rec.update(images_per_s=res["step"]["images_per_s"], median_s=res["step"]["median_s"],
                   times_s=res["step"]["times_s"], torch=res["machine"]["torch"],
                   num_threads=res["machine"]["num_threads"])
        rec["jax_before_images_per_s"] = jax_before
        rec["jax_over_torch"] = jax_before / rec["images_per_s"]
        _log(f"[{self.elapsed():7.1f}s] torch {name} threads={rec['num_threads']}: "
             f"{rec['images_per_s']:.1f} img/s ({rec['median_s'] * 1e3:.1f} ms); JAX before "
             f"{jax_before:.1f} img/s")
      except Exception as e:  # pylint: disable=broad-except
        rec["error"] = repr(e)
        _log(f"torch run failed: {e!r}")
      rec["other_cpu"] = mon.stop()
      rec["load_end"] = self.load()
      self.results["torch"].append(rec)
    # JAX again, right after PyTorch: brackets the comparison against load drift.
    rec = {"what": "jax_after_torch", "model": name, "batch": b}
    rec.update(self.wait_quiet())
    rec["load_start"] = self.load()
    try:
      timing = self.time_single(single, data, self.t1[name], a.repeats, a.warmup, rec)
      rec.update(timing, images_per_s=b / timing["median_s"])
      self.t1s[name].append(timing["median_s"])
      for r in self.results["torch"]:
        if "jax_over_torch" in r:
          r["jax_after_over_torch"] = rec["images_per_s"] / r["images_per_s"]
      _log(f"[{self.elapsed():7.1f}s] JAX {name} m=1 again after torch: "
           f"{rec['images_per_s']:.1f} img/s, other CPU {_pct(rec['other_cpu'])}")
    except Exception as e:  # pylint: disable=broad-except
      rec["error"] = repr(e)
    rec["load_end"] = self.load()
    self.results["torch"].append(rec)
    self.save()

  def run_e2e(self):
    a = self.args
    for attempt in range(a.e2e_retries + 1):
      n = 0
      while os.path.exists(f"{a.e2e_workdir}_{n}"):
        n += 1
      workdir = f"{a.e2e_workdir}_{n}"
      os.makedirs(os.path.dirname(workdir) or ".", exist_ok=True)
      cmd = [sys.executable, "-m", "sms_jax.main", f"--config={a.e2e_config}",
             f"--workdir={workdir}"]
      rec = {"cmd": " ".join(cmd), "attempt": attempt, "start_utc": _now()}
      rec.update(self.wait_quiet())
      rec["load_start"] = self.load()
      _log(f"[{self.elapsed():7.1f}s] e2e: {rec['cmd']}")
      before = resource.getrusage(resource.RUSAGE_CHILDREN)
      mon = CpuMonitor().start()
      t0 = time.perf_counter()
      proc = subprocess.run(cmd, cwd=_ROOT, capture_output=True, text=True, check=False)
      rec["wall_s"] = time.perf_counter() - t0
      rec["other_cpu"] = mon.stop()
      after = resource.getrusage(resource.RUSAGE_CHILDREN)
      rec["user_s"] = after.ru_utime - before.ru_utime
      rec["sys_s"] = after.ru_stime - before.ru_stime
      rec["returncode"] = proc.returncode
      rec["load_end"] = self.load()
      with open(workdir + ".log", "w") as f:
        f.write(proc.stdout + proc.stderr)
      if proc.returncode == 0:
        try:
          with open(os.path.join(workdir, "results.json")) as f:
            res = json.load(f)
          rec["final"] = res.get("final")
          rec["internal_wall_time_s"] = res.get("wall_time_s")
        except Exception as e:  # pylint: disable=broad-except
          rec["results_error"] = repr(e)
      else:
        rec["stderr_tail"] = proc.stderr[-2000:]
      self.results["e2e"].append(rec)
      self.save()
      acc = (rec.get("final") or {}).get("test_accuracy")
      _log(f"[{self.elapsed():7.1f}s] e2e rc {proc.returncode}: wall {rec['wall_s']:.1f}s, "
           f"user+sys {rec['user_s'] + rec['sys_s']:.1f}s, test acc {acc}, load "
           f"{rec['load_end']}, other CPU {_pct(rec['other_cpu'])}")
      if proc.returncode == 0:
        return
      if attempt < a.e2e_retries:
        _log(f"e2e failed; retrying in {a.e2e_retry_wait_s:.0f}s:\n{proc.stderr[-800:]}")
        time.sleep(a.e2e_retry_wait_s)


# ----------------------------------------------------------------------------- tables


def _fmt_t(s):
  return f"{s:.2f} s" if s >= 1 else f"{s * 1e3:.0f} ms"


def _cond(r, start_key="load_start"):
  """'load 1-min at start / other processes' CPU share during the measurement'."""
  load = r.get(start_key)
  return f"{load[0] if load else '?'} / {_pct(r.get('other_cpu'))}"


def tables(results) -> str:
  """The results as markdown tables ('load / other': 1-min load average at the start / share of
  the machine's CPU other processes used during the measurement)."""
  out = []
  peaks = results["peaks"]
  if peaks:
    out += ["| matmul peak | when | time | GFLOP/s | load / other |", "|---|---|---|---|---|"]
    for p in peaks:
      if "error" in p:
        out.append(f"| {p['dtype']} | {p['when']} | failed: {p['error'][:80]} | | |")
      else:
        out.append(f"| {p['dtype']} n={p['n']} | {p['when']} | {p['median_s'] * 1e3:.1f} ms | "
                   f"{p['flops_per_s'] / 1e9:.1f} | {_cond(p, 'load')} |")
    out.append("")
  by_model = {}
  for r in results["configs"]:
    by_model.setdefault(r["model"], []).append(r)
  refs = {(r["model"], r["before_m"]): r for r in results.get("refs", [])}
  for name, recs in by_model.items():
    b = recs[0].get("batch")
    out += [f"**{name}** (batch {b} per candidate)", "",
            "| m | execution | time per step (all m) | images/s | efficiency m·t(1)/t | "
            "vs local t(1) | calls | compile s | memory/candidate | MFU | load / other |",
            "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in recs:
      ref = refs.get((name, r.get("m")))
      if ref and r.get("execution") == "loop" and "median_s" in ref:
        out.append(f"| {r['m']} | t(1) ref | {_fmt_t(ref['median_s'])} | "
                   f"{b / ref['median_s']:.1f} | | | {ref['n']} | | | | {_cond(ref)} |")
      mem = r.get("mem_per_candidate_bytes")
      mem_s = f"{mem / 2**20:.0f} MiB" if mem else ""
      comp = r.get("lower_compile_s")
      if r.get("execution") == "loop":
        comp_s = (f"{r['single_step_compile_s']:.1f}" if r.get("m") == 1 and
                  "single_step_compile_s" in r else "(m=1 step)")
      else:
        comp_s = f"{comp:.1f}" if comp is not None else ""
      head = f"| {r.get('m')} | {r.get('execution', '')} |"
      if "error" in r:
        out.append(f"{head} failed: {r['error'][:100]} | | | | | {comp_s} | {mem_s} | | |")
      elif "skipped" in r:
        out.append(f"{head} skipped: {r['skipped']} | | | | | {comp_s} | {mem_s} | | "
                   f"{r['load_start'][0]} |")
      else:
        calls = f"{r['n']}+{r['warmup']}w" + (" †" if r["note"] else "")
        mfu = f"{100 * r['mfu']:.1f}%" if r.get("mfu") else ""
        eff = f"{r['efficiency_vs_m1_row']:.2f}" if r.get("efficiency_vs_m1_row") else ""
        local = (f"{r['efficiency']:.2f}" if r.get("efficiency") and ref else "")
        out.append(f"{head} {_fmt_t(r['median_s'])} | {r['images_per_s']:.1f} | {eff} | "
                   f"{local} | {calls} | {comp_s} | {mem_s} | {mfu} | {_cond(r)} |")
    out.append("")
  if results["bf16"]:
    out += ["| bfloat16 compute, loop m=1 | time | images/s | speed vs float32 | compile s | "
            "MFU vs f32 peak | MFU vs bf16 peak | load / other |",
            "|---|---|---|---|---|---|---|---|"]
    for r in results["bf16"]:
      if "error" in r:
        out.append(f"| {r['model']} | failed: {r['error'][:100]} | | | | | | |")
        continue
      f32, b16 = r.get("mfu_vs_float32_peak"), r.get("mfu_vs_bfloat16_peak")
      pct = lambda v: f"{100 * v:.1f}%" if v else ""
      speed = r.get("speedup_vs_float32")
      out.append(f"| {r['model']} (batch {r['batch']}) | {_fmt_t(r['median_s'])} | "
                 f"{r['images_per_s']:.1f} | {f'{speed:.2f}x' if speed else ''} | "
                 f"{r['lower_compile_s']:.1f} | {pct(f32)} | {pct(b16)} | {_cond(r)} |")
    out.append("")
  if results["torch"]:
    out += ["| PyTorch comparison (ResNet-20, m=1) | images/s | JAX/PyTorch (JAX before; "
            "after) | load / other |", "|---|---|---|---|"]
    for r in results["torch"]:
      if r.get("what") == "jax_after_torch":
        ips = r.get("images_per_s")
        out.append(f"| JAX again, right after PyTorch | {ips:.1f} | | {_cond(r)} |"
                   if ips else f"| JAX again | failed: {r.get('error', '')[:80]} | | |")
      elif "error" in r:
        out.append(f"| torch threads={r['threads']} | failed: {r['error'][:100]} | | |")
      else:
        after = r.get("jax_after_over_torch")
        out.append(f"| PyTorch {r['torch']}, {r['num_threads']} thread(s) | "
                   f"{r['images_per_s']:.1f} | {r['jax_over_torch']:.2f}; "
                   f"{f'{after:.2f}' if after else '?'} | {_cond(r)} |")
    out.append("")
  for r in results["e2e"]:
    acc = (r.get("final") or {}).get("test_accuracy")
    out.append(f"- e2e `{r['cmd']}` (attempt {r['attempt']}): rc {r['returncode']}, wall "
               f"{r['wall_s']:.1f} s, user+sys {r['user_s'] + r['sys_s']:.1f} s, test accuracy "
               f"{acc}, load / other {_cond(r)}")
  return "\n".join(out)


def main(argv=None):
  args = parse_args(argv)
  os.makedirs("/tmp/scaling", exist_ok=True)
  bench = Bench(args)
  m = bench.results["machine"]
  _log(f"{_now()}: {m['device']} ({m['device_kind']}), {m['cpu_model']}, {m['cpu_count']} CPUs, "
       f"jax {m['jax']}, load {bench.load()}")
  bench.measure_peaks("start")
  for name in [v for v in args.models.split(",") if v]:
    try:
      bench.run_model(name)
    except Exception as e:  # pylint: disable=broad-except
      _log(f"{name} failed: {e!r}")
      bench.results["configs"].append({"model": name, "error": repr(e)})
    bench.save()
  bench.measure_peaks("end")
  if args.e2e:
    bench.run_e2e()
  bench.finalize_mfu()
  bench.results["ended_utc"] = _now()
  bench.save()
  text = tables(bench.results)
  bench.results["tables_markdown"] = text
  bench.save()
  _log("\n" + text)
  _log(f"\ntotal wall {bench.elapsed():.0f} s; load (1-min) range {bench.results['load_range']}")


if __name__ == "__main__":
  main()
