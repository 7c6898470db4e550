"""Each sparsification method of the random-pruning paper started dense and from random masks.

Usage: python bench/random_start_methods.py run [--jobs N] [--seeds 0,1,2,3,4]
       python bench/random_start_methods.py table    (rewrites bench/random_start_methods.md)

Every run is `python -m sms_jax.main --config=configs/random_start_mnist1d.py:METHOD,START
--config.seed=S --workdir=W` at the config's shipped settings (see its docstring), in a fresh
workdir W = /tmp/random_start_methods/<method>_<start>_s<seed> (nothing shared between runs);
one line per finished run goes to /tmp/random_start_methods/records.jsonl, and `run` skips the
runs already recorded. Runs go seed by seed, so an interrupted study has whole seeds.
The starts are dense, balanced and pyramidal at density 0.3 (RigL, its soup sms_rigl and
Edge-Popup have no dense start: RigL keeps its start density, Edge-Popup never trains weights).
"""

import argparse
import concurrent.futures
import json
import os
import shutil
import statistics
import subprocess
import sys

from machine import cpu_model, run_experiment  # bench/machine.py

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TMP = "/tmp/random_start_methods"
RECORDS = os.path.join(TMP, "records.jsonl")
MD = os.path.join(ROOT, "bench", "random_start_methods.md")
METHODS = ("lth", "snip", "synflow", "granet", "rigl", "edge_popup", "sms_granet", "sms_rigl")
STARTS = ("dense", "balanced", "pyramidal")
NO_DENSE_START = ("rigl", "sms_rigl", "edge_popup")


def grid(seeds: list[int]) -> list[tuple[str, str, int]]:
  """(method, start, seed) of every run, seed-major."""
  return [(method, start, seed) for seed in seeds for method in METHODS for start in STARTS
          if not (start == "dense" and method in NO_DENSE_START)]


def command(method: str, start: str, seed: int, workdir: str) -> list[str]:
  return [sys.executable, "-m", "sms_jax.main",
          f"--config=configs/random_start_mnist1d.py:{method},{start}",
          f"--config.seed={seed}", f"--workdir={workdir}"]


def load() -> list[dict]:
  if not os.path.exists(RECORDS):
    return []
  with open(RECORDS) as f:
    return [json.loads(line) for line in f if line.strip()]


def run_one(method: str, start: str, seed: int, commit: str) -> dict:
  """Runs one (method, start, seed) in a fresh workdir; returns its record."""
  workdir = os.path.join(TMP, f"{method}_{start}_s{seed}")
  shutil.rmtree(workdir, ignore_errors=True)
  cmd = command(method, start, seed, workdir)
  results, wall = run_experiment(cmd, workdir, ROOT)
  return {"method": method, "start": start, "seed": seed, "commit": commit,
          "command": " ".join(["JAX_PLATFORMS=cpu"] + cmd[1:]),
          "test_accuracy": results["final"]["test_accuracy"],
          "sparsity": results["final"]["sparsity"], "wall_s": round(wall, 1)}


def run(seeds: list[int], jobs: int) -> None:
  os.makedirs(TMP, exist_ok=True)
  commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, text=True,
                          capture_output=True, check=True).stdout.strip()
  done = {(r["method"], r["start"], r["seed"]) for r in load()}
  todo = [key for key in grid(seeds) if key not in done]
  print(f"{len(todo)} runs to do at {commit}, {jobs} at a time", flush=True)
  with concurrent.futures.ThreadPoolExecutor(jobs) as pool:
    futures = {pool.submit(run_one, *key, commit): key for key in todo}
    for future in concurrent.futures.as_completed(futures):
      try:
        record = future.result()
      except RuntimeError as error:  # Reported, and run again by the next `run`.
        print(f"FAILED {futures[future]}: {str(error)[-500:]}", flush=True)
        continue
      with open(RECORDS, "a") as f:
        f.write(json.dumps(record) + "\n")
      print(f"{record['method']:10s} {record['start']:9s} s{record['seed']}: test "
            f"{record['test_accuracy']:.4f} sparsity {record['sparsity']:.5f} "
            f"wall {record['wall_s']:.0f} s", flush=True)


