"""Dense start vs random sparse start (density 0.3) on MNIST-1D, both pruned to 0.95 sparsity.

Usage: python bench/random_start_mnist1d.py START STRATEGY SEEDS...   (runs sequentially)
       python bench/random_start_mnist1d.py --table        (rewrites bench/random_start_mnist1d.md)
START is `dense` (configs/mnist1d.py) or a layerwise distribution for
configs/random_start_mnist1d.py (uniform, er, erk, balanced, pyramidal). STRATEGY is sms or imp.
Each run is the exact command below in a fresh workdir /tmp/random_start/<start>_<strategy>_s<seed>
(nothing reused between runs); records go to /tmp/random_start/records.jsonl (one line per run).
  dense:  JAX_PLATFORMS=cpu python -m sms_jax.main --config=configs/mnist1d.py --workdir=W
            --config.seed=S --config.strategy=T
  random: JAX_PLATFORMS=cpu python -m sms_jax.main --config=configs/random_start_mnist1d.py
            --workdir=W --config.seed=S --config.strategy=T --config.init_mask.distribution=D
"""

import json
import os
import shutil
import sys

from machine import run_experiment  # bench/machine.py

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TMP = "/tmp/random_start"
RECORDS = os.path.join(TMP, "records.jsonl")
MD = os.path.join(ROOT, "bench", "random_start_mnist1d.md")
PY = sys.executable
STARTS = ["dense", "balanced", "erk", "uniform", "pyramidal", "er"]


def command(start, strategy, seed, workdir):
  if start == "dense":
    cfg, extra = "configs/mnist1d.py", []
  else:
    cfg, extra = "configs/random_start_mnist1d.py", [f"--config.init_mask.distribution={start}"]
  return [PY, "-m", "sms_jax.main", f"--config={cfg}", f"--workdir={workdir}",
          f"--config.seed={seed}", f"--config.strategy={strategy}", *extra]


def load():
  if not os.path.exists(RECORDS):
    return []
  with open(RECORDS) as f:
    return [json.loads(line) for line in f if line.strip()]


def run_one(start, strategy, seed):
  if any(r["start"] == start and r["strategy"] == strategy and r["seed"] == seed for r in load()):
    return
  workdir = os.path.join(TMP, f"{start}_{strategy}_s{seed}")
  shutil.rmtree(workdir, ignore_errors=True)
  cmd = command(start, strategy, seed, workdir)
  res, wall = run_experiment(cmd, workdir, ROOT)
  init = res.get("init_mask") or {}
  rec = {"start": start, "strategy": strategy, "seed": seed,
         "command": " ".join(["JAX_PLATFORMS=cpu"] + cmd),
         "final_test_accuracy": res["final"]["test_accuracy"],
         "final_sparsity": res["final"]["sparsity"],
         "init_density": init.get("achieved_density"),
         "dense_test_accuracy": (res.get("dense") or {}).get("test_accuracy"),
         "wall_s": wall}
  with open(RECORDS, "a") as f:
    f.write(json.dumps(rec) + "\n")
  print(f"{start:10s} {strategy} s{seed}: final {rec['final_test_accuracy']:.4f} "
        f"sparsity {rec['final_sparsity']:.5f} init_density {rec['init_density']} "
        f"wall {wall:.1f}s", flush=True)


def table():
  recs = load()
  seeds = sorted({r["seed"] for r in recs})
  lines = ["| start | strategy | " + " | ".join(f"seed {s}" for s in seeds) +
           " | mean | pretrain test (mean) | final sparsity (min/max) | init density |"
           " wall s (mean) |",
           "|---" * (len(seeds) + 7) + "|"]
  for start in STARTS:
    for strategy in ("imp", "sms"):
      rs = {r["seed"]: r for r in recs if r["start"] == start and r["strategy"] == strategy}
      if not rs:
        continue
      accs = [rs[s]["final_test_accuracy"] for s in seeds if s in rs]
      sp = [r["final_sparsity"] for r in rs.values()]
      dens = sorted({round(r["init_density"], 4) for r in rs.values()
                     if r["init_density"] is not None})
      cells = [f"{rs[s]['final_test_accuracy']:.4f}" if s in rs else "-" for s in seeds]
      lines.append(f"| {start} | {strategy} | " + " | ".join(cells) +
                   f" | {sum(accs) / len(accs):.4f} (n={len(accs)}) | "
                   f"{sum(r['dense_test_accuracy'] for r in rs.values()) / len(rs):.4f} | "
                   f"{min(sp):.4f}/{max(sp):.4f} | {', '.join(map(str, dens)) or '-'} | "
                   f"{sum(r['wall_s'] for r in rs.values()) / len(rs):.0f} |")
  ok = all(abs(r["final_sparsity"] - 0.95) <= 1e-3 for r in recs)
  runs = "\n".join(f"- `{r['command']}` -> test {r['final_test_accuracy']:.4f}, sparsity "
                   f"{r['final_sparsity']:.5f}, init density {r['init_density']}, "
                   f"wall {r['wall_s']:.1f} s" for r in recs)
  layers = []
  for start in STARTS[1:]:
    path = os.path.join(TMP, f"{start}_imp_s0", "results.json")
    if os.path.exists(path):
      with open(path) as f:
        init = json.load(f)["init_mask"]
      layers.append(f"- {start}: " + ", ".join(
          f"{l['name'].split('/')[0]} {l['nonzero'] / l['size']:.3f}" for l in init["layers"]))
  return lines, ok, runs, layers


if __name__ == "__main__":
  if sys.argv[1] == "--table":
    lines, ok, runs, layers = table()
    print("\n".join(lines))
    print("\n".join(layers))
    print(runs)
    print("all final sparsities within 1e-3 of 0.95:", ok)
  else:
    start, strategy = sys.argv[1], sys.argv[2]
    assert start in STARTS and strategy in ("sms", "imp"), (start, strategy)
    os.makedirs(TMP, exist_ok=True)
    for seed in sys.argv[3:]:
      run_one(start, strategy, int(seed))
