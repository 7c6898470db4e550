"""The command line: shipped configs by name (also from an installed package), `--help` and
`--config_help`, the run's progress and ETA, and Ctrl-C at any moment."""

import importlib
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import time

import jax
import pytest

from conftest import ROOT, start_cli
from sms_jax import config as config_lib
from sms_jax import config_files, report, strategies
from sms_jax.strategies import sms_gmp

QUICK = ["--config.dataset.num_train=512", "--config.checkpoint.every_epochs=1",
         "--config.checkpoint.min_interval_s=0"]


def _env(**extra) -> dict[str, str]:
  return dict(os.environ, JAX_PLATFORMS="cpu", PYTHONUNBUFFERED="1", **extra)


def test_shipped_configs_resolve_by_name_to_the_one_copy_in_the_package():
  names = config_files.shipped_configs()
  assert {"default", "mnist1d", "cifar10", "sms_gmp_mnist1d"} <= set(names)
  assert names["mnist1d"].startswith("The embedded default")
  path = config_files.resolve("mnist1d")
  assert path == os.path.join(config_files.SHIPPED_DIR, "mnist1d.py")
  assert config_files.resolve("cifar10:resnet56") == os.path.join(config_files.SHIPPED_DIR,
                                                                   "cifar10.py") + ":resnet56"
  # The checkout's configs/ is the package's folder, not a copy.
  assert os.path.samefile(os.path.join(ROOT, "configs"), config_files.SHIPPED_DIR)
  assert config_files.resolve("configs/mnist1d.py:quick") == "configs/mnist1d.py:quick"
  assert config_files.resolve("no_such_config") == "no_such_config"
  line = config_files.error_line("no_such_config", FileNotFoundError())
  assert "no such file; allowed: a config file's path or a shipped config's name: " in line
  assert "mnist1d" in line


def test_a_config_file_outside_the_repository_imports_configs(tmp_path):
  """`from configs import default` finds the shipped configs where no `configs` package is."""
  (tmp_path / "mine.py").write_text(
      "from configs import default, mnist1d\n\n\ndef get_config():\n"
      "  config = mnist1d.get_config('quick')\n  config.seed = default.get_config().seed + 7\n"
      "  return config\n")
  code = ("from sms_jax import config_files; config_files.make_importable('mine.py'); "
          "import configs, mine; print(configs.__name__, mine.get_config().seed)")
  out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=_env(),
                       capture_output=True, text=True, check=True).stdout
  assert out.split() == ["sms_jax.configs", "7"]


def test_help_lists_strategies_configs_and_sections_and_exits_0():
  tic = time.perf_counter()
  proc = subprocess.run([sys.executable, "-m", "sms_jax.main", "--help"], cwd=ROOT, env=_env(),
                        capture_output=True, text=True, timeout=120)
  seconds = time.perf_counter() - tic
  assert proc.returncode == 0 and proc.stderr == "", proc.stderr
  out = " ".join(proc.stdout.split())  # Help lines wrap.
  for name, strategy in strategies.STRATEGIES.items():
    assert f"{name} {strategy.help}" in out
  for name in config_files.shipped_configs():
    assert f" {name} " in out
  assert "train.{batch_size," in out and "soup.{bn_recalibration, bn_recalibration_average," in out
  assert "--config_help" in out and "130 interrupted" in out
  assert seconds < 30  # The strategies' registry loads JAX; nothing else runs.


def test_config_help_lists_every_key_with_default_and_allowed_values(capsys):
  from sms_jax import main  # pylint: disable=g-import-not-at-top
  with pytest.raises(SystemExit) as exit_info:
    main._parse_flags(["sms_jax.main", "--config_help"])  # pylint: disable=protected-access
  assert exit_info.value.code == 0
  out = " ".join(capsys.readouterr().out.split())
  rules = config_lib.rules()
  for key, default in config_lib.flat_schema().items():
    shown = repr(tuple(default) if isinstance(default, (list, tuple)) else default)
    allowed = rules[key][1] if key in rules else ""  # Free-form keys: their type.
    assert f"{key} {shown} {allowed}".strip() in out, key


