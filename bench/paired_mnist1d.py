#!/usr/bin/env python
"""Named variants of runs on the embedded data, paired by seed: final test accuracy per
variant (mean +- standard error) and each variant's paired difference from a baseline.

A study is a dict of variants, each a config file and its overrides; every run is

  JAX_PLATFORMS=cpu python -m sms_jax.main --config=<file> --workdir=<root>/<variant>-s<seed>
    --config.seed=<seed> <overrides>

in a fresh workdir (a finished one, with results.json, is reused). Records go to
<root>/records.jsonl; `--table` prints the markdown table.

  python bench/paired_mnist1d.py --study=methods --seeds=0:5 [--variants=imp,sms] [--table]
  python bench/paired_mnist1d.py --study=bn_recalibration --seeds=0:5 --table
"""

import argparse
import json
import os
import shutil
import sys

import numpy as np

from machine import run_experiment  # bench/machine.py

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

DEFAULT = "configs/mnist1d.py"
STUDIES = {
    # Pruning methods of the SMS paper and their SMS versions, all to 95% sparsity.
    "methods": {
        "baseline": "imp",
        "variants": {
            "imp": (DEFAULT, ["--config.strategy=imp"]),
            "imp_mx": (DEFAULT, ["--config.strategy=imp_mx"]),
            "sms": (DEFAULT, ["--config.strategy=sms"]),
            "gmp": ("configs/sms_gmp_mnist1d.py", ["--config.strategy=gmp"]),
            "gmp_mx": ("configs/sms_gmp_mnist1d.py", ["--config.strategy=gmp_mx"]),
            "sms_gmp": ("configs/sms_gmp_mnist1d.py", ["--config.strategy=sms_gmp"]),
            "dpf": ("configs/sms_dpf_mnist1d.py", ["--config.strategy=dpf"]),
            "sms_dpf": ("configs/sms_dpf_mnist1d.py", ["--config.strategy=sms_dpf"]),
            "bimp": ("configs/bimp_mnist1d.py", ["--config.strategy=bimp"]),
            "sms_bimp": ("configs/bimp_mnist1d.py", ["--config.strategy=sms_bimp"]),
            "imp_avg_reprune": (DEFAULT, ["--config.strategy=imp_avg_reprune"]),
        },
    },
    # Which models a phase recalibrates, and how (soup.bn_recalibration*). Recalibration
    # changes no weight (train-mode passes use batch statistics), so a uniform soup's final
    # accuracy is the same with `all` and `soups`; IMP's model is where `all` differs.
    "bn_recalibration": {
        "baseline": "sms_all_cumulative",
        "variants": {
            "sms_all_cumulative": (DEFAULT, ["--config.strategy=sms"]),
            "sms_all_ema": (DEFAULT, ["--config.strategy=sms",
                                      "--config.soup.bn_recalibration_average=ema"]),
            "imp_all_cumulative": (DEFAULT, ["--config.strategy=imp"]),
            "imp_none": (DEFAULT, ["--config.strategy=imp", "--config.soup.bn_recalibration=none"]),
        },
    },
}


def records(root: str) -> list[dict]:
  path = os.path.join(root, "records.jsonl")
  if not os.path.exists(path):
    return []
  with open(path) as f:
    return [json.loads(line) for line in f if line.strip()]


def run_one(root: str, name: str, config: str, overrides: list[str], seed: int) -> None:
  """Runs one variant and seed unless recorded; appends its record."""
  if any(r["variant"] == name and r["seed"] == seed for r in records(root)):
    return
  workdir = os.path.join(root, f"{name}-s{seed}")
  shutil.rmtree(workdir, ignore_errors=True)
  cmd = [sys.executable, "-m", "sms_jax.main", f"--config={config}", f"--workdir={workdir}",
         f"--config.seed={seed}", *overrides]
  results, wall = run_experiment(cmd, workdir, ROOT)
  record = {"variant": name, "seed": seed, "command": " ".join(cmd[1:]),
            "final_test_accuracy": results["final"]["test_accuracy"],
            "final_sparsity": results["final"]["sparsity"], "wall_s": wall}
  with open(os.path.join(root, "records.jsonl"), "a") as f:
    f.write(json.dumps(record) + "\n")
  print(f"{name} s{seed}: test {record['final_test_accuracy']:.4f} sparsity "
        f"{record['final_sparsity']:.5f} wall {wall:.1f} s", flush=True)


def table(root: str, study: dict, seeds: list[int]) -> str:
  """The markdown table of `study` over `seeds` (runs recorded for all of them)."""
  by = {(r["variant"], r["seed"]): r for r in records(root)}
  accuracy = lambda v: np.asarray([by[v, s]["final_test_accuracy"] for s in seeds])
  base = study["baseline"]
  lines = [f"| variant | final test accuracy, mean ± s.e. | − {base} (points), paired | "
           "ahead | final sparsity (min/max) | wall s (mean) |",
           "| --- | --- | --- | --- | --- | --- |"]
  n = len(seeds)
  for name in study["variants"]:
    if not all((name, s) in by for s in seeds):
      continue
    acc = accuracy(name)
    cells = [f"{acc.mean():.4f} ± {acc.std(ddof=1) / np.sqrt(n):.4f}"]
    if name != base and all((base, s) in by for s in seeds):
      diff = 100 * (acc - accuracy(base))
      cells += [f"{diff.mean():+.2f} ± {diff.std(ddof=1) / np.sqrt(n):.2f}",
                f"{int((diff > 0).sum())}/{n}"]
    else:
      cells += ["—", "—"]
    sparsity = [by[name, s]["final_sparsity"] for s in seeds]
    cells += [f"{min(sparsity):.4f}/{max(sparsity):.4f}",
              f"{np.mean([by[name, s]['wall_s'] for s in seeds]):.0f}"]
    lines.append(f"| {name} | " + " | ".join(cells) + " |")
  return "\n".join(lines) + f"\n\nSeeds {seeds[0]}-{seeds[-1]} (n = {n}), paired by seed."


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--study", choices=sorted(STUDIES), required=True)
  parser.add_argument("--seeds", default="0:5", help="first:stop, e.g. 0:5 for seeds 0-4")
  parser.add_argument("--variants", default="", help="comma-separated; default: all")
  parser.add_argument("--root", default="")
  parser.add_argument("--table", action="store_true", help="print the table, run nothing")
  args = parser.parse_args()
  study = STUDIES[args.study]
  root = args.root or f"/tmp/paired_{args.study}"
  first, stop = (int(v) for v in args.seeds.split(":"))
  seeds = list(range(first, stop))
  if args.table:
    print(table(root, study, seeds))
    return
  names = args.variants.split(",") if args.variants else list(study["variants"])
  unknown = [n for n in names if n not in study["variants"]]
  if unknown:
    sys.exit(f"unknown variants {unknown}; allowed: {', '.join(study['variants'])}")
  os.makedirs(root, exist_ok=True)
  for seed in seeds:
    for name in names:
      run_one(root, name, *study["variants"][name], seed)
  print(table(root, study, seeds))


if __name__ == "__main__":
  main()
