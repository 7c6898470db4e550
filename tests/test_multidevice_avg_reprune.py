"""imp_avg_reprune on 4 simulated CPU devices against the same run on one (a file of its own,
so that pytest-xdist's `--dist loadfile` runs it beside tests/test_multidevice.py)."""

import json
import subprocess
import sys

from conftest import ROOT
from sms_jax import experiment
from test_multidevice import _RUN_OVERRIDES, _env


_AVG_REPRUNE = {**_RUN_OVERRIDES, "strategy": "imp_avg_reprune", "soup.m": 2, "prune.n_phases": 2,
                "avg_reprune.diverge_epochs": 1, "avg_reprune.retrain_epochs": 1}
_SIMULATED_AVG_REPRUNE = """
import json
from configs import default
from sms_jax import experiment
config = default.get_config()
config.update_from_flattened_dict({overrides!r})
print(json.dumps(experiment.run(config, {workdir!r})))
"""


def test_avg_reprune_on_four_simulated_devices_equals_one(tmp_path):
  """imp_avg_reprune switches the mesh inside each phase (2 lineages on a 2x2 mesh, then the
  one re-pruned model 4-way data parallel) and back for the next phase: its two phases give
  the 1-device run's accuracies and sparsities, phase by phase."""
  from configs import default  # pylint: disable=g-import-not-at-top
  config = default.get_config()
  config.update_from_flattened_dict(_AVG_REPRUNE)
  baseline = experiment.run(config, str(tmp_path / "one"))
  code = _SIMULATED_AVG_REPRUNE.format(overrides=_AVG_REPRUNE, workdir=str(tmp_path / "four"))
  out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=_env(4), capture_output=True,
                       text=True, timeout=600)
  assert out.returncode == 0, out.stderr[-2000:]
  results = json.loads(out.stdout.strip().splitlines()[-1])
  assert results["devices"]["count"] == 4
  compiled = [l for l in out.stdout.splitlines() if "stacked candidates" in l]
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