def test_run_progress_counts_the_whole_run_and_resumed_work_as_done():
  clock = [0.0]
  progress = report.RunProgress([(3, 1), (2, 4), (2, 4)], 100, clock=lambda: clock[0])
  assert progress.total == 300 + 800 + 800
  progress.resume(0, 3)  # Pretraining restored from its checkpoint: done, but not timed.
  progress.resume(1, 1)  # And the first epoch of phase 1.
  assert progress.done == 700 and progress.eta_s() == 0.0
  clock[0] = 8.0
  progress.epoch_trained(1)  # 400 images in 8 s: 0.02 s an image, 800 images left.
  assert progress.fraction() == pytest.approx(1100 / 1900)
  assert progress.eta_s() == pytest.approx(16.0)
  progress.resume(2, 0)  # Phase 2 starts: nothing skipped.
  assert progress.done == 1100
  clock[0] = 10.0  # The next 400 images in 2 s: the first epoch's compilation is left out.
  progress.epoch_trained(2)
  assert progress.eta_s() == pytest.approx(400 * 2.0 / 400)


def test_planned_epochs_follow_the_strategies_phases():
  config = importlib.import_module("sms_jax.configs.sms_gmp_mnist1d").get_config()
  stages = strategies.STRATEGIES["sms_gmp"].planned_epochs(config)
  assert stages[0] == (sms_gmp.phase_epochs(config)[0], 1)
  assert sum(epochs for epochs, _ in stages) == config.train.epochs  # One schedule, split.
  assert {m for _, m in stages[1:]} == {config.soup.m} and len(stages) == config.prune.n_phases + 1
  config.strategy = "imp_mx"
  assert strategies.STRATEGIES["imp_mx"].planned_epochs(config) == [(config.train.epochs, 1)] + [
      (config.retrain.epochs_per_phase * config.soup.m, 1)] * config.prune.n_phases
  assert strategies.STRATEGIES["dense"].planned_epochs(config) == [(config.train.epochs, 1)]


def test_epoch_lines_say_candidates_are_averaged_and_show_the_runs_eta():
  record = {"train_loss": [0.5, 0.7], "train_accuracy": [0.8, 0.6], "val_loss": [0.4, 0.6],
            "val_accuracy": [0.9, 0.7], "learning_rate": [0.1, 0.1]}
  line = report.epoch_line(2, 10, record, 1234.0, 75.0, 0.25)
  assert line.startswith("epoch  2/10  mean of 2 candidates:  loss 0.6000  acc 0.700")
  assert line.endswith("1,234 img/s  run 25%  ETA 0:01:15")
  record["train_loss"], record["train_accuracy"] = [0.5, None], [0.8, None]
  assert "mean of 1 training candidate of 2:  loss 0.5000" in report.epoch_line(
      2, 10, record, 1.0, 0.0, 1.0)
  single = {"train_loss": 0.5, "train_accuracy": 0.8}
  assert report.epoch_line(1, 3, single, 1.0, 0.0, 0.1).startswith("epoch 1/3  loss 0.5000")


def test_ticker_reports_long_steps_at_most_every_few_seconds():
  clock, lines = [0.0], []
  tick = report.Ticker("evaluating phase 2", 7, "sets", every_s=5.0, log_fn=lines.append,
                       clock=lambda: clock[0])
  for done, now in [(1, 1.0), (2, 4.9), (3, 12.0), (4, 13.0), (5, 17.5)]:
    clock[0] = now
    tick(done)
  assert lines == ["evaluating phase 2: 3/7 sets, 12 s", "evaluating phase 2: 5/7 sets, 18 s"]


