#!/usr/bin/env python
"""Issue 14's regime study on development seeds: where on the embedded data can SMS beat IMP
given m times the retraining (IMP m×)?

Pre-registered before any run (2026-12-01): development seeds 100-104 (never used before;
earlier studies used 0-19); the regime is chosen on them by the paired SMS − IMP m× difference
(largest mean, final test accuracy at 95% sparsity); it is then confirmed on seeds 1000-1009,
which bench/claims.py fixes and which this study never looks at, and the confirmation is
reported whatever it says.

Regimes (everything else is configs/mnist1d.py: the 1-D CNN, 60 pretraining epochs, 4 phases
to 0.95, m = 4, uniform soup): retraining per phase `retrain.epochs_per_phase` in {10, 30}
(IMP m× retrains 40 or 120 epochs a phase) x the candidates' variation `soup.vary` in
{seed; seed, weight decay and peak learning rate (default spreads: x2^[-1, 1], x[0.5, 1.5])}.
Every run of one seed starts from the same dense pretraining (`config.pretrained`):

  W=/tmp/regime/seed<k>
  python -m sms_jax.main --config=configs/mnist1d.py --config.seed=<k> --config.strategy=dense \
      --workdir=$W/pretrain
  python -m sms_jax.main --config=configs/mnist1d.py --config.seed=<k> --config.strategy=<s> \
      --config.pretrained=$W/pretrain --workdir=$W/<variant> <overrides>

  python bench/regime_mnist1d.py [--seeds=100:105] [--jobs=2]    # runs what is missing, then
  python bench/regime_mnist1d.py --table                           # prints the table

The confirmation runs the chosen variant on seeds 1000-1009 from the claims report's shared
pretraining (`bench/claims.py --root=/tmp/claims` first) and pairs it with that report's
imp, imp_mx and sms runs of the same seeds:

  python -m sms_jax.main --config=configs/mnist1d.py --config.seed=<k> --config.strategy=sms \
      --config.soup.vary=seed,weight_decay,learning_rate \
      --config.pretrained=/tmp/claims/prune_retrain/seed<k>/pretrain \
      --workdir=/tmp/confirm/seed<k>/sms_diverse
  python bench/regime_mnist1d.py --confirm [--jobs=2]   # runs what is missing, prints the pairs
"""

import argparse
import concurrent.futures
import json
import os
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from sms_jax import compare  # pylint: disable=g-import-not-at-top,wrong-import-position

TMP = "/tmp/regime"
CONFIG = "configs/mnist1d.py"
DIVERSE = "seed,weight_decay,learning_rate"
VARIANTS = {  # name -> (strategy, overrides)
    "imp_e10": ("imp", ["--config.retrain.epochs_per_phase=10"]),
    "imp_mx_e10": ("imp_mx", ["--config.retrain.epochs_per_phase=10"]),
    "sms_e10": ("sms", ["--config.retrain.epochs_per_phase=10"]),
    "sms_e10_diverse": ("sms", ["--config.retrain.epochs_per_phase=10",
                                f"--config.soup.vary={DIVERSE}"]),
    "imp_e30": ("imp", ["--config.retrain.epochs_per_phase=30"]),
    "imp_mx_e30": ("imp_mx", ["--config.retrain.epochs_per_phase=30"]),
    "sms_e30": ("sms", ["--config.retrain.epochs_per_phase=30"]),
    "sms_e30_diverse": ("sms", ["--config.retrain.epochs_per_phase=30",
                                f"--config.soup.vary={DIVERSE}"]),
}
# (SMS variant, its baselines): the differences the regime is chosen by (first) and reported.
PAIRS = [("sms_e10", "imp_mx_e10"), ("sms_e10_diverse", "imp_mx_e10"),
         ("sms_e30", "imp_mx_e30"), ("sms_e30_diverse", "imp_mx_e30"),
         ("sms_e10", "imp_e10"), ("sms_e10_diverse", "imp_e10"),
         ("sms_e30", "imp_e30"), ("sms_e30_diverse", "imp_e30"),
         ("imp_mx_e10", "imp_e10"), ("imp_mx_e30", "imp_e30")]


def run(seed: int, name: str, strategy: str, overrides: list[str]) -> float:
  """Runs one workdir unless finished; returns its wall time (0 if it was)."""
  workdir = os.path.join(TMP, f"seed{seed}", name)
  if os.path.exists(os.path.join(workdir, "results.json")):
    return 0.0
  shared = [] if name == "pretrain" else [
      f"--config.pretrained={os.path.join(TMP, f'seed{seed}', 'pretrain')}"]
  cmd = [sys.executable, "-m", "sms_jax.main", f"--config={CONFIG}", f"--config.seed={seed}",
         f"--config.strategy={strategy}", f"--workdir={workdir}", *shared, *overrides]
  tic = time.perf_counter()
  with open(workdir + ".log", "w") as log:
    code = subprocess.call(cmd, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
                           env=dict(os.environ, JAX_PLATFORMS="cpu"))
  wall = time.perf_counter() - tic
  print(f"seed{seed}/{name}: {'done' if code == 0 else f'FAILED ({code})'} in {wall:.0f} s",
        flush=True)
  return wall


def results(seeds: list[int]) -> dict[str, dict[int, dict]]:
  """{variant: {seed: results.json}} of the finished runs."""
  out = {}
  for name in VARIANTS:
    for seed in seeds:
      path = os.path.join(TMP, f"seed{seed}", name, "results.json")
      if os.path.exists(path):
        with open(path) as f:
          out.setdefault(name, {})[seed] = json.load(f)
  return out


