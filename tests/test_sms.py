"""IMP and Sparse Model Soups end to end on the embedded data (tiny settings)."""

import collections
import glob
import json
import logging
import os
import struct

import jax

import numpy as np
import pytest

from conftest import make_tiny_config
from sms_jax import experiment, report


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
  config.checkpoint.min_interval_s = 0.0
  return config


class _CompilesByStage(logging.Handler):
  """Counts the programs JAX compiles (`jax.log_compiles`) by the run's stage: 'pretraining',
  then 'phase k' from the log line that starts phase k."""

  def __init__(self):
    super().__init__()
    self.stage, self.programs = "pretraining", collections.defaultdict(list)

  def emit(self, record):
    message = record.getMessage()
    if message.startswith("Compiling "):
      self.programs[self.stage].append(message.split()[1])


@pytest.fixture(scope="module")
def sms_run(tmp_path_factory):
  """The tiny SMS run's results and workdir; its compilations by stage are in
  `sms_run_compiles`."""
  workdir = tmp_path_factory.mktemp("sms")
  handler, log = _CompilesByStage(), report.log

  def marking_log(message, *args, **kwargs):
    if message.startswith("phase ") and "pruned to sparsity" in message:
      handler.stage = message.split("/")[0]
    return log(message, *args, **kwargs)

  jax.clear_caches()  # Count every program the run needs, whatever ran before in this process.
  logging.getLogger("jax").addHandler(handler)
  report.log = marking_log
  try:
    with jax.log_compiles(True):
      results = experiment.run(_sms_config(), str(workdir))
  finally:
    report.log = log
    logging.getLogger("jax").removeHandler(handler)
  _COMPILES.update(handler.programs)
  return results, workdir


_COMPILES = {}  # Stage -> the programs the module's SMS run compiled in it.


def test_a_second_phase_compiles_nothing_new(sms_run):
  """Every program a phase needs (pruning, the stacked candidates' epochs, validation, soups,
  BatchNorm recalibration, evaluation and OOD sets) is compiled in the first phase only."""
  del sms_run
  assert len(_COMPILES["phase 1"]) > 10, _COMPILES  # The hook sees the first phase's programs.
  assert _COMPILES.get("phase 2", []) == []


def _tensorboard_scalars(workdir):
  """{tag: [(step, value)]} of the TensorBoard event files in `<workdir>/tensorboard`, read
  record by record (TFRecord framing: length, its CRC, the Event proto, its CRC)."""
  event_pb2 = pytest.importorskip("tensorboardX.proto.event_pb2")
  scalars = {}
  for path in sorted(glob.glob(os.path.join(workdir, "tensorboard", "events.out.tfevents.*"))):
    with open(path, "rb") as f:
      data = f.read()
    pos = 0
    while pos < len(data):
      (length,) = struct.unpack("<Q", data[pos:pos + 8])
      event = event_pb2.Event.FromString(data[pos + 12:pos + 12 + length])
      pos += 12 + length + 4
      for value in event.summary.value:
        scalars.setdefault(value.tag, []).append((event.step, value.simple_value))
  return scalars


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
  for name in ("accuracy_vs_sparsity.png", "layer_sparsity.png", "training.png"):
    assert os.path.getsize(workdir / "plots" / name) > 1000
  # Finished phases leave no candidate checkpoints behind.
  assert sorted(os.listdir(workdir / "checkpoints")) == ["phases", "pretrain"]


def test_sms_phases_go_to_tensorboard_at_their_last_epoch(sms_run):
  """The phases' scalars sit at the epoch where each phase ends (2 dense epochs, then 2 per
  phase), where the candidates' own epoch scalars end."""
  results, workdir = sms_run
  scalars = _tensorboard_scalars(workdir)
  phases = results["phases"]
  for tag, values in (
      ("phases/test_accuracy", [p["soup"]["test_accuracy"] for p in phases]),
      ("phases/val_accuracy", [p["soup"]["val_accuracy"] for p in phases]),
      ("phases/test_ece", [p["soup"]["test_ece"] for p in phases]),
      ("phases/sparsity", [p["sparsity"] for p in phases]),
      ("phases/best_candidate_test_accuracy", [p["best_candidate"]["test_accuracy"]
                                               for p in phases]),
      ("phases/ensemble_test_accuracy", [p["ensemble"]["test_accuracy"] for p in phases]),
      ("phases/ood/gaussian_noise", [p["ood"]["gaussian_noise"] for p in phases])):
    assert [step for step, _ in scalars[tag]] == [4, 6], tag
    assert [value for _, value in scalars[tag]] == pytest.approx(values, rel=1e-6), tag
  assert max(step for step, _ in scalars["phase2/train_loss/candidate0"]) == 6


