"""sms_jax.compare: grouping, statistics against an independent numpy/scipy computation, the
outputs, the refusal of incomparable runs and one tiny real run's results.json."""

import csv
import json
import os

import numpy as np
import pytest
from scipy import stats

from sms_jax import compare, experiment
from tests.conftest import make_tiny_config

# Per strategy and seed: ((test_accuracy, test_ece, ood values) of phase 1, phase 2).
ACC = {"imp": {0: (0.60, 0.50), 1: (0.62, 0.55), 2: (0.58, 0.49)},
       "sms": {0: (0.63, 0.52), 1: (0.62, 0.58), 2: (0.61, 0.50)}}
ECE = {"imp": {0: (0.05, 0.08), 1: (0.06, 0.07), 2: (0.04, 0.09)},
       "sms": {0: (0.04, 0.06), 1: (0.07, 0.07), 2: (0.03, 0.05)}}


def _config(strategy, seed, **changes):
  config = {"strategy": strategy, "seed": seed, "pretrained": f"/x/seed{seed}/pretrain",
            "dataset": {"name": "mnist1d", "num_train": 0, "data_dir": ""},
            "model": {"name": "cnn1d"}, "prune": {"goal_sparsity": 0.9, "n_phases": 2},
            "soup": {"m": 1 if strategy == "imp" else 2}}
  for key, value in changes.items():
    section, name = key.split(".")
    config[section][name] = value
  return config


def _phase_results(strategy, seed, **changes):
  """A minimal results.json with 2 phases (soup or model records) and OOD sets."""
  phases = []
  for i, target in enumerate((0.68, 0.9)):
    metrics = {"test_accuracy": ACC[strategy][seed][i], "test_ece": ECE[strategy][seed][i]}
    phases.append({"phase": i + 1, "target_sparsity": target, "sparsity": target,
                   ("model" if strategy == "imp" else "soup"): metrics,
                   "ood": {"a": metrics["test_accuracy"] - 0.1,
                           "b": metrics["test_accuracy"] - 0.2}})
  return {"config": _config(strategy, seed, **changes), "phases": phases,
          "final": {**phases[-1]["model" if strategy == "imp" else "soup"], "sparsity": 0.9}}


def _write(root, name, results):
  os.makedirs(os.path.join(root, name), exist_ok=True)
  with open(os.path.join(root, name, "results.json"), "w") as f:
    json.dump(results, f)


@pytest.fixture
def sweep(tmp_path):
  """3 seeds of imp and sms in a sweep-like layout, a gmp run (no phases), an unfinished run."""
  root = str(tmp_path / "sweep")
  for seed in range(3):
    for strategy in ("imp", "sms"):
      _write(root, f"seed{seed}/{strategy}", _phase_results(strategy, seed))
  _write(root, "seed0/gmp", {"config": _config("gmp", 0), "updater": {"name": "gmp"},
                              "final": {"test_accuracy": 0.4, "test_ece": 0.1,
                                        "sparsity": 0.9}})
  os.makedirs(os.path.join(root, "seed1/broken"))
  with open(os.path.join(root, "seed1/broken/config.json"), "w") as f:
    f.write("{}")
  return root


def test_groups_statistics_and_outputs_match_numpy(sweep, capsys):
  assert compare.main([sweep, "--baseline=imp"]) == 0
  printed = capsys.readouterr().out
  assert "skipped (no results.json): " + os.path.join(sweep, "seed1/broken") in printed
  with open(os.path.join(sweep, "compare.json")) as f:
    result = json.load(f)
  assert sorted(result["groups"]) == ["gmp", "imp", "sms"]  # soup.m follows the strategy.
  for strategy in ("imp", "sms"):
    rows = result["groups"][strategy]["rows"]
    assert [r["phase"] for r in rows] == ["phase 1", "phase 2", "final"]
    for i, row in enumerate(rows):
      acc = np.array([ACC[strategy][s][min(i, 1)] for s in range(3)])
      assert row["test_accuracy"]["mean"] == pytest.approx(acc.mean())
      assert row["test_accuracy"]["se"] == pytest.approx(np.std(acc, ddof=1) / np.sqrt(3))
      assert row["ood_accuracy"]["mean"] == pytest.approx(acc.mean() - 0.15)
  # Paired differences of sms against imp, by seed.
  diffs = {r["phase"]: r for r in result["differences"]["sms"]}
  assert "gmp" in result["differences"] and [r["phase"] for r in result["differences"]["gmp"]
                                             ] == ["final"]
  for i, phase in enumerate(("phase 1", "phase 2")):
    d = np.array([ACC["sms"][s][i] - ACC["imp"][s][i] for s in range(3)])
    se = np.std(d, ddof=1) / np.sqrt(3)
    got = diffs[phase]["test_accuracy"]
    assert got["mean"] == pytest.approx(d.mean()) and got["se"] == pytest.approx(se)
    half = stats.t.ppf(0.975, 2) * se
    assert got["ci95"] == pytest.approx([d.mean() - half, d.mean() + half])
    assert got["ahead"] == int(np.sum(d > 1e-12)) and got["tied"] == int(np.sum(np.abs(d) < 1e-12))
    e = np.array([ECE["sms"][s][i] - ECE["imp"][s][i] for s in range(3)])
    assert diffs[phase]["test_ece"]["ahead"] == int(np.sum(e < -1e-12))  # Lower ECE is ahead.
  # gmp: one run, final only; its interval is n/a, not NaN.
  assert result["groups"]["gmp"]["rows"][0]["test_accuracy"]["se"] is None
  assert result["differences"]["gmp"][0]["test_accuracy"]["ci95"] is None
  assert "| gmp | final | 90.00 | 1 | 40.00 ± n/a |" in printed
  # The tidy csv: groups x points x metrics.
  with open(os.path.join(sweep, "compare.csv")) as f:
    rows = list(csv.DictReader(f))
  assert len(rows) == (3 + 3 + 1) * 3
  row = next(r for r in rows if r["group"] == "sms" and r["phase"] == "phase 1"
             and r["metric"] == "test_accuracy")
  assert float(row["diff_mean"]) == pytest.approx(diffs["phase 1"]["test_accuracy"]["mean"])
  assert os.path.getsize(os.path.join(sweep, "compare.png")) > 10_000
  with open(os.path.join(sweep, "compare.md")) as f:
    assert f.read() == printed