def mean_se(values: list[float]) -> str:
  """'mean ± standard error' in accuracy points (values are fractions)."""
  mean = 100 * statistics.fmean(values)
  se = 100 * statistics.stdev(values) / len(values) ** 0.5 if len(values) > 1 else float("nan")
  return f"{mean:.2f} ± {se:.2f}"


def table() -> str:
  """The markdown report of the recorded runs."""
  records = load()
  by_key = {(r["method"], r["start"], r["seed"]): r for r in records}
  seeds = sorted({r["seed"] for r in records})
  lines = ["| method | " + " | ".join(f"from {s}" for s in STARTS) + " | "
           + " | ".join(f"{s} − dense (paired)" for s in STARTS[1:])
           + " | final sparsity (min/max) | wall s (mean) | seeds |",
           "|---" * (2 * len(STARTS) + 3) + "|"]
  for method in METHODS:
    cells, diffs, rows = [], [], []
    for start in STARTS:
      accs = [by_key[method, start, s]["test_accuracy"] for s in seeds
              if (method, start, s) in by_key]
      rows += [by_key[method, start, s] for s in seeds if (method, start, s) in by_key]
      cells.append(mean_se(accs) if accs else "-")
    for start in STARTS[1:]:
      paired = [by_key[method, start, s]["test_accuracy"]
                - by_key[method, "dense", s]["test_accuracy"] for s in seeds
                if (method, start, s) in by_key and (method, "dense", s) in by_key]
      diffs.append(mean_se(paired) if paired else "-")
    if not rows:
      continue
    sparsities = [r["sparsity"] for r in rows]
    lines.append(f"| {method} | " + " | ".join(cells) + " | " + " | ".join(diffs) +
                 f" | {min(sparsities):.4f}/{max(sparsities):.4f} | "
                 f"{statistics.fmean(r['wall_s'] for r in rows):.0f} | "
                 f"{len({r['seed'] for r in rows})} |")
  pairs = ["| a − b (points, paired by seed) | " + " | ".join(f"from {s}" for s in STARTS) + " |",
           "|---" * (len(STARTS) + 1) + "|"]
  for a, b in (("sms_granet", "granet"), ("sms_rigl", "rigl")):
    cells = []
    for start in STARTS:
      paired = [by_key[a, start, s]["test_accuracy"] - by_key[b, start, s]["test_accuracy"]
                for s in seeds if (a, start, s) in by_key and (b, start, s) in by_key]
      cells.append(f"{mean_se(paired)} ({sum(d > 0 for d in paired)}/{len(paired)} ahead)"
                   if paired else "-")
    pairs.append(f"| {a} − {b} | " + " | ".join(cells) + " |")
  commits = sorted({r["commit"] for r in records})
  return "\n".join([
      "# Each method started dense and from random masks at density 0.3 (MNIST-1D)", "",
      __doc__.split("\n\n", 1)[1].strip(), "",
      f"Machine: {cpu_model()}, CPU only. Commit(s) of the runs: {', '.join(commits)}. "
      f"Seeds: {', '.join(map(str, seeds))}.", "",
      "Final test accuracy in % (mean ± standard error over seeds); the differences are "
      "paired by seed, in points.", "", *lines, "",
      "The soups against their methods:", "", *pairs, "",
      "## Runs", "",
      *(f"- `{r['command']}` -> test {r['test_accuracy']:.4f}, sparsity {r['sparsity']:.5f}, "
        f"{r['wall_s']:.0f} s" for r in records), ""])


if __name__ == "__main__":
  parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
  parser.add_argument("what", choices=("run", "table"))
  parser.add_argument("--jobs", type=int, default=1)
  parser.add_argument("--seeds", default="0,1,2,3,4")
  args = parser.parse_args()
  if args.what == "run":
    run([int(s) for s in args.seeds.split(",")], args.jobs)
  else:
    with open(MD, "w") as f:
      f.write(table())
    print(open(MD).read())
