"""Command line: `python -m sms_jax.main --config=mnist1d [--workdir=runs/x]`.

`--config` takes a shipped config's name, optionally with its argument (`mnist1d`,
`mnist1d:quick`, `cifar10:resnet56`), or a config file's path (`configs/mnist1d.py:quick`, or
a file of one's own that starts from `configs/default.py`). Any config key can be overridden,
e.g. `--config.train.batch_size=64`; `--config_help` lists the keys with their defaults and
allowed values. Exit codes: 0 done, 1 training failed (non-finite loss or weights), 2 bad input
(config, workdir in use or of another run, unusable checkpoints, dataset), 3 no space left on
the device, 130 interrupted (Ctrl-C: run the same command again to resume).
"""

import os
import signal
import sys


def _interrupted_before_the_run(*_) -> None:
  """Ctrl-C before the run began (imports, flags, JAX's start-up): nothing was written, so
  the process ends at once with one line and exit code 130."""
  signal.signal(signal.SIGINT, signal.SIG_IGN)
  print("error: interrupted before the run began; nothing was written", file=sys.stderr,
        flush=True)
  os._exit(130)  # Nothing to clean up yet.


if __name__ == "__main__":  # From the very start: the imports below take a while.
  signal.signal(signal.SIGINT, _interrupted_before_the_run)

# pylint: disable=g-import-not-at-top,wrong-import-position
import _thread
import logging as py_logging
import textwrap
import threading
from typing import Callable
import warnings

from absl import app
from absl import flags
from absl import logging
from ml_collections import config_flags

from sms_jax import config as config_lib
from sms_jax import config_files
from sms_jax.tools import cli
# pylint: enable=g-import-not-at-top,wrong-import-position

_CONFIG = config_flags.DEFINE_config_file(
    "config", None,
    "A shipped config's name or a config file's path, optionally with its argument: mnist1d, "
    "mnist1d:quick, configs/mnist1d.py:quick, my_config.py.")
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
_CONFIG_HELP = flags.DEFINE_boolean(
    "config_help", False,
    "Print every config key with its default and allowed values, then exit.")
flags.mark_flag_as_required("config")


def _fail(message: str, code: int = 2):
  print(f"error: {message}", file=sys.stderr, flush=True)
  sys.exit(code)


def _interrupt_again(unraisable) -> None:
  """A Ctrl-C that lands where Python ignores exceptions (a gc callback such as JAX's, a
  `__del__`) would be lost and the run go on: raises it again in the main thread. Other
  unraisable errors are reported as usual."""
  if isinstance(unraisable.exc_value, KeyboardInterrupt):
    # A moment later, from another thread: raised inside this hook it would be ignored again.
    again = threading.Timer(0.1, _thread.interrupt_main)
    again.daemon = True
    again.start()
  else:
    sys.__unraisablehook__(unraisable)


def _exit_interrupted(workdir: str) -> None:
  """The one line of an interrupted run, and exit code 130. Another Ctrl-C is ignored from
  here, and what orbax's or asyncio's threads still report while the interpreter exits (an
  interrupted checkpoint write) goes nowhere."""
  signal.signal(signal.SIGINT, signal.SIG_IGN)
  print(f"error: interrupted; run the same command again to resume from the last checkpoint in "
        f"{workdir}", file=sys.stderr, flush=True)
  os.dup2(os.open(os.devnull, os.O_WRONLY), 2)
  sys.exit(130)


def _rows(pairs: list[tuple[str, str]], hang: int = 0) -> str:
  """`(name, text)` pairs as aligned rows, the text wrapped at 100 columns (its continuation
  lines indented `hang` more)."""
  width = max(len(name) for name, _ in pairs) + 2
  return "\n".join(textwrap.fill(text, 100, initial_indent=f"  {name:<{width}}",
                                  subsequent_indent=" " * (width + 2 + hang))
                    for name, text in pairs)


def _config_keys_help() -> str:
  """The config's top-level keys, then each section with its keys (no JAX)."""
  sections = {}
  for key in config_lib.flat_schema():
    section, _, name = key.rpartition(".")
    sections.setdefault(section, []).append(name)
  return "\n".join([f"  {', '.join(sections.pop(''))}"] + [
      textwrap.fill(f"{section}.{{{', '.join(names)}}}", 100, initial_indent="  ",
                    subsequent_indent="      ") for section, names in sections.items()])


def _print_help() -> None:
  """Usage, flags, shipped configs and config keys at once; then the strategies (their
  registry loads JAX: a second or two)."""
  ours = (_CONFIG, _WORKDIR, _CONFIG_HELP, _COORDINATOR, _NUM_PROCESSES, _PROCESS_ID)
  print(f"{__doc__.strip()}\n\nflags:\n"
        + _rows([(f"--{h.name}", flags.FLAGS[h.name].help) for h in ours])
        + "\n\nconfigs shipped with sms_jax (--config=<name>, e.g. --config=mnist1d:quick):\n"
        + _rows(list(config_files.shipped_configs().items()))
        + "\n\nconfig keys (--config.<key>=<value>; --config_help: defaults, allowed values):\n"
        + _config_keys_help() + "\n", flush=True)
  from sms_jax import strategies  # pylint: disable=g-import-not-at-top
  print("strategies (--config.strategy=<name>):\n"
        + _rows([(name, s.help) for name, s in strategies.STRATEGIES.items()]))