def test_differing_keys_define_groups_and_pairing_uses_common_seeds(tmp_path):
  runs = [(f"r{s}{m}", _phase_results("sms", s, **{"soup.m": m})) for s in range(3)
          for m in (2, 4)] + [("i1", _phase_results("imp", 1)), ("i0", _phase_results("imp", 0))]
  labels = compare.group_labels(runs)
  assert sorted(set(labels)) == ["imp", "sms soup.m=2", "sms soup.m=4"]
  result = compare.compare(runs, "imp")
  d = result["differences"]["sms soup.m=4"][0]["test_accuracy"]
  assert d["seeds"] == [0, 1] and d["n"] == 2  # The imp runs come in another order.
  assert d["mean"] == pytest.approx(np.mean([ACC["sms"][s][0] - ACC["imp"][s][0] for s in (0, 1)]))
  with pytest.raises(ValueError, match="baseline=sms"):  # Two sms groups: ambiguous.
    compare.compare(runs, "sms")
  assert compare.compare(runs, "sms soup.m=2")["baseline"] == "sms soup.m=2"


@pytest.mark.parametrize("key,value", [("dataset.num_train", 512), ("model.name", "mlp"),
                                       ("prune.goal_sparsity", 0.95)])
def test_refuses_incomparable_runs_before_writing(tmp_path, capsys, key, value):
  root = str(tmp_path)
  _write(root, "a", _phase_results("imp", 0))
  _write(root, "b", _phase_results("sms", 0, **{key: value}))
  assert compare.main([root, "--baseline=imp"]) == 2
  err = capsys.readouterr().err.strip()
  assert len(err.splitlines()) == 1 and key in err and str(value) in err
  assert sorted(os.listdir(root)) == ["a", "b"]


def test_refuses_mismatched_phase_targets_and_bad_input(tmp_path, capsys):
  root = str(tmp_path)
  _write(root, "a", _phase_results("sms", 0))
  other = _phase_results("sms", 1)
  other["phases"][0]["target_sparsity"] = 0.5
  _write(root, "b", other)
  assert compare.main([root]) == 2
  assert "target sparsities" in capsys.readouterr().err
  assert compare.main([str(tmp_path / "missing")]) == 2
  assert compare.main([root, "--bogus=1"]) == 2
  assert len(capsys.readouterr().err.strip().splitlines()) == 2


def test_real_run_results_parse(tmp_path):
  """A tiny real imp run (one phase, OOD on) parses: its points are its records'."""
  config = make_tiny_config()
  config.strategy = "imp"
  config.prune.goal_sparsity = 0.5
  config.prune.n_phases = 1
  config.retrain.epochs_per_phase = 1
  config.train.epochs = 1
  workdir = str(tmp_path / "imp")
  results = json.loads(json.dumps(experiment.run(config, workdir)))
  assert compare.main([str(tmp_path)]) == 0
  with open(os.path.join(tmp_path, "compare.json")) as f:
    rows = json.load(f)["groups"]["imp"]["rows"]
  phase = results["phases"][0]
  assert rows[0]["test_accuracy"]["mean"] == phase["model"]["test_accuracy"]
  assert rows[0]["ood_accuracy"]["mean"] == pytest.approx(np.mean(list(phase["ood"].values())))
  assert rows[-1]["test_ece"]["mean"] == results["final"]["test_ece"]
