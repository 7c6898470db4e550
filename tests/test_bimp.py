"""Budgeted IMP (bimp, sms_bimp): the budget of imp / sms, a compressed dense schedule that
decays to 0 within the shortened dense run, ALLR phases, soups, exactly the goal sparsity;
a killed run resumes."""

import contextlib
import io
import math
import os

import pytest

from conftest import make_tiny_config
from sms_jax import checkpoints, config as config_lib, data, experiment, strategies
from sms_jax.strategies import bimp


def _epochs_per_model(name, config):
  config.strategy = name
  return sum(epochs for epochs, _ in strategies.STRATEGIES[name].planned_epochs(config))


@pytest.mark.parametrize("epochs, n, per_phase, pretrain, expected", [
    (60, 4, 10, 40, (40, 15)),  # configs/bimp_mnist1d.py.
    (60, 4, 10, 0, (48, 13)),  # Auto: phases of round(100 / 8) = 13 epochs.
    (3, 3, 10, 0, (3, 10)),  # Auto, but never a dense run longer than train.epochs.
    (7, 2, 1, 1, (1, 4)),
])
def test_budget_is_imp_and_sms_budget(epochs, n, per_phase, pretrain, expected):
  config = make_tiny_config()
  config.train.epochs, config.prune.n_phases = epochs, n
  config.retrain.epochs_per_phase, config.bimp.pretrain_epochs = per_phase, pretrain
  config.train.warmup_epochs, config.soup.m = 2.0, 3
  assert (bimp.pretrain_epochs(config), bimp.phase_length(config)) == expected
  assert _epochs_per_model("bimp", config) == _epochs_per_model("imp", config) == (
      epochs + n * per_phase)
  assert _epochs_per_model("sms_bimp", config) == _epochs_per_model("sms", config)
  assert [m for _, m in strategies.STRATEGIES["sms_bimp"].planned_epochs(config)] == [1] + [3] * n
  run = bimp.budgeted(config)
  assert (run.train.epochs, run.retrain.epochs_per_phase, run.retrain.schedule) == (
      *expected, "allr")
  assert run.train.warmup_epochs == pytest.approx(2.0 * expected[0] / epochs)
  assert config.train.epochs == epochs  # A copy.


def test_run_identity_tells_budgets_apart():
  """The checkpoints carry the run config's identity: the same for the same experiment, and
  different for configs that train differently (here only train.epochs differs, and with it
  the phases' length)."""
  a, b = make_tiny_config(), make_tiny_config()
  for config, epochs in ((a, 9), (b, 11)):
    config.strategy, config.train.epochs, config.prune.n_phases = "bimp", epochs, 2
    config.bimp.pretrain_epochs = 5
  assert config_lib.run_identity(bimp.budgeted(a)) == config_lib.run_identity(bimp.budgeted(a))
  assert config_lib.run_identity(bimp.budgeted(a)) != config_lib.run_identity(bimp.budgeted(b))


@pytest.mark.parametrize("overrides, expected", [
    ({"bimp.pretrain_epochs": 3}, "config key bimp.pretrain_epochs = 3 is not allowed with "
     "train.epochs = 6 and prune.n_phases = 2; allowed: 0 (auto) or P <= 6 with 6 - P "
     "divisible by 2"),
    ({"bimp.pretrain_epochs": 8}, "allowed: 0 (auto) or P <= 6"),
])
def test_bad_budgets_are_refused_in_one_line(overrides, expected):
  config = _config("bimp")
  for key, value in overrides.items():
    section, name = key.split(".")
    config[section][name] = value
  with pytest.raises(config_lib.ConfigError) as info:
    config_lib.validate(config)
  assert expected in str(info.value) and "\n" not in str(info.value), str(info.value)


def _config(strategy="sms_bimp"):
  """6 dense epochs + 2 phases of 1 = 8 epochs; BIMP: 4 dense (a 1.5-epoch warmup and a
  cosine over 6 epochs, compressed), then 2 ALLR phases of 2 to 90%, 2 candidates each."""
  config = make_tiny_config()
  config.strategy, config.train.epochs, config.train.warmup_epochs = strategy, 6, 1.5
  config.prune.n_phases, config.prune.goal_sparsity = 2, 0.9
  config.retrain.epochs_per_phase = 1  # retrain.schedule stays 'llr': BIMP retrains with ALLR.
  config.bimp.pretrain_epochs, config.soup.m = 4, 2
  config.ood.severity = 0
  return config


