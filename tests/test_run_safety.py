"""Runs lose nothing and are never silently wrong: non-finite states are never saved and name
their candidate, a workdir has one owner at a time, checkpoints only resume the run that wrote
them, and a full disk ends in one line with the last checkpoint intact."""

import os
import signal
import subprocess
import sys
import textwrap

import jax.numpy as jnp
import numpy as np
import pytest

from configs import mnist1d
from conftest import ROOT, start_cli
from sms_jax import checkpoints, experiment
from sms_jax import workdir as workdir_lib
from sms_jax.phases import plan
from sms_jax.training import loop

_ENV = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONUNBUFFERED="1")


def _fit(run_epoch, directory, epochs=3, **kwargs):
  ckpt = checkpoints.Checkpointer(str(directory), keep=3, identity="run")
  try:
    return loop.fit({"w": jnp.zeros(3)}, run_epoch, epochs=epochs, evaluate=lambda s: {},
                    checkpointer=ckpt, every_epochs=1, eval_every_epochs=1, images_per_epoch=1,
                    log=lambda line: None, **kwargs)
  finally:
    ckpt.close()


def test_a_state_that_blew_up_on_an_epochs_last_step_is_not_saved(tmp_path):
  """The epoch's mean loss is finite, its final weights are not: the last good checkpoint
  stays the newest, and resuming continues from it."""
  def blows_up_in_epoch_2(state, epoch):
    w = state["w"] + 1.0 if epoch != 1 else jnp.full(3, jnp.nan)
    return {"w": w}, {"loss": np.ones(4), "accuracy": np.zeros(4)}

  with pytest.raises(loop.NonFiniteLossError,
                     match=r"state became non-finite in epoch 2 \(non-finite values in w\); "
                           r"the last good checkpoint \(epoch 1\) stays"):
    _fit(blows_up_in_epoch_2, tmp_path / "ck")
  assert sorted(os.listdir(tmp_path / "ck")) == ["1"]
  state, history, _ = _fit(lambda s, e: ({"w": s["w"] + 1.0}, {"loss": np.ones(4),
                                                                 "accuracy": np.zeros(4)}),
                           tmp_path / "ck")
  assert [r["epoch"] for r in history] == [1, 2, 3]
  np.testing.assert_array_equal(state["w"], 3.0)


@pytest.mark.parametrize("every_epochs, min_interval_s, saved", [
    (1, 0.0, [1, 2, 3, 4, 5, 6, 7]),
    (1, 10.0, [3, 6, 7]),  # 4 s an epoch: due once 10 s passed since the last save.
    (2, 10.0, [4, 7]),  # Epochs 2 and 6 are due by count but come too soon.
    (1, 1e9, [7]),  # The last epoch is always saved.
])
def test_saves_come_every_epochs_but_not_sooner_than_min_interval(
    tmp_path, monkeypatch, every_epochs, min_interval_s, saved):
  clock = [100.0]
  monkeypatch.setattr(loop.time, "perf_counter", lambda: clock[0])

  def four_seconds(state, epoch):
    del epoch
    clock[0] += 4.0
    return {"w": state["w"] + 1.0}, {"loss": np.ones(2), "accuracy": np.zeros(2)}

  written = []
  ckpt = checkpoints.Checkpointer(str(tmp_path / "ck"), keep=10, identity="run")
  monkeypatch.setattr(ckpt, "save", lambda step, state, meta: written.append(step))
  loop.fit({"w": jnp.zeros(3)}, four_seconds, epochs=7, evaluate=lambda s: {},
           checkpointer=ckpt, every_epochs=every_epochs, eval_every_epochs=1, images_per_epoch=1,
           min_interval_s=min_interval_s, log=lambda line: None)
  ckpt.close()
  assert written == saved


def test_a_non_finite_candidate_is_named_with_its_hyperparameters(tmp_path):
  candidates = (plan.Candidate(0, 5e-4, 0.5, 3), plan.Candidate(0, 5e-4, 1.5, 3))
  names = plan.candidate_names(candidates)
  assert names == ["candidate 0 (learning_rate=0.5x)", "candidate 1 (learning_rate=1.5x)"]

  def candidate_1_diverges(state, epoch):
    loss = np.ones((4, 2))
    loss[:, 1] = np.nan if epoch == 1 else 1.0
    return state, {"loss": loss, "accuracy": np.zeros((4, 2)), "active": np.ones(2, bool)}

  with pytest.raises(loop.NonFiniteLossError,
                     match=r"loss became NaN for candidate 1 \(learning_rate=1.5x\) in epoch 2"):
    _fit(candidate_1_diverges, tmp_path / "a", candidate_names=names)

  def candidate_0_weights_blow_up(state, epoch):
    w = np.zeros((2, 3), np.float32)
    w[0, 1] = np.inf
    return {"w": jnp.asarray(w)}, {"loss": np.ones((4, 2)), "accuracy": np.zeros((4, 2))}

  with pytest.raises(loop.NonFiniteLossError,
                     match=r"state of candidate 0 \(learning_rate=0.5x\) became non-finite"):
    _fit(candidate_0_weights_blow_up, tmp_path / "b", candidate_names=names)


def test_a_diverging_candidate_of_a_real_run_is_named(tiny_config, tmp_path):
  tiny_config.update_from_flattened_dict({
      "strategy": "sms", "train.epochs": 1, "prune.n_phases": 1,
      "retrain.epochs_per_phase": 1, "soup.m": 2, "soup.vary": "learning_rate",
      "soup.learning_rates": (0.05, 1e9)})
  with pytest.raises(loop.NonFiniteLossError,
                     match=r"loss became NaN for candidate 1 \(learning_rate=.*x\) in epoch 1"):
    experiment.run(tiny_config, str(tmp_path))
  assert not os.path.exists(tmp_path / "results.json")


