"""Pruning during training end to end: gmp (the gmp updater in the step) and sms_gmp (soups
between its mask updates), with the learning-rate schedule sms_gmp's candidates go on with."""

import json
import os

import jax.numpy as jnp
import pytest

from configs import default
from conftest import make_tiny_config
from sms_jax import data, experiment, sparsity
from sms_jax.strategies import sms_gmp
from sms_jax.training import retrain, schedules


without_times = lambda h: [{k: v for k, v in r.items() if k != "time_s"} for r in h]


def test_continue_schedule_goes_on_with_pretraining():
  config = default.get_config().train
  config.epochs, config.schedule, config.warmup_epochs = 10, "cosine", 1.0
  pre = retrain.pretrain_schedule(config, 10)
  fn = schedules.make_schedule(config, 10)
  for count in (0, 37, 99, 150):
    lr = retrain.learning_rate(retrain.CONTINUE, jnp.asarray(count), jnp.asarray(1),
                               jnp.asarray(0.025), pre)
    assert float(lr) == pytest.approx(0.5 * float(fn(min(count, 99))), rel=1e-6)


def _gmp_config():
  """GMP on 512 MNIST-1D examples: 5 epochs, to 90% between epochs 1 and 4."""
  config = make_tiny_config()
  config.strategy = "gmp"
  config.train.epochs = 5
  config.prune.goal_sparsity = 0.9
  config.gradual.start_epoch = 1
  config.gradual.end_epoch = 4
  config.gradual.update_every = 5
  config.checkpoint.every_epochs = 1
  config.checkpoint.min_interval_s = 0.0
  return config


@pytest.fixture(scope="module")
def gmp_run(tmp_path_factory):
  workdir = tmp_path_factory.mktemp("gmp")
  return experiment.run(_gmp_config(), str(workdir)), workdir


def test_gmp_reaches_the_goal_along_the_schedule(gmp_run):
  results, workdir = gmp_run
  config = _gmp_config()
  steps_per_epoch = data.load(config.dataset).steps_per_epoch(config.train.batch_size)
  start, end = steps_per_epoch, 4 * steps_per_epoch
  schedule = sparsity.CubicSchedule(start, end, 5, 0.0, 0.9)
  assert results["updater"]["name"] == "gmp"
  assert [u["step"] for u in results["updater"]["updates"]] == [*range(start + 5, end, 5), end]
  for record in results["history"]:
    done = [s for s in schedule.update_steps() if s <= record["epoch"] * steps_per_epoch]
    expected = schedule.sparsity(done[-1]) if done else 0.0
    assert record["sparsity"] == pytest.approx(expected, abs=1e-3)
  final = results["final"]
  assert abs(final["sparsity"] - 0.9) < 1e-3
  assert final["sparsity"] == 1 - sum(l["alive"] for l in results["layers"]) / sum(
      l["size"] for l in results["layers"])
  assert 0.1 < final["test_accuracy"] <= 1.0
  assert results["flops"]["nonzero"] < results["flops"]["dense"]
  assert json.load(open(workdir / "results.json"))["final"] == final
  # Plots: the final layers, and accuracy and the sparsity schedule against epochs.
  assert sorted(os.listdir(workdir / "plots")) == ["layer_sparsity.png", "training.png"]


def test_gmp_interrupted_after_a_mask_update_resumes_identically(gmp_run, tmp_path,
                                                                 die_after_save):
  reference, _ = gmp_run
  die_after_save(lambda directory, step: step == 3)  # Mid-schedule, masks already pruned.
  with pytest.raises(KeyboardInterrupt):
    experiment.run(_gmp_config(), str(tmp_path))
  die_after_save.restore()
  resumed = experiment.run(_gmp_config(), str(tmp_path))
  assert without_times(resumed["history"]) == without_times(reference["history"])
  assert resumed["final"] == reference["final"]


def _sms_gmp_config():
  config = _gmp_config()
  config.strategy, config.prune.n_phases, config.soup.m = "sms_gmp", 2, 2
  config.soup.vary = "seed,weight_decay"
  return config


@pytest.fixture(scope="module")
def sms_gmp_run(tmp_path_factory):
  workdir = tmp_path_factory.mktemp("sms_gmp")
  return experiment.run(_sms_gmp_config(), str(workdir)), workdir


def test_sms_gmp_phases_follow_the_schedule_and_continue_its_learning_rate(sms_gmp_run):
  config, (results, workdir) = _sms_gmp_config(), sms_gmp_run
  assert sms_gmp.phase_epochs(config) == [3, 4]  # 1 + round(1.5), 1 + round(3).
  assert len(results["history"]) == 3  # One model up to the first mask update.
  steps_per_epoch = data.load(config.dataset).steps_per_epoch(config.train.batch_size)
  schedule = sparsity.CubicSchedule(steps_per_epoch, 4 * steps_per_epoch, 5, 0.0, 0.9)
  lr = schedules.make_schedule(config.train, steps_per_epoch)
  for phase, (start, end) in zip(results["phases"], [(3, 4), (4, 5)]):
    first_step = start * steps_per_epoch
    assert phase["target_sparsity"] == pytest.approx(schedule.sparsity(first_step))
    assert abs(phase["sparsity"] - phase["target_sparsity"]) < 1e-3
    assert [r["epoch"] for r in phase["history"]] == list(range(1, end - start + 1))
    # Each candidate's last step of its first epoch: the training schedule's, going on.
    assert phase["history"][0]["learning_rate"] == pytest.approx(
        [float(lr(first_step + steps_per_epoch - 1))] * 2, rel=1e-5)
    assert phase["soup"]["ingredients"] == [0, 1]
  assert abs(results["final"]["sparsity"] - 0.9) < 1e-3
  assert sorted(os.listdir(workdir / "plots")) == [
      "accuracy_vs_sparsity.png", "layer_sparsity.png", "training.png"]