@pytest.fixture(scope="module")
def sms_bimp_run(tmp_path_factory):
  """sms_bimp killed after phase 1's first epoch, then run again: its results, and the log
  of the second run."""
  workdir, real_save = str(tmp_path_factory.mktemp("sms_bimp")), checkpoints.Checkpointer.save

  def save_then_die(self, step, state, meta):
    real_save(self, step, state, meta)
    if os.path.basename(self.directory) == "phase1_candidates" and step == 1:
      raise KeyboardInterrupt

  with pytest.MonkeyPatch.context() as patch:
    patch.setattr(checkpoints.Checkpointer, "save", save_then_die)
    with pytest.raises(KeyboardInterrupt):
      experiment.run(_config(), workdir)
  with contextlib.redirect_stdout(io.StringIO()) as log:
    results = experiment.run(_config(), workdir)
  return results, log.getvalue()


def test_a_killed_run_resumes_from_its_budgeted_checkpoints(sms_bimp_run):
  """The second run finds the checkpoints of the budgeted run config (another run's would be
  refused) and goes on from them: pretraining and phase 1's first epoch are not retrained."""
  results, log = sms_bimp_run
  assert "resumed from checkpoint at epoch 4" in log  # Pretraining: done.
  assert "resumed from checkpoint at epoch 1" in log  # Phase 1.
  assert "epoch 1/4" not in log and "epoch 1/2" in log  # Only phase 2 starts afresh.
  assert [len(p["history"]) for p in results["phases"]] == [2, 2]


def test_dense_schedule_is_compressed_into_the_dense_run(sms_bimp_run):
  """Each dense epoch's last learning rate is the 6-epoch schedule compressed into 4 (a warmup
  of 1.5 * 4 / 6 = 1 epoch, then a cosine over the other 3), computed here from the formula:
  it reaches ~0 at the end of the 4 epochs (the first 4 of the 6-epoch schedule would not)."""
  config = _config()
  steps = data.load(config.dataset).steps_per_epoch(config.train.batch_size)
  total, warmup, peak = 4 * steps, steps, config.train.learning_rate
  lr = lambda t: (peak * t / warmup if t < warmup else
                  peak * 0.5 * (1 + math.cos(math.pi * (t - warmup) / (total - warmup))))
  history = sms_bimp_run[0]["history"]
  assert [r["epoch"] for r in history] == [1, 2, 3, 4]
  for record in history:
    assert record["learning_rate"] == pytest.approx(lr(record["epoch"] * steps - 1), rel=1e-5)
  assert history[-1]["learning_rate"] < 0.01 * peak
  truncated = peak * 0.5 * (1 + math.cos(math.pi * (4 * steps - 1 - 1.5 * steps)
                                         / (6 * steps - 1.5 * steps)))
  assert truncated > 0.2 * peak


def test_phases_use_allr_and_soups_within_the_budget_and_end_at_the_goal(sms_bimp_run):
  results, config = sms_bimp_run[0], _config()
  assert results["budget"] == {"epochs": 8, "pretrain_epochs": 4, "phase_epochs": 2,
                               "schedule": "allr"}
  assert len(results["history"]) + sum(len(p["history"]) for p in results["phases"]) == 8
  max_lr, before, peaks = config.train.learning_rate, 0.0, []
  for k, phase in enumerate(results["phases"], 1):
    target = 1 - 0.1 ** (k / 2)
    assert phase["target_sparsity"] == pytest.approx(target)
    rate = 1 - (1 - target) / (1 - before)
    # ALLR's peak (clipped below by min(2 / 4, 1): the phase over the dense run's length).
    peak = min(max(phase["relative_norm_drop"] / math.sqrt(rate), 0.5), 1.0) * max_lr
    assert [c["hparams"]["learning_rate"] for c in phase["candidates"]] == pytest.approx(
        [peak, peak], rel=1e-6)
    assert [c["hparams"]["seed"] for c in phase["candidates"]] == [0, 1]
    assert phase["soup"]["ingredients"] == [0, 1]
    peaks.append(peak)
    before = phase["sparsity"]  # As pruned: the target to within a weight.
  assert min(peaks) < max_lr  # ALLR, not LLR's maxLR.
  layers = results["phases"][-1]["layers"]
  size = sum(layer["size"] for layer in layers)
  assert sum(layer["alive"] for layer in layers) == round(0.1 * size)
  assert results["final"]["sparsity"] == pytest.approx(0.9, abs=0.5 / size)
