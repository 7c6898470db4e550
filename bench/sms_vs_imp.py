#!/usr/bin/env python
"""SMS against plain IMP on the embedded default, paired by seed, at the current commit.

Runs (or reuses, from `--root`) `configs/mnist1d.py` as `sms` and as `--config.strategy=imp`
for each seed, and prints the paired difference of their final test accuracies (mean +-
standard error, in points) over the seed ranges of bench/RESULTS.md (0-9, 10-19, 0-19):

  JAX_PLATFORMS=cpu python bench/sms_vs_imp.py --root /tmp/sms_vs_imp
"""

import argparse
import json
import os
import subprocess
import sys

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def final_accuracy(root: str, strategy: str, seed: int) -> float:
  """Final test accuracy of one run, made now unless `root` holds it already."""
  workdir = os.path.join(root, f"main-{strategy}-{seed}")
  if not os.path.exists(os.path.join(workdir, "results.json")):
    with open(workdir + ".log", "w") as log:
      subprocess.run([sys.executable, "-m", "sms_jax.main", "--config=configs/mnist1d.py",
                      f"--workdir={workdir}", f"--config.strategy={strategy}",
                      f"--config.seed={seed}"], cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
                     check=True)
  with open(os.path.join(workdir, "results.json")) as f:
    return json.load(f)["final"]["test_accuracy"]


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--root", default="/tmp/sms_vs_imp")
  args = parser.parse_args()
  os.makedirs(args.root, exist_ok=True)
  print("| seeds | SMS | IMP | SMS - IMP (points) | SMS wins |")
  print("| --- | --- | --- | --- | --- |")
  for first, last in ((0, 9), (10, 19), (0, 19)):
    seeds = range(first, last + 1)
    sms = np.asarray([final_accuracy(args.root, "sms", s) for s in seeds])
    imp = np.asarray([final_accuracy(args.root, "imp", s) for s in seeds])
    diff = 100 * (sms - imp)
    print(f"| {first}-{last} | {sms.mean():.4f} | {imp.mean():.4f} | {diff.mean():+.2f} +- "
          f"{diff.std(ddof=1) / np.sqrt(len(diff)):.2f} | {int((diff > 0).sum())}/{len(diff)} |")


if __name__ == "__main__":
  main()
