#!/usr/bin/env python
"""The redesigned engine against the code before it, paired by seed on the embedded default.

The engine of 2026-11-30 trains a phase's candidates in one program; XLA fuses that program
differently from the separately dispatched steps before, so BatchNorm running statistics
differ in their last bits and a single run's final accuracy moves by up to about a point.
This runs `configs/mnist1d.py` (SMS, and `--config.strategy=imp`) with both versions for the
same seeds and reports the paired differences, so that one can tell noise from a change.

  git worktree add /tmp/before 83a2764      # the commit before the redesign
  JAX_PLATFORMS=cpu python bench/engine_seeds.py --before /tmp/before --seeds 1-8 \\
      --root /tmp/engine_seeds

Runs already in `--root` are reused; the table goes to stdout (bench/RESULTS.md has it).
"""

import argparse
import json
import os
import subprocess
import sys

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run(repo: str, workdir: str, strategy: str, seed: int) -> float:
  """Final test accuracy of one run of `repo`'s code (reused when already done)."""
  path = os.path.join(workdir, "results.json")
  if not os.path.exists(path):
    env = dict(os.environ, PYTHONPATH=repo, JAX_PLATFORMS=os.environ.get("JAX_PLATFORMS", "cpu"))
    with open(workdir + ".log", "w") as log:
      subprocess.run([sys.executable, "-m", "sms_jax.main", "--config=configs/mnist1d.py",
                      f"--workdir={workdir}", f"--config.strategy={strategy}",
                      f"--config.seed={seed}"], cwd=repo, env=env, stdout=log,
                     stderr=subprocess.STDOUT, check=True)
  with open(path) as f:
    return json.load(f)["final"]["test_accuracy"]


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--before", required=True, help="a checkout of the code before")
  parser.add_argument("--after", default=ROOT, help="a checkout of the code after")
  parser.add_argument("--seeds", default="1-8", help="first-last")
  parser.add_argument("--root", default="/tmp/engine_seeds")
  args = parser.parse_args()
  first, last = map(int, args.seeds.split("-"))
  seeds = range(first, last + 1)
  os.makedirs(args.root, exist_ok=True)
  print("| strategy | before (mean) | after (mean) | after - before, paired (points) | "
        "after ahead | per seed (before -> after) |")
  print("|---|---|---|---|---|---|")
  for strategy in ("sms", "imp"):
    acc = {version: [run(repo, os.path.join(args.root, f"{version}-{strategy}-{seed}"),
                         strategy, seed) for seed in seeds]
           for version, repo in (("baseline", args.before), ("main", args.after))}
    before, after = np.asarray(acc["baseline"]), np.asarray(acc["main"])
    diff = 100 * (after - before)
    se = diff.std(ddof=1) / np.sqrt(len(diff))
    pairs = ", ".join(f"{b:.3f}->{a:.3f}" for b, a in zip(before, after))
    print(f"| {strategy} | {before.mean():.4f} | {after.mean():.4f} | {diff.mean():+.2f} +- "
          f"{se:.2f} | {int((diff > 0).sum())} of {len(diff)} ({int((diff == 0).sum())} equal) | "
          f"{pairs} |")


if __name__ == "__main__":
  main()
