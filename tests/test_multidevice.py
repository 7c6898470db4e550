"""Whole runs on 4 simulated CPU devices (SMS, imp_avg_reprune) and on two processes, against
the same runs on one.

Each device count needs a process of its own (XLA fixes it at start-up), so the runs happen
in subprocesses; the one-device baseline runs here.
"""

import json
import os
import subprocess
import sys

import jax
import numpy as np
import pytest

from conftest import ROOT
from sms_jax import experiment

# A short SMS run: 2 epochs of pretraining, 1 phase of 1 epoch, m candidates.
_RUN_OVERRIDES = {"strategy": "sms", "dataset.num_train": 320, "train.epochs": 2,
                  "train.batch_size": 64, "train.eval_batch_size": 256,
                  "retrain.epochs_per_phase": 1, "prune.n_phases": 1, "ood.severity": 0}


def _config(m):
  from configs import default  # pylint: disable=g-import-not-at-top
  config = default.get_config()
  config.update_from_flattened_dict({**_RUN_OVERRIDES, "soup.m": m})
  return config


def _accuracies(results):
  """Per phase: the candidates' and the soup's test accuracies, and the final one."""
  return ([([c["test_accuracy"] for c in p["candidates"]], p["soup"]["test_accuracy"])
           for p in results["phases"]], results["final"]["test_accuracy"])


def _assert_same_accuracies(results, baseline, tolerance=0.003):
  """Within 0.3 points, candidate by candidate, soup by soup."""
  (phases, final), (base_phases, base_final) = _accuracies(results), _accuracies(baseline)
  assert len(phases) == len(base_phases)
  for (cands, soup), (base_cands, base_soup) in zip(phases, base_phases):
    np.testing.assert_allclose(cands, base_cands, atol=tolerance)
    assert abs(soup - base_soup) <= tolerance
  assert abs(final - base_final) <= tolerance


@pytest.fixture(scope="module")
def one_device_runs(tmp_path_factory):
  """{m: results} of the short run on this process's one device, for m = 2."""
  assert len(jax.devices()) == 1
  return {m: experiment.run(_config(m), str(tmp_path_factory.mktemp(f"one_device_m{m}")))
          for m in (2,)}


# imp_avg_reprune switches the mesh inside each phase: 2 lineages, then the one re-pruned model.
_AVG_REPRUNE = {**_RUN_OVERRIDES, "strategy": "imp_avg_reprune", "soup.m": 2, "prune.n_phases": 2,
                "avg_reprune.diverge_epochs": 1, "avg_reprune.retrain_epochs": 1}

# Both 4-device runs in one process: its start-up and the shared pretraining compile once.
_SIMULATED = """
import contextlib, io, json, sys
sys.path.insert(0, {tests!r})
from test_multidevice import _AVG_REPRUNE, _config
from test_parallel import _streamed_mesh_difference
from configs import default
from sms_jax import experiment
run = experiment.run(_config(2), {workdir!r} + "/sms")
config = default.get_config()
config.update_from_flattened_dict(_AVG_REPRUNE)
printed = io.StringIO()
with contextlib.redirect_stdout(printed):
  avg_reprune = experiment.run(config, {workdir!r} + "/avg_reprune")
print(json.dumps({{"run": run, "stream_difference": _streamed_mesh_difference(),
                  "avg_reprune": avg_reprune, "avg_reprune_out": printed.getvalue()}}))
"""


def _env(devices):
  return {**os.environ, "XLA_FLAGS": f"--xla_force_host_platform_device_count={devices}",
          "PYTHONPATH": ROOT}


@pytest.fixture(scope="module")
def four_device_runs(tmp_path_factory):
  """The subprocess's reply (`_SIMULATED`) and what it printed besides, on 4 simulated
  devices."""
  code = _SIMULATED.format(tests=os.path.join(ROOT, "tests"),
                           workdir=str(tmp_path_factory.mktemp("four_devices")))
  out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=_env(4), capture_output=True,
                       text=True, timeout=600)
  assert out.returncode == 0, out.stderr[-2000:]
  return json.loads(out.stdout.strip().splitlines()[-1]), out.stdout


