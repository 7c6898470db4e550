"""bench/gpu_check.py, the GPU self-check, in its tiny mode on the CPU: it runs with nothing
beyond jax, flax, optax and numpy, and its checks compare different programs."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from conftest import ROOT

sys.path.insert(0, os.path.join(ROOT, "bench"))
import gpu_check  # pylint: disable=g-import-not-at-top,wrong-import-position

# What a bare GPU machine may lack: importing any of them fails in the check's process.
_ABSENT = ("ml_collections", "tensorboardX", "tensorflow", "tensorflow_datasets", "mnist1d",
           "sklearn", "matplotlib", "scipy", "PIL", "orbax")
_WITHOUT = """
import runpy, sys
for name in {absent!r}:
  sys.modules[name] = None
sys.argv = ["gpu_check.py", "--tiny", "--json", {out!r}]
runpy.run_path("bench/gpu_check.py", run_name="__main__")
"""


def test_tiny_run_passes_every_check_without_the_projects_other_dependencies(tmp_path):
  out = str(tmp_path / "gpu_check.json")
  proc = subprocess.run([sys.executable, "-c", _WITHOUT.format(absent=_ABSENT, out=out)],
                        cwd=ROOT, capture_output=True, text=True, timeout=300)
  assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
  with open(out) as f:
    results = json.load(f)
  assert [c["name"] for c in results["checks"]] == ["scan", "vmap", "bfloat16", "auto", "mesh"]
  assert all(c["ok"] for c in results["checks"])
  rows = results["speed"]["rows"]
  assert [(r["m"], r["execution"]) for r in rows] == [(1, "single"), (2, "loop"), (2, "vmap")]
  images = gpu_check.TINY["steps"] * gpu_check.TINY["batch"]
  for row in rows:  # images/s is the m candidates' images over the measured epoch.
    assert row["images_per_s"] == pytest.approx(row["m"] * images / row["epoch_s"])
    assert row["compile_s"] > 0
  assert results["speed"]["targets"]["best_images_per_s"] == max(r["images_per_s"] for r in rows)
  assert "checks: all passed" in proc.stdout


@pytest.mark.parametrize("broken", ["steps", "loop"])
def test_a_check_fails_when_the_program_it_compares_against_differs(monkeypatch, broken):
  """Perturbing only the dispatched-steps epoch (or only the loop of candidates) fails the
  scan (or vmap) check and no other: each check compares two different programs."""
  runner = gpu_check.Bench.runner

  def perturbed(self, m, *, epoch_loop="scan", execution=None, **kwargs):
    run, seconds = runner(self, m, epoch_loop=epoch_loop, execution=execution, **kwargs)
    if broken not in (epoch_loop, execution):
      return run, seconds

    def shifted(*args):
      state, metrics = run(*args)
      return state, {**metrics, "loss": np.asarray(metrics["loss"]) + 1.0}
    return shifted, seconds

  monkeypatch.setattr(gpu_check.Bench, "runner", perturbed)
  bench = gpu_check.Bench(gpu_check.TINY, np.float32)
  results = {c["name"]: c["ok"] for c in gpu_check.checks(bench, m=2, tolerance=gpu_check.TOLERANCE)}
  failing = "scan" if broken == "steps" else "vmap"
  assert results == {name: name != failing for name in results}