def test_ticked_reports_the_items_done_of_a_slow_loop():
  clock, lines = [0.0], []
  for k in report.ticked(["a", "b", "c"], "evaluating phase 1", "sets", log_fn=lines.append,
                         clock=lambda: clock[0]):
    clock[0] += 3.0 if k != "c" else 0.5
  assert lines == ["evaluating phase 1: 2/3 sets, 6 s"]


@pytest.fixture(name="python_sigint")
def _python_sigint():
  """SIGINT raises KeyboardInterrupt while the test runs, as the command line sets it before a
  run. Once, in a full `make test`, both tests using this found SIGINT not raising in their
  worker, with no test having changed the handler (checked per test in a second run)."""
  previous = signal.signal(signal.SIGINT, signal.default_int_handler)
  yield
  signal.signal(signal.SIGINT, previous)


def test_ctrl_c_during_a_deferred_write_arrives_after_it(python_sigint):  # pylint: disable=unused-argument
  done = []
  with pytest.raises(KeyboardInterrupt):
    with report.interrupts_deferred():
      signal.raise_signal(signal.SIGINT)
      done.append("the write went on")
  assert done == ["the write went on"]
  assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
  with pytest.raises(KeyboardInterrupt):  # A second Ctrl-C does not wait.
    with report.interrupts_deferred():
      signal.raise_signal(signal.SIGINT)
      signal.raise_signal(signal.SIGINT)
      done.append("never")
  assert done == ["the write went on"]


def test_a_ctrl_c_that_python_would_ignore_is_raised_again(monkeypatch, python_sigint):  # pylint: disable=unused-argument
  """A KeyboardInterrupt raised in a gc callback or `__del__` (JAX has one) is only printed by
  Python, and the run would go on: the command line raises it again in the main thread."""
  from sms_jax import main  # pylint: disable=g-import-not-at-top
  again = main._interrupt_again  # pylint: disable=protected-access
  monkeypatch.setattr(sys, "unraisablehook", again)

  class InterruptedWhileCollected:
    def __del__(self):
      raise KeyboardInterrupt

  with pytest.raises(KeyboardInterrupt):
    InterruptedWhileCollected()  # Collected at once: the interrupt is "ignored" there.
    for _ in range(500):  # It arrives a moment later.
      time.sleep(0.01)


def test_orbax_partial_restore_warnings_are_dropped_while_restoring(caplog):
  from absl import logging as absl_logging  # pylint: disable=g-import-not-at-top
  from sms_jax import checkpoints  # pylint: disable=g-import-not-at-top
  with caplog.at_level(logging.WARNING):
    with checkpoints._partial_restore_notes_dropped():  # pylint: disable=protected-access
      absl_logging.warning('Item "%s" was found in the checkpoint, but could not be restored. '
                           "Please provide a `CheckpointHandlerRegistry`.", "state")
      absl_logging.warning("something else")
    absl_logging.warning('Item "meta" was found in the checkpoint, but could not be restored.')
  messages = [record.getMessage() for record in caplog.records]
  assert messages == ["something else",
                      'Item "meta" was found in the checkpoint, but could not be restored.']


def _one_interrupted_line(proc, out: str, err: str, expected: str) -> None:
  assert proc.returncode == 130, err
  assert err.strip().splitlines() == [err.strip()] and expected in err, err
  assert "Traceback" not in out + err


def test_ctrl_c_while_starting_up_is_one_line_and_exit_130(tmp_path):
  """SIGINT while JAX loads (before the run): one line, nothing written."""
  maps = "/proc/{}/maps"
  if not os.path.exists(maps.format(os.getpid())):
    pytest.skip("needs /proc to see JAX loading")
  proc = start_cli("--config=mnist1d:quick", f"--workdir={tmp_path / 'run'}")
  deadline = time.monotonic() + 60
  while time.monotonic() < deadline and proc.poll() is None:
    with open(maps.format(proc.pid)) as f:
      if "jaxlib" in f.read():
        break
    time.sleep(0.01)
  proc.send_signal(signal.SIGINT)
  out, err = proc.communicate(timeout=60)
  _one_interrupted_line(proc, out, err, "interrupted")
  assert not (tmp_path / "run").exists()