def test_a_second_run_on_a_held_workdir_is_refused(tmp_path):
  workdir = tmp_path / "run"
  workdir.mkdir()
  with workdir_lib.locked(str(workdir)):
    with pytest.raises(workdir_lib.WorkdirError, match=f"in use by another run .process "
                                                       f"{os.getpid()} on "):
      with workdir_lib.locked(str(workdir)):
        pass
    proc = start_cli("--config=configs/mnist1d.py:quick", f"--workdir={workdir}")
    out, err = proc.communicate(timeout=120)
  assert proc.returncode == 2, err
  assert err.strip() == (f"error: workdir {workdir} is in use by another run (process "
                         f"{open(workdir / '.lock').read().strip()}); wait for it to end, or "
                         "pass another --workdir"), err
  assert "Traceback" not in out + err
  assert sorted(os.listdir(workdir)) == [".lock"]  # The refused run wrote nothing.


def test_a_killed_owner_leaves_no_stale_lock(tmp_path):
  code = ("import sys, time; from sms_jax import workdir; "
          f"cm = workdir.locked({str(tmp_path)!r}); cm.__enter__(); print('held', flush=True); "
          "time.sleep(60)")
  owner = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
  assert owner.stdout.readline().strip() == "held"
  with pytest.raises(workdir_lib.WorkdirError, match=f"process {owner.pid} on"):
    with workdir_lib.locked(str(tmp_path)):
      pass
  owner.send_signal(signal.SIGKILL)
  owner.wait()
  with workdir_lib.locked(str(tmp_path)):  # The operating system released it.
    pass


def test_checkpoints_only_resume_the_run_that_wrote_them(tiny_config, tmp_path, capsys):
  """Without config.json a workdir's checkpoints still know their run: another seed is
  refused, and the same config resumes; a damaged config.json says how to recover."""
  tiny_config.train.epochs = 2
  reference = experiment.run(tiny_config, str(tmp_path))
  os.remove(tmp_path / "config.json")
  os.remove(tmp_path / "results.json")
  tiny_config.seed = 1
  with pytest.raises(checkpoints.CheckpointError, match="checkpoint 2 .* belongs to another run"):
    experiment.run(tiny_config, str(tmp_path))
  assert sorted(os.listdir(tmp_path / "checkpoints" / "pretrain")) == ["1", "2"]  # Kept.
  assert not os.path.exists(str(tmp_path / "checkpoints" / "pretrain") + ".corrupt")

  tiny_config.seed = 0
  with open(tmp_path / "config.json", "w") as f:
    f.write('{"seed": 0, "stra')  # Damaged.
  with pytest.raises(workdir_lib.WorkdirError, match="remove that file and run the same "
                                                     "command again"):
    experiment.run(tiny_config, str(tmp_path))
  os.remove(tmp_path / "config.json")
  capsys.readouterr()
  resumed = experiment.run(tiny_config, str(tmp_path))
  assert "resumed from checkpoint at epoch 2" in capsys.readouterr().out
  assert resumed["final"] == reference["final"]


_FULL_DISK_DRIVER = textwrap.dedent("""
    import sys
    from absl import app
    import orbax.checkpoint as ocp
    from sms_jax import main
    real_save, calls = ocp.CheckpointManager.save, []

    def save(self, step, *args, **kwargs):  # The second save finds the disk full.
      calls.append(step)
      if len(calls) == 2:
        raise ValueError("RESOURCE_EXHAUSTED: Failed writing: No space left on device "
                         "[os_error_code='28']")
      return real_save(self, step, *args, **kwargs)

    ocp.CheckpointManager.save = save
    sys.argv = ["sms_jax.main", *sys.argv[1:]]
    app.run(main.main, flags_parser=main._parse_flags)
""")


def test_cli_full_disk_is_one_line_exit_3_and_resumes(tmp_path, capsys):
  workdir = tmp_path / "run"
  flags = ["--config=configs/mnist1d.py:quick", f"--workdir={workdir}",
           "--config.strategy=dense", "--config.train.epochs=3",
           "--config.checkpoint.every_epochs=1", "--config.checkpoint.min_interval_s=0"]
  proc = subprocess.run([sys.executable, "-c", _FULL_DISK_DRIVER, *flags], cwd=ROOT, env=_ENV,
                        capture_output=True, text=True, timeout=300)
  assert proc.returncode == 3, proc.stderr
  assert proc.stderr.strip().splitlines()[-1] == (
      f"error: no space left on the device while saving checkpoint 2 in "
      f"{workdir}/checkpoints/pretrain; the earlier checkpoints are intact: free space and run "
      "the same command again to resume")
  assert "Traceback" not in proc.stderr
  assert os.listdir(workdir / "checkpoints" / "pretrain") == ["1"]
  assert not os.path.exists(workdir / "results.json")
  config = mnist1d.get_config("quick")  # The same run, resumed here (and so the same identity).
  config.update_from_flattened_dict({"strategy": "dense", "train.epochs": 3,
                                     "checkpoint.every_epochs": 1,
                                     "checkpoint.min_interval_s": 0.0})
  capsys.readouterr()
  results = experiment.run(config, str(workdir))
  assert "resumed from checkpoint at epoch 1" in capsys.readouterr().out
  assert [r["epoch"] for r in results["history"]] == [1, 2, 3]
