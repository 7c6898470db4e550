"""Shared test settings: CPU, fast compiles, small shared fixtures."""

import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Set in the environment so that the command-line tests' subprocesses inherit them: fast
# unoptimised CPU compiles, and one persistent compilation cache (of every program, however
# quick to compile) that lets a test reuse what an earlier test or process compiled.
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("JAX_DISABLE_MOST_OPTIMIZATIONS", "1")
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", os.path.join(ROOT, ".pytest_cache", "jax"))
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
# Generated datasets (MNIST-1D) are cached here, once for every test and subprocess.
os.environ.setdefault("SMS_JAX_CACHE_DIR", os.path.join(ROOT, ".pytest_cache", "datasets"))

import jax  # pylint: disable=g-import-not-at-top
import pytest  # pylint: disable=g-import-not-at-top

from configs import default  # pylint: disable=g-import-not-at-top


def start_cli(*args: str, **popen_kwargs) -> subprocess.Popen:
  """`python -m sms_jax.main *args` started from the repository root on the CPU, its output
  piped as text."""
  env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONUNBUFFERED="1")
  return subprocess.Popen([sys.executable, "-m", "sms_jax.main", *args], cwd=ROOT, env=env,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                          **popen_kwargs)


def make_tiny_config():
  """A dense MNIST-1D config that trains in seconds: 512 examples, 3 epochs."""
  config = default.get_config()
  config.dataset.num_train = 512
  config.train.epochs = 3
  config.train.batch_size = 64
  config.train.eval_batch_size = 256
  return config


@pytest.fixture
def tiny_config():
  """`make_tiny_config()`, fresh for each test."""
  return make_tiny_config()


@pytest.fixture
def die_after_save(monkeypatch):
  """`die_after_save(when)`: checkpoint saves raise KeyboardInterrupt right after the save for
  which `when(directory_name, step)` is true, as a killed run would stop; `restore()` undoes it."""
  from sms_jax import checkpoints  # pylint: disable=g-import-not-at-top
  real_save = checkpoints.Checkpointer.save

  def install(when):
    def save_then_die(self, step, state, meta):
      real_save(self, step, state, meta)
      if when(os.path.basename(self.directory), step):
        raise KeyboardInterrupt
    monkeypatch.setattr(checkpoints.Checkpointer, "save", save_then_die)

  install.restore = lambda: monkeypatch.setattr(checkpoints.Checkpointer, "save", real_save)
  return install


# The slowest test files (whole runs in subprocesses) are handed out first, so that the
# pytest-xdist workers (`make test`: --dist loadfile, a file's tests in one worker, sharing its
# fixtures) do not end with one of them running alone.
_SLOW_FIRST = ("test_multidevice.py", "test_end_to_end.py", "test_parallel.py", "test_notebooks.py",
               "test_tfds.py", "test_cli.py", "test_export.py", "test_sms.py", "test_sweep.py",
               "test_rewind.py")


def pytest_collection_modifyitems(items):
  items.sort(key=lambda item: item.path.name not in _SLOW_FIRST)