def table(seeds: list[int]) -> str:
  """Markdown: each variant's final test accuracy, and the paired differences of `PAIRS`."""
  found = results(seeds)
  final = {name: {s: r["final"]["test_accuracy"] for s, r in runs.items()}
           for name, runs in found.items()}
  lines = ["| variant | n | final test accuracy (mean ± s.e.) | soup − mean candidate, last "
           "phase (points) |", "| --- | --- | --- | --- |"]
  for name, values in final.items():
    s = compare.summary(list(values.values()))
    gain = "—"
    if name.startswith("sms"):
      diffs = []
      for r in found[name].values():
        last = r["phases"][-1]
        cands = [c["test_accuracy"] for c in last["candidates"]]
        diffs.append(100 * (last["soup"]["test_accuracy"] - sum(cands) / len(cands)))
      g = compare.summary(diffs)
      gain = f"{g['mean']:+.2f} ± {g['se'] or 0:.2f}"
    lines.append(f"| {name} | {s['n']} | {s['mean']:.4f} ± {s['se'] or 0:.4f} | {gain} |")
  lines += ["", "| difference (points) | n | mean ± s.e. | 95% interval | ahead |",
            "| --- | --- | --- | --- | --- |"]
  for a, b in PAIRS:
    if a in final and b in final:
      p = compare.paired({s: 100 * v for s, v in final[a].items()},
                         {s: 100 * v for s, v in final[b].items()}, True)
      if p["n"] > 1:
        lines.append(f"| {a} − {b} | {p['n']} | {p['mean']:+.2f} ± {p['se']:.2f} | "
                     f"[{p['ci95'][0]:+.2f}, {p['ci95'][1]:+.2f}] | {p['ahead']}/{p['n']} |")
  return "\n".join(lines)


CLAIMS, CONFIRM, CONFIRM_SEEDS = "/tmp/claims/prune_retrain", "/tmp/confirm", range(1000, 1010)
CHOSEN = "sms_e10_diverse"  # The largest mean SMS - IMP mx on seeds 100-104 (-0.18 points).


def confirm(jobs: int) -> str:
  """Runs the chosen variant on the confirmation seeds; markdown of its paired differences
  with the claims report's runs of the same seeds."""
  def run_confirmation(seed):
    workdir = os.path.join(CONFIRM, f"seed{seed}", "sms_diverse")
    if not os.path.exists(os.path.join(workdir, "results.json")):
      os.makedirs(os.path.dirname(workdir), exist_ok=True)
      cmd = [sys.executable, "-m", "sms_jax.main", f"--config={CONFIG}", f"--config.seed={seed}",
             "--config.strategy=sms", f"--config.soup.vary={DIVERSE}",
             f"--config.pretrained={os.path.join(CLAIMS, f'seed{seed}', 'pretrain')}",
             f"--workdir={workdir}"]
      with open(os.path.join(CONFIRM, f"seed{seed}.log"), "w") as log:
        subprocess.check_call(cmd, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
                              env=dict(os.environ, JAX_PLATFORMS="cpu"))
  with concurrent.futures.ThreadPoolExecutor(jobs) as pool:
    list(pool.map(run_confirmation, CONFIRM_SEEDS))

  def final(path):
    out = {}
    for seed in CONFIRM_SEEDS:
      with open(path.format(seed=seed)) as f:
        out[seed] = 100 * json.load(f)["final"]["test_accuracy"]
    return out
  chosen = final(os.path.join(CONFIRM, "seed{seed}", "sms_diverse", "results.json"))
  lines = ["| difference (points), seeds 1000-1009 | mean ± s.e. | 95% interval | ahead |",
           "| --- | --- | --- | --- |"]
  for name in ("imp_mx", "imp", "sms"):
    p = compare.paired(chosen, final(os.path.join(CLAIMS, "seed{seed}", name, "results.json")),
                       True)
    lines.append(f"| {CHOSEN} − {name} | {p['mean']:+.2f} ± {p['se']:.2f} | "
                 f"[{p['ci95'][0]:+.2f}, {p['ci95'][1]:+.2f}] | {p['ahead']}/{p['n']} |")
  return "\n".join(lines)


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--seeds", default="100:105")
  parser.add_argument("--jobs", type=int, default=2)
  parser.add_argument("--variants", default="", help="comma-separated; default: all")
  parser.add_argument("--table", action="store_true")
  parser.add_argument("--confirm", action="store_true",
                      help=f"run {CHOSEN} on seeds 1000-1009 and pair it with the claims runs")
  args = parser.parse_args()
  if args.confirm:
    print(confirm(args.jobs))
    return
  first, stop = map(int, args.seeds.split(":"))
  seeds = list(range(first, stop))
  if not args.table:
    names = args.variants.split(",") if args.variants else list(VARIANTS)
    for seed in seeds:
      os.makedirs(os.path.join(TMP, f"seed{seed}"), exist_ok=True)
    with concurrent.futures.ThreadPoolExecutor(args.jobs) as pool:
      list(pool.map(lambda s: run(s, "pretrain", "dense", []), seeds))
      jobs = [(s, n) for n in names for s in seeds]
      list(pool.map(lambda job: run(job[0], job[1], *VARIANTS[job[1]]), jobs))
  print(table(seeds))


if __name__ == "__main__":
  main()
