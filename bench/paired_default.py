"""The default job's wall time at another commit against this checkout, paired.

  python bench/paired_default.py --base=9b649ff [--rounds=4]

Checks out `--base` into a temporary git worktree and runs `configs/mnist1d.py` there and
here, alternating which goes first each round, with this checkout's Python environment (the
worktree's package first on PYTHONPATH). Round 0 warms the compilation caches and is left
out. Prints each run's wall time and final test accuracy, the medians and their ratio.
"""

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_default(checkout: str, workdir: str) -> tuple[float, float]:
  """(wall seconds, final test accuracy) of the default job from `checkout`."""
  env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=checkout)
  tic = time.perf_counter()
  subprocess.run([sys.executable, "-m", "sms_jax.main", "--config=configs/mnist1d.py",
                  f"--workdir={workdir}"], cwd=checkout, env=env, check=True,
                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
  wall = time.perf_counter() - tic
  with open(os.path.join(workdir, "results.json")) as f:
    accuracy = json.load(f)["final"]["test_accuracy"]
  shutil.rmtree(workdir)
  return wall, accuracy


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--base", required=True, help="the commit to compare against")
  parser.add_argument("--rounds", type=int, default=4)
  args = parser.parse_args()
  scratch = tempfile.mkdtemp(prefix="paired_default_")
  base = os.path.join(scratch, "base")
  subprocess.run(["git", "worktree", "add", "--detach", base, args.base], cwd=ROOT, check=True,
                 capture_output=True)
  try:
    times = {"base": [], "here": []}
    for k in range(args.rounds):
      for name in (("base", "here") if k % 2 == 0 else ("here", "base")):
        wall, accuracy = run_default(base if name == "base" else ROOT,
                                     os.path.join(scratch, f"{name}{k}"))
        print(f"round {k} {name}: {wall:.2f} s, test accuracy {accuracy}", flush=True)
        if k:
          times[name].append(wall)
    medians = {name: statistics.median(t) for name, t in times.items()}
    print(f"medians: base {medians['base']:.2f} s, here {medians['here']:.2f} s; "
          f"here / base {medians['here'] / medians['base']:.3f}")
  finally:
    subprocess.run(["git", "worktree", "remove", "--force", base], cwd=ROOT, check=False)
    shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
  main()