def test_ctrl_c_while_training_and_saving_is_one_line(tmp_path):
  """SIGINT right after the first epoch (its checkpoint is being written): exit 130, one line,
  no results. (The resume after an interruption: tests/test_end_to_end.py.)"""
  proc = start_cli("--config=mnist1d:quick", f"--workdir={tmp_path / 'run'}", *QUICK)
  for line in proc.stdout:
    if line.startswith("epoch 1/"):
      proc.send_signal(signal.SIGINT)
      break
  out, err = proc.communicate(timeout=60)
  _one_interrupted_line(proc, out, err, "interrupted; run the same command again to resume")
  assert not (tmp_path / "run" / "results.json").exists()


def test_installed_package_runs_a_shipped_config_from_anywhere(tmp_path):
  """A non-editable install (no network: --no-deps --no-build-isolation) has the configs."""
  source = tmp_path / "src"
  source.mkdir()
  for name in ("setup.cfg", "pyproject.toml", "README.md"):
    shutil.copy(os.path.join(ROOT, name), source / name)
  shutil.copytree(os.path.join(ROOT, "sms_jax"), source / "sms_jax",
                  ignore=shutil.ignore_patterns("__pycache__"))
  site = tmp_path / "site"
  subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps",
                  "--no-build-isolation", "--target", str(site), str(source)], check=True,
                 capture_output=True, env=_env())
  assert (site / "sms_jax" / "configs" / "mnist1d.py").is_file()
  assert not (site / "configs").exists()  # No top-level `configs` package of ours.
  env = _env(PYTHONPATH=str(site))
  where = subprocess.run([sys.executable, "-c", "import sms_jax; print(sms_jax.__file__)"],
                         cwd=tmp_path, env=env, capture_output=True, text=True, check=True)
  assert where.stdout.startswith(str(site))
  proc = subprocess.run(
      [sys.executable, "-m", "sms_jax.main", "--config=mnist1d:quick", "--workdir=run",
       "--config.strategy=dense", "--config.train.epochs=1", "--config.dataset.num_train=256"],
      cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
  assert proc.returncode == 0, proc.stderr
  results = json.load(open(tmp_path / "run" / "results.json"))
  assert results["config"]["dataset"]["name"] == "mnist1d" and results["final"]


def test_the_command_caches_every_compiled_program_unless_told_otherwise(monkeypatch, tmp_path):
  """JAX caches only programs that took a second to compile; the command caches all (the
  embedded default compiles ~150 quick ones), unless the environment sets the cache's
  directory or threshold itself."""
  from sms_jax import main  # pylint: disable=g-import-not-at-top
  saved = {name: getattr(jax.config, name) for name in (
      "jax_compilation_cache_dir", "jax_persistent_cache_min_compile_time_secs")}
  try:
    monkeypatch.delenv("JAX_COMPILATION_CACHE_DIR", raising=False)
    monkeypatch.delenv("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 1.0)
    main._enable_compilation_cache()  # pylint: disable=protected-access
    assert jax.config.jax_compilation_cache_dir == str(tmp_path / ".cache" / "sms_jax" / "xla")
    assert jax.config.jax_persistent_cache_min_compile_time_secs == 0.0
    monkeypatch.setenv("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "2")
    monkeypatch.setenv("JAX_COMPILATION_CACHE_DIR", "/elsewhere")
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 2.0)
    jax.config.update("jax_compilation_cache_dir", "/elsewhere")
    main._enable_compilation_cache()  # pylint: disable=protected-access
    assert jax.config.jax_persistent_cache_min_compile_time_secs == 2.0
    assert jax.config.jax_compilation_cache_dir == "/elsewhere"
  finally:
    for name, value in saved.items():
      jax.config.update(name, value)