def test_four_simulated_devices_equal_one(one_device_runs, four_device_runs):
  """m = 2 on 4 devices (2 candidates x 2-way data parallel, after data-parallel
  pretraining on all 4) gives the accuracies of the 1-device run, and a streamed epoch 4-way
  data parallel the 1-device epoch; results.json reports the mesh."""
  reply, stdout = four_device_runs
  assert reply["stream_difference"] < 1e-4
  assert "2x2 mesh" in stdout and "1x4 mesh" in stdout
  results = reply["run"]
  assert results["devices"]["count"] == 4 and results["devices"]["platform"] == "cpu"
  assert results["devices"]["mesh"] == {"candidates": 2, "data": 2}
  assert one_device_runs[2]["devices"]["mesh"] == {"candidates": 1, "data": 1}
  _assert_same_accuracies(results, one_device_runs[2])
  assert results["final"]["sparsity"] == pytest.approx(0.9, abs=1e-3)


def test_avg_reprune_on_four_simulated_devices_equals_one(four_device_runs, tmp_path):
  """imp_avg_reprune switches the mesh inside each phase (2 lineages on a 2x2 mesh, then the
  one re-pruned model 4-way data parallel) and back for the next phase: its two phases give
  the 1-device run's accuracies and sparsities, phase by phase."""
  from configs import default  # pylint: disable=g-import-not-at-top
  config = default.get_config()
  config.update_from_flattened_dict(_AVG_REPRUNE)
  baseline = experiment.run(config, str(tmp_path / "one"))
  results = four_device_runs[0]["avg_reprune"]
  assert results["devices"]["count"] == 4
  compiled = [l for l in four_device_runs[0]["avg_reprune_out"].splitlines()
              if "stacked candidates" in l]
  assert any("of 2 stacked candidates" in l for l in compiled)
  assert any("of 1 stacked candidates" in l for l in compiled)
  for line in compiled:  # The lineages on 2x2 in both phases, the one model on 1x4.
    assert ("2x2 mesh" if "of 2 stacked" in line else "1x4 mesh") in line, line
  assert len(results["phases"]) == len(baseline["phases"]) == 2
  for phase, base in zip(results["phases"], baseline["phases"]):
    assert phase["sparsity"] == base["sparsity"]
    assert abs(phase["model"]["test_accuracy"] - base["model"]["test_accuracy"]) <= 0.003
  assert abs(results["final"]["test_accuracy"] - baseline["final"]["test_accuracy"]) <= 0.003
  assert results["final"]["sparsity"] == baseline["final"]["sparsity"]


def test_two_processes_equal_one(one_device_runs, tmp_path):
  """Two processes with two CPU devices each (jax.distributed over gloo) run one m = 2 run
  on a 2x2 mesh across them (each process one candidate, data parallel over its devices):
  process 0 alone prints and writes results.json, equal to the 1-device run."""
  workdir = str(tmp_path / "run")
  flags = [f"--config.{k}={v}" for k, v in {**_RUN_OVERRIDES, "soup.m": 2}.items()]
  port = 20000 + os.getpid() % 20000
  procs = [subprocess.Popen(
      [sys.executable, "-m", "sms_jax.main", "--config=configs/default.py", f"--workdir={workdir}",
       *flags, f"--coordinator_address=localhost:{port}", "--num_processes=2",
       f"--process_id={pid}"], cwd=ROOT, env=_env(2), stdout=subprocess.PIPE,
      stderr=subprocess.PIPE, text=True) for pid in (0, 1)]
  outputs = [p.communicate(timeout=600) for p in procs]
  for p, (_, err) in zip(procs, outputs):
    assert p.returncode == 0, err[-2000:]
  assert "wrote" in outputs[0][0] and "epoch" not in outputs[1][0]
  with open(os.path.join(workdir, "results.json")) as f:
    results = json.load(f)
  assert results["devices"]["processes"] == 2 and results["devices"]["count"] == 4
  assert results["devices"]["mesh"] == {"candidates": 2, "data": 2}
  _assert_same_accuracies(results, one_device_runs[2])

