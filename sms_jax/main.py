"""Command line: `python -m sms_jax.main --config=configs/mnist1d.py [--workdir=runs/x]`.

Any config key can be overridden, e.g. `--config.train.batch_size=64`. Exit codes: 0 done,
1 training failed (non-finite loss), 2 bad input (config, workdir, dataset), 130 interrupted.
"""

import hashlib
import json
import os
import sys

from absl import app
from absl import flags
from absl import logging
from ml_collections import config_flags

_CONFIG = config_flags.DEFINE_config_file(
    "config", None,
    "Experiment config file, e.g. configs/mnist1d.py (or configs/mnist1d.py:quick).")
_WORKDIR = flags.DEFINE_string(
    "workdir", None,
    "Where checkpoints and results go; default: runs/<config>-<strategy>-<hash of the config>.")
_COORDINATOR = flags.DEFINE_string(
    "coordinator_address", "",
    "Multi-process runs: host:port of process 0. Unset: read from the cluster's environment "
    "(SLURM, Open MPI, multi-host TPU, JAX_COORDINATOR_ADDRESS); none there: one process.")
_NUM_PROCESSES = flags.DEFINE_integer(
    "num_processes", 0, "Multi-process runs: the number of processes (0: from the environment).")
_PROCESS_ID = flags.DEFINE_integer(
    "process_id", -1, "Multi-process runs: this process's index (-1: from the environment).")
flags.mark_flag_as_required("config")


def _fail(message: str, code: int = 2):
  print(f"error: {message}", file=sys.stderr, flush=True)
  sys.exit(code)


def _configs_importable(argv: list[str]) -> None:
  """Lets config files `from configs import default` when run from outside the repository:
  puts the folder that holds the config file's folder on sys.path."""
  for arg in argv:
    if arg.startswith("--config="):
      path = os.path.abspath(arg[len("--config="):].split(":")[0])
      sys.path.insert(0, os.path.dirname(os.path.dirname(path)))


def _parse_flags(argv: list[str]) -> list[str]:
  """Parses flags; a bad flag, override or config file is one line on stderr and exit code 2."""
  _configs_importable(argv)
  try:
    return flags.FLAGS(argv)
  except Exception as error:  # pylint: disable=broad-except
    overrides = [a[len("--config."):].split("=")[0] for a in argv if a.startswith("--config.")]
    from sms_jax import config as config_lib  # pylint: disable=g-import-not-at-top
    unknown = config_lib.unknown_keys(overrides)
    if unknown:
      _fail(config_lib.unknown_key_message(unknown[0]))
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    # A config file that fails to load gives a heading and a traceback: keep both ends.
    _fail(" ".join(lines[:1] + lines[-1:] if len(lines) > 1 else lines) or type(error).__name__)


def default_workdir(config, config_path: str) -> str:
  """`runs/<config file stem>-<strategy>-<8 hex digits of the config>`: stable, so resumable.

  The digest leaves out the checkpoint policy, which a resumed run may change.
  """
  from sms_jax import experiment  # pylint: disable=g-import-not-at-top
  stem = os.path.splitext(os.path.basename(config_path.split(":")[0]))[0]
  key = experiment.resume_key(json.loads(config.to_json()))
  digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:8]
  return os.path.join("runs", f"{stem}-{config.strategy}-{digest}")


def _enable_compilation_cache() -> None:
  """Caches compiled programs in ~/.cache/sms_jax/xla unless JAX_COMPILATION_CACHE_DIR is set.

  A resumed or repeated run then skips compilation (on CPU, cnn1d's epoch: 5 s -> 0.7 s).
  """
  if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
    import jax  # pylint: disable=g-import-not-at-top
    jax.config.update("jax_compilation_cache_dir",
                      os.path.join(os.path.expanduser("~"), ".cache", "sms_jax", "xla"))


def main(argv: list[str]) -> None:
  """Validates, picks the workdir, runs the experiment; user errors end as one line."""
  if not flags.FLAGS["verbosity"].present:  # Orbax and JAX are chatty at INFO.
    logging.set_verbosity(logging.WARNING)
  if len(argv) > 1:
    _fail(f"unexpected arguments {' '.join(argv[1:])!r}; use --config and --workdir")
  try:
    config = _CONFIG.value
    config.to_json()  # A file that failed to load raises on first access.
  except Exception as error:  # pylint: disable=broad-except
    _fail(f"cannot load --config: {str(error).strip().splitlines()[-1].strip()}")

  # Imported here so that `--help` and flag errors answer without loading JAX.
  from sms_jax import checkpoints  # pylint: disable=g-import-not-at-top
  from sms_jax import config as config_lib  # pylint: disable=g-import-not-at-top
  from sms_jax import experiment  # pylint: disable=g-import-not-at-top
  from sms_jax.data import tfds_source  # pylint: disable=g-import-not-at-top
  from sms_jax.training import loop  # pylint: disable=g-import-not-at-top

  from sms_jax import parallel  # pylint: disable=g-import-not-at-top
  _enable_compilation_cache()
  try:
    parallel.initialize(_COORDINATOR.value, _NUM_PROCESSES.value, _PROCESS_ID.value)
  except Exception as error:  # pylint: disable=broad-except
    _fail(f"cannot join the multi-process run ({type(error).__name__}: "
          f"{str(error).strip().splitlines()[0][:200]}); check --coordinator_address, "
          "--num_processes and --process_id")
  workdir = _WORKDIR.value
  if workdir is None:
    try:
      config_lib.validate(config)
    except config_lib.ConfigError as error:
      _fail(str(error))
    workdir = default_workdir(config, config_flags.get_config_filename(flags.FLAGS["config"]))
    print(f"no --workdir given: using {workdir}", flush=True)
  try:
    experiment.run(config, workdir)
  except (config_lib.ConfigError, experiment.WorkdirError, checkpoints.CheckpointError,
          tfds_source.DatasetNotPreparedError) as error:
    _fail(str(error))
  except loop.NonFiniteLossError as error:
    _fail(str(error), code=1)
  except KeyboardInterrupt:
    _fail(f"interrupted; run the same command again to resume from the last checkpoint in "
          f"{workdir}", code=130)


if __name__ == "__main__":
  app.run(main, flags_parser=_parse_flags)
