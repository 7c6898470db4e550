"""IMP and Sparse Model Soups end to end on the embedded data (tiny settings)."""

import json
import os

import numpy as np
import pytest

from conftest import make_tiny_config
from sms_jax import experiment


def _sms_config():
  """SMS on 512 MNIST-1D examples: 2 dense epochs, 2 phases to 90%, 2 candidates x 2 epochs
  differing in seed and weight decay, greedy soup."""
  config = make_tiny_config()
  config.strategy = "sms"
  config.train.epochs = 2
  config.prune.goal_sparsity = 0.9
  config.prune.n_phases = 2
  config.retrain.epochs_per_phase = 2
  config.soup.m = 2
  config.soup.vary = "seed,weight_decay"
  config.soup.method = "greedy"
  config.checkpoint.every_epochs = 1
  return config


@pytest.fixture(scope="module")
def sms_run(tmp_path_factory):
  workdir = tmp_path_factory.mktemp("sms")
  return experiment.run(_sms_config(), str(workdir)), workdir


def _phase_numbers(results):
  """Everything a phase reports except timings."""
  without_times = lambda record: {k: v for k, v in record.items() if not k.endswith("time_s")}
  return [{**without_times(p), "history": [without_times(r) for r in p["history"]]}
          for p in results["phases"]]


def test_sms_reaches_exact_sparsity_and_reports_every_comparison(sms_run):
  results, workdir = sms_run
  assert json.load(open(workdir / "results.json"))["phases"] == results["phases"]
  for k, phase in enumerate(results["phases"], start=1):
    assert phase["phase"] == k
    assert phase["target_sparsity"] == pytest.approx(1 - 0.1 ** (k / 2))
    assert abs(phase["sparsity"] - phase["target_sparsity"]) < 1e-3
    layers = phase["layers"]
    assert [l["name"] for l in layers] == ["conv0/kernel", "conv1/kernel", "conv2/kernel",
                                           "dense/kernel", "classifier/kernel"]
    assert phase["sparsity"] == 1 - sum(l["alive"] for l in layers) / sum(
        l["size"] for l in layers)
    assert all(l["nonzero"] <= l["alive"] for l in layers)
    assert 0 < phase["sparsity_all"] < phase["sparsity"]  # Biases and BatchNorm stay dense.
    hparams = [c["hparams"] for c in phase["candidates"]]
    assert [h["seed"] for h in hparams] == [0, 1]
    assert hparams[0]["weight_decay"] < hparams[1]["weight_decay"]
    val = [c["val_accuracy"] for c in phase["candidates"]]
    assert phase["best_candidate"]["index"] == int(np.argmax(val))
    ingredients = phase["soup"]["ingredients"]
    assert ingredients[0] == int(np.argmax(val)) and set(ingredients) <= {0, 1}
    assert phase["soup"]["val_accuracy"] >= max(val)  # Greedy never does worse on val.
    for value in (phase["soup"]["test_accuracy"], phase["ensemble"]["test_accuracy"],
                  *[c["test_accuracy"] for c in phase["candidates"]]):
      assert 0.1 < value <= 1.0
    assert phase["flops"]["nonzero"] < phase["flops"]["dense"]
    distances = phase["distances"]
    assert np.asarray(distances["pairwise_l2"]).shape == (2, 2)
    assert set(phase["ood"]) >= {"gaussian_noise", "shot_noise", "gaussian_blur"}
    # The candidates' learning rates, per epoch, as a list per candidate.
    assert all(len(r["learning_rate"]) == 2 for r in phase["history"])
  assert results["final"]["sparsity"] == results["phases"][-1]["sparsity"]
  assert results["final"]["test_accuracy"] == results["phases"][-1]["soup"]["test_accuracy"]
  for name in ("accuracy_vs_sparsity.png", "layer_sparsity.png"):
    assert os.path.getsize(workdir / "plots" / name) > 1000
  # Finished phases leave no candidate checkpoints behind.
  assert sorted(os.listdir(workdir / "checkpoints")) == ["phases", "pretrain"]


def test_imp_is_one_lineage_and_imp_mx_retrains_m_times_longer(tmp_path):
  config = _sms_config()
  config.strategy, config.prune.n_phases = "imp", 1
  imp = experiment.run(config, str(tmp_path / "imp"))
  (phase,) = imp["phases"]
  (candidate,) = phase["candidates"]
  assert candidate["hparams"]["retrain_epochs"] == 2 and len(phase["history"]) == 2
  assert phase["soup"]["test_accuracy"] == candidate["test_accuracy"]  # No souping.
  assert phase["soup"]["ingredients"] == [0]
  config.strategy = "imp_mx"
  imp_mx = experiment.run(config, str(tmp_path / "imp_mx"))
  assert [len(p["history"]) for p in imp_mx["phases"]] == [4]
  assert imp_mx["phases"][0]["candidates"][0]["hparams"]["retrain_epochs"] == 4
  assert abs(imp_mx["final"]["sparsity"] - 0.9) < 1e-3


def test_sms_interrupted_mid_phase_resumes_to_identical_results(sms_run, tmp_path,
                                                                die_after_save, capsys):
  reference, _ = sms_run
  # Mid-phase: after the first of phase 2's two candidate epochs.
  die_after_save(lambda directory, step: (directory, step) == ("phase2_candidates", 1))
  with pytest.raises(KeyboardInterrupt):
    experiment.run(_sms_config(), str(tmp_path))
  assert not os.path.exists(tmp_path / "results.json")
  die_after_save.restore()
  capsys.readouterr()
  resumed = experiment.run(_sms_config(), str(tmp_path))
  assert "resumed after phase 1" in capsys.readouterr().out
  assert _phase_numbers(resumed) == _phase_numbers(reference)
  assert resumed["final"] == reference["final"]