def _print_config_help() -> None:
  """Every config key, its default and what it allows (the registries load JAX)."""
  rows = config_lib.describe_keys()
  width = max(len(default) for _, default, _ in rows)
  print("config keys (--config.<key>=<value>): key, default, allowed values\n"
        + _rows([(key, f"{default:<{width}}  {allowed}") for key, default, allowed in rows],
                hang=width + 2))


def _print_and_exit(print_help: Callable[[], None]) -> None:
  """Prints a help text and exits 0 (also when the reader stops early, e.g. `| head`)."""
  try:
    print_help()
    sys.stdout.flush()
  except BrokenPipeError:
    os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
  sys.exit(0)


def _with_configs_resolved(argv: list[str]) -> list[str]:
  """`argv` with each --config value that names a shipped config replaced by its file's path
  (`config_files.resolve`); each config file is made able to `from configs import default`."""
  out = list(argv)
  for k, arg in enumerate(argv):
    if arg.startswith("--config="):
      where, prefix, given = k, "--config=", arg[len("--config="):]
    elif arg == "--config" and k + 1 < len(argv):
      where, prefix, given = k + 1, "", argv[k + 1]
    else:
      continue
    out[where] = prefix + config_files.resolve(given)
    path = out[where][len(prefix):].split(":")[0]
    if os.path.isfile(path):
      config_files.make_importable(path)
  return out


def _parse_flags(argv: list[str]) -> list[str]:
  """Parses flags; a bad flag, override or config file is one line on stderr and exit code 2.

  `--help` and `--config_help` print and exit 0 before anything else (even without --config).
  """
  options = argv[1:argv.index("--")] if "--" in argv else argv[1:]
  if cli.wants_help(options):
    _print_and_exit(_print_help)
  if any(arg in ("--config_help", "--config_help=true", "--config_help=True") for arg in options):
    _print_and_exit(_print_config_help)
  argv = _with_configs_resolved(argv)
  # ml_collections logs a warning for get_config() returning None: the error below says it.
  returned_none = lambda record: "did you forget a return statement" not in record.getMessage()
  logging.get_absl_logger().addFilter(returned_none)
  try:
    return flags.FLAGS(argv)
  except Exception as error:  # pylint: disable=broad-except
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
  stem = os.path.splitext(os.path.basename(config_path.split(":")[0]))[0]
  return os.path.join("runs", f"{stem}-{config.strategy}-{config_lib.run_identity(config)[:8]}")


def _enable_compilation_cache() -> None:
  """Caches compiled programs in ~/.cache/sms_jax/xla unless JAX_COMPILATION_CACHE_DIR is set,
  every program however quick to compile unless JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS is.

  A resumed or repeated run then skips compilation (on CPU, cnn1d's epoch: 5 s -> 0.7 s). JAX
  caches only programs that took a second or more by default; the embedded default compiles
  about 150 quicker ones (repeated runs on a loaded 2-core CPU: 27 CPU s against 40; on an
  idle one within the noise, bench/RESULTS.md).
  """
  import jax  # pylint: disable=g-import-not-at-top
  if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
    jax.config.update("jax_compilation_cache_dir",
                      os.path.join(os.path.expanduser("~"), ".cache", "sms_jax", "xla"))
  if "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS" not in os.environ:
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)


def main(argv: list[str]) -> None:
  """Validates, picks the workdir, runs the experiment; user errors end as one line."""
  if not flags.FLAGS["verbosity"].present:  # Orbax and JAX are chatty at INFO.
    logging.set_verbosity(logging.WARNING)
  if len(argv) > 1:
    _fail(f"unexpected arguments {' '.join(argv[1:])!r}; use --config and --workdir")
  try:
    config = _CONFIG.value
    config_files.check_loaded(config)  # A file that failed to load raises on first access.
  except Exception as error:  # pylint: disable=broad-except
    _fail(config_files.error_line(config_flags.get_config_filename(flags.FLAGS["config"]), error))
  config_files.parse_tuple_overrides(config,
                                     config_flags.get_override_values(flags.FLAGS["config"]))

  # Imported here so that `--help` and flag errors answer without loading JAX.
  from sms_jax import checkpoints  # pylint: disable=g-import-not-at-top
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
    # From here Ctrl-C unwinds the run (its checkpoints and workdir lock are released).
    signal.signal(signal.SIGINT, signal.default_int_handler)
    sys.unraisablehook = _interrupt_again
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
    _exit_interrupted(workdir)


if __name__ == "__main__":
  app.run(main, flags_parser=_parse_flags)
