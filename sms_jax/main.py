"""Command line: `python -m sms_jax.main --config=configs/mnist1d.py [--workdir=runs/x]`.

Any config key can be overridden, e.g. `--config.train.batch_size=64`. Exit codes: 0 done,
1 training failed (non-finite loss or weights), 2 bad input (config, workdir in use or of
another run, unusable checkpoints, dataset), 3 no space left on the device, 130 interrupted.
"""

import logging as py_logging
import os
import sys
import warnings

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
  # ml_collections logs a warning for get_config() returning None: the error below says it.
  returned_none = lambda record: "did you forget a return statement" not in record.getMessage()
  logging.get_absl_logger().addFilter(returned_none)
  try:
    return flags.FLAGS(argv)
  except Exception as error:  # pylint: disable=broad-except
    from sms_jax import config as config_lib  # pylint: disable=g-import-not-at-top
    from sms_jax import config_files  # pylint: disable=g-import-not-at-top
    overrides = dict(a[len("--config."):].partition("=")[::2] for a in argv
                     if a.startswith("--config."))
    unknown = config_lib.unknown_keys(list(overrides))
    if unknown:
      _fail(config_lib.unknown_key_message(unknown[0]))
    message = str(error)
    key = message[len("flag --config."):].split("=", 1)[0]
    if message.startswith("flag --config.") and key in overrides:  # A value of the wrong type.
      _fail(config_lib.wrong_type_message(key, overrides[key]))
    specs = [a[len("--config="):] for a in argv if a.startswith("--config=")] + [
        b for a, b in zip(argv, argv[1:]) if a == "--config"]
    if specs and "--config must have a value other than None" in message:
      error = TypeError("get_config() returned None; allowed: a ml_collections.ConfigDict")
    # Errors of the config file's code come through as they are, or wrapped by ml_collections.
    if specs and (not isinstance(error, flags.Error)
                  or "Error whilst parsing config file" in message):
      _fail(config_files.error_line(specs[-1], error))
    lines = [line.strip() for line in message.splitlines() if line.strip()]
    _fail(" ".join(lines[:1] + lines[-1:] if len(lines) > 1 else lines) or type(error).__name__)
  finally:
    logging.get_absl_logger().removeFilter(returned_none)


def default_workdir(config, config_path: str) -> str:
  """`runs/<config file stem>-<strategy>-<8 hex digits of the config>`: stable, so resumable.

  The digest leaves out the checkpoint policy, which a resumed run may change.
  """
  from sms_jax import config as config_lib  # pylint: disable=g-import-not-at-top
  stem = os.path.splitext(os.path.basename(config_path.split(":")[0]))[0]
  return os.path.join("runs", f"{stem}-{config.strategy}-{config_lib.run_identity(config)[:8]}")


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
  from sms_jax import config_files  # pylint: disable=g-import-not-at-top
  try:
    config = _CONFIG.value
    config_files.check_loaded(config)  # A file that failed to load raises on first access.
  except Exception as error:  # pylint: disable=broad-except
    _fail(config_files.error_line(config_flags.get_config_filename(flags.FLAGS["config"]), error))
  config_files.parse_tuple_overrides(config,
                                     config_flags.get_override_values(flags.FLAGS["config"]))

  # Imported here so that `--help` and flag errors answer without loading JAX.
  from sms_jax import checkpoints  # pylint: disable=g-import-not-at-top
  from sms_jax import config as config_lib  # pylint: disable=g-import-not-at-top
  from sms_jax import experiment  # pylint: disable=g-import-not-at-top
  from sms_jax import workdir as workdir_lib  # pylint: disable=g-import-not-at-top
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
  except (config_lib.ConfigError, workdir_lib.WorkdirError, checkpoints.CheckpointError,
          tfds_source.DatasetNotPreparedError) as error:
    _fail(str(error))
  except (loop.NonFiniteLossError, checkpoints.NonFiniteStateError) as error:
    _fail(str(error), code=1)
  except Exception as error:  # pylint: disable=broad-except
    if not checkpoints.is_storage_full(error):
      raise
    # Orbax's abandoned writes may still report as the interpreter exits: nothing to add.
    py_logging.getLogger("asyncio").disabled = True
    logging.set_verbosity(logging.FATAL)
    warnings.simplefilter("ignore")  # E.g. "coroutine ... was never awaited".
    _fail(error.strerror if isinstance(error, checkpoints.StorageFullError) else
          f"no space left on the device ({str(error).splitlines()[0][:200]}); the last "
          f"checkpoint in {workdir} is intact: free space and run the same command again",
          code=3)
  except KeyboardInterrupt:
    _fail(f"interrupted; run the same command again to resume from the last checkpoint in "
          f"{workdir}", code=130)


if __name__ == "__main__":
  app.run(main, flags_parser=_parse_flags)
