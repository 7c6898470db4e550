"""The README's main job against a plain PyTorch script of the same job, end to end (issue 17).

Usage: python bench/e2e.py --torch-python /path/to/torch-venv/bin/python [--rounds 3]
                           [--peer ../shared/peers/torch_sms_mnist1d.py] [--json out.json]

Runs, alternating, `python -m sms_jax.main --config=configs/mnist1d.py --workdir=<fresh>`
(checkpoints, evaluation, OOD sets and plots on, as users run it) and the peer
`../shared/peers/torch_sms_mnist1d.py` (the same 1-D CNN, split, batch, 60 dense epochs, 4 phases
x 4 candidates x 10 epochs, soups with BatchNorm recalibration, per-epoch validation; no
checkpoints, OOD or plots), after one unrecorded round of each that warms the compilation
cache and the OS file cache. Reports each side's median wall and CPU seconds (the child
process's user + system time) and the ratio of the medians, sms_jax over PyTorch. The peer
reads MNIST-1D from an .npz written here from the same generator (mnist1d's defaults).
The PyTorch side needs its own venv: `python3 -m venv V && V/bin/pip install torch==2.13.0
numpy`.
"""

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time

from machine import cpu_model  # bench/machine.py

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PEER = os.path.join(os.path.dirname(ROOT), "shared", "peers", "torch_sms_mnist1d.py")
_NPZ = ("from mnist1d.data import get_dataset_args, make_dataset; import numpy as np; "
        "d = make_dataset(get_dataset_args()); np.savez({path!r}, x=d['x'], y=d['y'], "
        "xt=d['x_test'], yt=d['y_test'])")


def timed(cmd: list[str], env: dict[str, str]) -> tuple[float, float, str]:
  """Runs `cmd` from the repository root: (wall s, CPU s of the child, its stdout)."""
  before = resource.getrusage(resource.RUSAGE_CHILDREN)
  tic = time.perf_counter()
  proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, check=False)
  wall = time.perf_counter() - tic
  after = resource.getrusage(resource.RUSAGE_CHILDREN)
  if proc.returncode:
    raise RuntimeError(f"{' '.join(cmd)} failed:\n{proc.stderr[-2000:]}")
  cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
  return wall, cpu, proc.stdout


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
  parser.add_argument("--torch-python", required=True, help="python of a venv with torch")
  parser.add_argument("--peer", default=PEER, help="the PyTorch script (default: %(default)s)")
  parser.add_argument("--rounds", type=int, default=3)
  parser.add_argument("--json", default="")
  args = parser.parse_args()
  scratch = tempfile.mkdtemp(prefix="e2e_")
  npz = os.path.join(scratch, "mnist1d.npz")
  subprocess.run([sys.executable, "-c", _NPZ.format(path=npz)], check=True)
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  ours = lambda k: [sys.executable, "-m", "sms_jax.main", "--config=configs/mnist1d.py",
                    f"--workdir={os.path.join(scratch, f'run{k}')}"]
  peer = [args.torch_python, args.peer, npz]
  timed(ours("warm"), env)
  timed(peer, env)
  rows = {"sms_jax": [], "pytorch": []}
  for k in range(args.rounds):
    for name, cmd in (("sms_jax", ours(k)), ("pytorch", peer)):
      wall, cpu, out = timed(cmd, env)
      rows[name].append({"wall_s": round(wall, 2), "cpu_s": round(cpu, 2),
                         "last_line": out.strip().splitlines()[-1]})
      print(f"round {k + 1} {name:8s} wall {wall:6.2f} s  cpu {cpu:6.2f} s", flush=True)
  median = {name: {key: statistics.median(r[key] for r in runs) for key in ("wall_s", "cpu_s")}
            for name, runs in rows.items()}
  ratio = median["sms_jax"]["wall_s"] / median["pytorch"]["wall_s"]
  report = {"machine": cpu_model(), "cores": os.cpu_count(), "rounds": rows, "median": median,
            "wall_ratio": round(ratio, 3)}
  print(json.dumps(report["median"]), f"\nwall ratio sms_jax / pytorch: {ratio:.2f} "
        f"(target 0.7)")
  if args.json:
    with open(args.json, "w") as f:
      json.dump(report, f, indent=1)


if __name__ == "__main__":
  main()
