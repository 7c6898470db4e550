"""End to end on the embedded data: a tiny run, resume equivalence, the command line."""

import json
import os
import signal

import pytest

from conftest import start_cli
from sms_jax import experiment
from sms_jax import workdir as workdir_lib
from sms_jax import config as config_lib
from sms_jax.training import loop

TINY_FLAGS = ["--config.dataset.num_train=256", "--config.train.epochs=3",
              "--config.train.batch_size=64", "--config.train.eval_batch_size=256",
              "--config.prune.n_phases=2", "--config.retrain.epochs_per_phase=3",
              "--config.soup.m=2", "--config.checkpoint.every_epochs=1",
              "--config.checkpoint.min_interval_s=0"]


def _without_times(history):
  return [{k: v for k, v in record.items() if k != "time_s"} for record in history]


def test_tiny_run_writes_results(tiny_config, tmp_path):
  results = experiment.run(tiny_config, str(tmp_path))
  on_disk = json.load(open(tmp_path / "results.json"))
  assert on_disk["final"] == results["final"]
  assert on_disk["config"]["train"]["epochs"] == 3
  assert [r["epoch"] for r in on_disk["history"]] == [1, 2, 3]
  for key in ("test_accuracy", "val_accuracy", "test_ece"):
    assert 0.0 <= on_disk["final"][key] <= 1.0
  assert on_disk["final"]["test_accuracy"] > 0.2  # Twice chance (0.1) after 3 short epochs.
  assert on_disk["devices"]["count"] >= 1 and on_disk["devices"]["platform"] == "cpu"
  assert json.load(open(tmp_path / "config.json")) == on_disk["config"]
  events = os.listdir(tmp_path / "tensorboard")
  assert any(name.startswith("events.out.tfevents") for name in events)


def test_interrupted_run_resumes_to_identical_results(tiny_config, tmp_path, die_after_save,
                                                      capsys):
  tiny_config.train.epochs = 4
  reference = experiment.run(tiny_config, str(tmp_path / "uninterrupted"))

  die_after_save(lambda directory, step: step == 2)
  with pytest.raises(KeyboardInterrupt):
    experiment.run(tiny_config, str(tmp_path / "resumed"))
  assert not os.path.exists(tmp_path / "resumed" / "results.json")
  die_after_save.restore()
  capsys.readouterr()
  resumed = experiment.run(tiny_config, str(tmp_path / "resumed"))
  out = capsys.readouterr().out
  assert "resumed from checkpoint at epoch 2" in out
  assert "epoch 1/4" not in out and "epoch 3/4" in out  # Only epochs 3 and 4 were trained.
  assert resumed["final"] == reference["final"]  # Bit-exact on CPU.
  assert _without_times(resumed["history"]) == _without_times(reference["history"])


def test_non_finite_loss_stops_without_results(tiny_config, tmp_path):
  tiny_config.train.learning_rate = 1e12
  with pytest.raises(loop.NonFiniteLossError, match="training loss became NaN in epoch 1"):
    experiment.run(tiny_config, str(tmp_path))
  assert not os.path.exists(tmp_path / "results.json")


def test_model_that_cannot_take_the_data_is_refused_before_writing(tiny_config, tmp_path):
  tiny_config.model.name = "resnet20"  # Images only; MNIST-1D examples are [40, 1] signals.
  with pytest.raises(config_lib.ConfigError, match="model.name = 'resnet20' is not allowed"):
    experiment.run(tiny_config, str(tmp_path / "run"))
  assert not (tmp_path / "run").exists()


def test_other_config_in_workdir_is_refused(tiny_config, tmp_path):
  experiment.run(tiny_config, str(tmp_path))
  tiny_config.train.learning_rate = 0.01
  with pytest.raises(workdir_lib.WorkdirError, match="differs in train.learning_rate"):
    experiment.run(tiny_config, str(tmp_path))


# One case per path to the one-line refusal: a flag naming no key, a rule that needs the data
# (the messages of the config rules are checked in-process in test_config, test_bad_inputs),
# an empty workdir.
@pytest.mark.parametrize("override, expected", [
    ("--config.train.lr=0.1", "lr"),
    ("--config.model.name=cnn2d", "model.name = 'cnn2d' is not allowed for mnist1d"),
    ("--workdir=", "--workdir is empty"),
])
def test_cli_refuses_bad_config_in_one_line(tmp_path, override, expected):
  workdir = tmp_path / "run"
  proc = start_cli("--config=configs/mnist1d.py", f"--workdir={workdir}", override)  # Last wins.
  out, err = proc.communicate(timeout=120)
  assert proc.returncode == 2, err
  assert len(err.strip().splitlines()) == 1, err
  assert expected in err and "Traceback" not in err + out
  assert not workdir.exists()


def test_cli_killed_run_resumes_to_identical_results(tmp_path):
  """kill -9 in the middle of an SMS phase, start the same command again: the results of an
  uninterrupted run (made in this process from the same config)."""
  args = ["--config=configs/mnist1d.py", f"--workdir={tmp_path / 'run'}", *TINY_FLAGS]
  proc = start_cli(*args)
  in_phase_2 = False
  for line in proc.stdout:
    in_phase_2 = in_phase_2 or line.startswith("phase 2/2")
    if in_phase_2 and line.startswith("epoch 2/3"):
      proc.send_signal(signal.SIGKILL)
      break
  proc.wait(timeout=60)
  assert proc.returncode == -signal.SIGKILL
  assert not (tmp_path / "run" / "results.json").exists()

  proc = start_cli(*args)
  out, err = proc.communicate(timeout=300)
  assert proc.returncode == 0, err
  assert "resumed after phase 1" in out and "resumed from checkpoint at epoch" in out
  assert "could not be restored" not in err and "WARNING" not in err and "Traceback" not in err
  epoch_lines = [line for line in out.splitlines() if line.startswith("epoch ")]
  assert "run 100%" in epoch_lines[-1] and "mean of 2 candidates:" in epoch_lines[-1]
  resumed = json.load(open(tmp_path / "run" / "results.json"))

  from configs import mnist1d  # pylint: disable=g-import-not-at-top
  config = mnist1d.get_config()
  config.update_from_flattened_dict({flag[len("--config."):].split("=")[0]: int(
      flag.split("=")[1]) for flag in TINY_FLAGS})
  straight = experiment.run(config, str(tmp_path / "straight"))
  assert resumed["final"] == straight["final"]
  assert _without_times(resumed["history"]) == _without_times(straight["history"])
  assert [p["soup"] for p in resumed["phases"]] == [p["soup"] for p in straight["phases"]]


def test_default_workdir_is_stable_and_config_specific(tiny_config):
  from sms_jax import main  # pylint: disable=g-import-not-at-top
  first = main.default_workdir(tiny_config, "configs/mnist1d.py:quick")
  assert first == main.default_workdir(tiny_config, "configs/mnist1d.py:quick")
  assert first.startswith(os.path.join("runs", f"mnist1d-{tiny_config.strategy}-"))
  tiny_config.seed = 1
  assert main.default_workdir(tiny_config, "configs/mnist1d.py") != first
