#!/usr/bin/env python
"""Reliability of the command line, measured: interruptions, concurrent runs, a full disk.

On `configs/mnist1d.py:quick` (a whole SMS run, about 10 s):
- kills: an uninterrupted reference run, then runs killed with SIGKILL at `--kills` moments
  spread over its wall time, and one each with SIGINT and SIGTERM, each resumed with the same
  command; a survival is a resumed run whose results (final, history and phases without
  timings) equal the reference's, with no traceback and no checkpoint set aside;
- concurrency: three runs on one workdir started 1.7 s apart: one finishes, the others exit 2
  naming it, and nothing is set aside;
- full disk (root only: small tmpfs mounts): each size ends in exit 3 and one line, and the
  workdir, copied to a roomy disk, resumes to the reference's results;
- the cost of checkpoint integrity: saving a 90 MB state (ResNet-18's parameters and momentum)
  against the part spent copying it to the host, checking it is finite and checksumming it.

  JAX_PLATFORMS=cpu python bench/reliability.py --root /tmp/reliability
"""

import argparse
import glob
import json
import os
import shutil
import signal
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG = "--config=configs/mnist1d.py:quick"


def start(workdir: str, stdout=subprocess.PIPE) -> subprocess.Popen:
  env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONUNBUFFERED="1")
  return subprocess.Popen([sys.executable, "-m", "sms_jax.main", CONFIG, f"--workdir={workdir}"],
                          cwd=ROOT, env=env, stdout=stdout, stderr=subprocess.PIPE, text=True)


def finish(workdir: str) -> tuple[int, str]:
  proc = start(workdir)
  _, err = proc.communicate(timeout=600)
  return proc.returncode, err


def comparable(workdir: str) -> dict:
  """results.json without timings."""
  with open(os.path.join(workdir, "results.json")) as f:
    results = json.load(f)

  def strip(value):
    if isinstance(value, dict):
      return {k: strip(v) for k, v in value.items() if "time" not in k}
    if isinstance(value, list):
      return [strip(v) for v in value]
    return value

  return strip({k: results[k] for k in ("final", "history", "phases", "dense")})


def set_aside(workdir: str) -> list[str]:
  return glob.glob(os.path.join(workdir, "checkpoints", "*.corrupt"))


def interruptions(root: str, kills: int, reference: dict, wall_s: float) -> None:
  moments = [("SIGKILL", 2.0 + (wall_s - 3.0) * k / max(1, kills - 1)) for k in range(kills)]
  moments += [("SIGINT", wall_s * 0.6), ("SIGTERM", wall_s * 0.6)]
  survived = interrupted = 0
  for k, (name, at) in enumerate(moments):
    workdir = os.path.join(root, f"kill{k}")
    proc = start(workdir, stdout=subprocess.DEVNULL)
    time.sleep(at)
    proc.send_signal(getattr(signal, name))
    _, first_err = proc.communicate(timeout=600)
    code, err = finish(workdir)
    ok = (code == 0 and comparable(workdir) == reference and not set_aside(workdir)
          and "Traceback" not in err + first_err)
    if proc.returncode != 0:  # The signal came before the run ended.
      interrupted += 1
      survived += ok
    print(f"  {name} at {at:4.1f} s (exit {proc.returncode}): resumed, exit {code}, "
          f"{'identical results' if ok else 'FAILED'}", flush=True)
  print(f"interrupted runs that resumed to identical results: {survived} of {interrupted}")


def concurrency(root: str, reference: dict) -> None:
  workdir = os.path.join(root, "concurrent")
  procs = []
  for _ in range(3):
    procs.append(start(workdir, stdout=subprocess.DEVNULL))
    time.sleep(1.7)
  outcomes = [(p.wait(timeout=600), p.stderr.read().strip()) for p in procs]
  codes = sorted(code for code, _ in outcomes)
  refused = [err for code, err in outcomes if code == 2]
  ok = (codes == [0, 2, 2] and all("in use by another run" in e and len(e.splitlines()) == 1
                                   for e in refused)
        and comparable(workdir) == reference and not set_aside(workdir))
  print(f"three runs on one workdir, 1.7 s apart: exit codes {codes}; "
        f"{'one finished with the reference results, two refused in one line' if ok else 'FAILED'}")
  for err in refused:
    print(f"  {err}")


def full_disk(root: str, reference: dict, sizes_kib: list[int]) -> None:
  mount = os.path.join(root, "small")
  os.makedirs(mount, exist_ok=True)
  for size in sizes_kib:
    if subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}k", "tmpfs", mount],
                      capture_output=True).returncode:
      print("full disk: skipped (mounting a small tmpfs needs root)")
      return
    try:
      workdir = os.path.join(mount, "run")
      code, err = finish(workdir)
      moved = os.path.join(root, f"disk{size}")
      shutil.rmtree(moved, ignore_errors=True)
      shutil.copytree(workdir, moved)
    finally:
      subprocess.run(["umount", mount], check=True)
    resumed, _ = finish(moved)
    same = resumed == 0 and comparable(moved) == reference
    print(f"  tmpfs of {size} KiB: exit {code}, {len(err.strip().splitlines())} line(s) on "
          f"stderr; copied elsewhere and resumed: {'identical results' if same else 'FAILED'}")
    if code:
      print(f"    {err.strip()}")


def integrity_cost(root: str) -> None:
  import jax  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  from sms_jax import checkpoints  # pylint: disable=g-import-not-at-top
  n = 11_200_000
  state = {"params": jax.random.normal(jax.random.key(0), (n,)),
           "momentum": jax.random.normal(jax.random.key(1), (n,))}
  ckpt = checkpoints.Checkpointer(os.path.join(root, "integrity"), 2, "bench")
  ckpt.save(0, state, {})
  saves, checks = [], []
  for step in range(1, 6):
    tic = time.perf_counter()
    ckpt.save(step, state, {})
    saves.append(time.perf_counter() - tic)
    tic = time.perf_counter()
    leaves = checkpoints._host_leaves(state)  # pylint: disable=protected-access
    checkpoints.non_finite_paths(leaves)
    checkpoints._checksums(leaves)  # pylint: disable=protected-access
    checks.append(time.perf_counter() - tic)
  ckpt.close()
  print(f"checkpoint of a {8 * n / 1e6:.0f} MB state: save {np.median(saves):.3f} s, of which "
        f"integrity (host copy, finite check, CRC-32) {np.median(checks):.3f} s (medians of 5)")


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--root", default="/tmp/reliability")
  parser.add_argument("--kills", type=int, default=10)
  parser.add_argument("--disk_sizes_kib", default="300,400,500,600,700")
  args = parser.parse_args()
  shutil.rmtree(args.root, ignore_errors=True)
  os.makedirs(args.root)
  code, err = finish(os.path.join(args.root, "reference"))
  assert code == 0, err
  reference = comparable(os.path.join(args.root, "reference"))
  tic = time.perf_counter()  # Again, with the compilation cache warm: the runs below.
  finish(os.path.join(args.root, "warm"))
  wall_s = time.perf_counter() - tic
  print(f"reference run: {wall_s:.1f} s with a warm compilation cache")
  interruptions(args.root, args.kills, reference, wall_s)
  concurrency(args.root, reference)
  full_disk(args.root, reference, [int(s) for s in args.disk_sizes_kib.split(",")])
  integrity_cost(args.root)


if __name__ == "__main__":
  main()