def test_imp_is_one_lineage_and_imp_mx_retrains_m_times_longer(tmp_path, capsys):
  """m = 1: the phase record holds the one retrained model (no soup, candidates, ensemble);
  the log, TensorBoard and the final metrics say so."""
  config = _sms_config()
  config.strategy, config.prune.n_phases = "imp", 1
  imp = experiment.run(config, str(tmp_path / "imp"))
  out = capsys.readouterr().out
  (phase,) = imp["phases"]
  assert not {"soup", "candidates", "ensemble", "best_candidate", "distances"} & set(phase)
  model = phase["model"]
  assert model["hparams"]["retrain_epochs"] == 2 and len(phase["history"]) == 2
  assert imp["final"] == {**{k: v for k, v in model.items() if k != "hparams"},
                          "sparsity": phase["sparsity"], "sparsity_all": phase["sparsity_all"]}
  assert (f"phase 1: sparsity {phase['sparsity']:.4f} (target 0.9000)  model test "
          f"{model['test_accuracy']:.4f}\n") in out
  test, dense = model["test_accuracy"], imp["dense"]["test_accuracy"]
  assert (f"final: test_accuracy {test:.4f} (dense {dense:.4f}, "
          f"{100 * (test - dense):+.2f} points)  val_accuracy ") in out
  scalars = _tensorboard_scalars(tmp_path / "imp")
  assert scalars["phases/test_accuracy"] == [(4, pytest.approx(test, rel=1e-6))]
  assert not any("best_candidate" in tag or "ensemble" in tag for tag in scalars)
  assert sorted(os.listdir(tmp_path / "imp" / "plots")) == [
      "accuracy_vs_sparsity.png", "layer_sparsity.png", "training.png"]
  config.strategy = "imp_mx"
  imp_mx = experiment.run(config, str(tmp_path / "imp_mx"))
  assert [len(p["history"]) for p in imp_mx["phases"]] == [4]
  assert imp_mx["phases"][0]["model"]["hparams"]["retrain_epochs"] == 4
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
  out = capsys.readouterr().out
  assert "resumed after phase 1" in out
  assert _phase_numbers(resumed) == _phase_numbers(reference)
  # The greedy soup's accepted candidates, in order, with what varies between them.
  ingredients = reference["phases"][1]["soup"]["ingredients"]
  assert (f"phase 2: greedy soup of {len(ingredients)} of 2 candidates: candidate "
          f"{ingredients[0]} (seed={ingredients[0]}, weight_decay=") in out
  assert resumed["final"] == reference["final"]


def test_shared_pretraining_gives_the_phases_of_own_pretraining(sms_run, tmp_path):
  """SMS started from another run's pretraining (`pretrained`) computes the phases SMS computes
  after pretraining itself, trains no pretraining of its own, and says where it came from.
  (tests/test_sweep.py starts imp and sms from a dense run's.)"""
  from sms_jax import checkpoints, shared_pretraining  # pylint: disable=g-import-not-at-top
  results, workdir = sms_run
  config = _sms_config()
  config.pretrained = str(workdir)
  shared = experiment.run(config, str(tmp_path / "sms"))
  assert _phase_numbers(shared) == _phase_numbers(results)
  assert shared["dense"] == results["dense"]
  assert not os.path.exists(tmp_path / "sms" / "checkpoints" / "pretrain")
  _, state, _ = checkpoints.read_verified(shared_pretraining.source_directory(str(workdir)))
  assert shared["pretrained"] == {"from": str(workdir), "epoch": 2,
                                  "checksum": checkpoints.state_checksum(state)}
  assert "pretrained" not in results
