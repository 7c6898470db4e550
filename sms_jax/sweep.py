"""Sweeps over seeds, strategies and config values, as ordinary runs of `sms_jax.main`.

  python -m sms_jax.sweep --config=configs/mnist1d.py[:arg] --seeds=0:10 \\
      --strategies=sms,imp,imp_mx [--set soup.m=2,4,8 ...] --root=runs/sweep \\
      [--jobs=N | --print[=pretrain|runs]]

`--seeds`: `a:b` (Python's range: a, ..., b-1) or a list `0,3,7`. `--set key=v1,v2` (repeatable)
makes a grid: every combination of the listed values, each read as `--config.key=` reads it.
Each grid point is one resumable run in `<root>/seed<k>/<strategy>[,<key>=<value>...]`. Runs of
strategies that share pretraining (sms, imp, imp_mx, dense, imp_avg_reprune) start from one dense
run per seed, `<root>/seed<k>/pretrain` (`pretrain,<key>=<value>` per value of a --set key that
pretraining depends on: dataset.*, model.*, train.*, init_mask.*, prune.keep_*_dense), through
`--config.pretrained`; the others pretrain themselves. Every run's config is validated before
anything starts (a problem is one line, exit code 2, nothing created).

Locally, `--jobs` runs at a time (pretraining first; a run starts once its pretraining has
finished; output in `<root>/logs/seed<k>_<name>.log`). A finished run (results.json, same
config) is skipped, so running the sweep again resumes it; a run whose pretraining failed is
blocked. `<root>/sweep.json` records the flags and every run's command, status, time and exit
code. Exit codes: 0 every run finished, 1 some did not, 2 bad input, 130 interrupted (Ctrl-C:
the runs stop at a checkpoint; run the sweep again to resume). `--print` prints one shell
command per line instead (pretraining first; `--print=pretrain` / `--print=runs`: one stage,
e.g. for two SLURM job arrays with `--dependency=afterok`) and creates nothing.
"""

import itertools
import json
import os
import shlex
import signal
import subprocess
import sys
import time
from typing import Any, NamedTuple, Sequence

from absl import flags
from ml_collections import config_flags

from sms_jax import config as config_lib
from sms_jax import config_files
from sms_jax import workdir as workdir_lib
from sms_jax.tools import cli

_ALLOWED = {
    "config": "a shipped config's name or a config file's path, optionally with :arg",
    "seeds": "a:b (a <= seeds < b) or a comma list, e.g. 0:10 or 0,3,7",
    "strategies": "a comma list of strategies, e.g. sms,imp,imp_mx",
    "set": "key=v1,v2 (distinct values; repeatable), e.g. soup.m=2,4,8",
    "root": "the sweep's folder, e.g. runs/sweep",
    "jobs": "an integer >= 1 (runs at a time)",
    "print": "all, pretrain or runs (or bare --print: all)"}


class SweepError(ValueError):
  """Bad sweep input: one line naming the flag or key, the value and what is allowed."""


class Run(NamedTuple):
  """One planned run: its `name` (`pretrain`, `sms,soup.m=4`), `seed`, `workdir`, the
  `overrides` (`--config.key=value` arguments), `after` (the workdir of the pretraining it
  starts from, or None) and its validated `config` (as a dict)."""
  name: str
  seed: int
  workdir: str
  overrides: tuple[str, ...]
  after: str | None
  config: dict[str, Any]

  @property
  def is_pretrain(self) -> bool:
    """Whether this is a shared pretraining run (`pretrain`, `pretrain,<key>=<value>...`)."""
    return self.name == "pretrain" or self.name.startswith("pretrain,")


def parse_seeds(text: str) -> list[int]:
  """`a:b` -> list(range(a, b)); `0,3,7` -> [0, 3, 7]; SweepError if empty or not integers."""
  try:
    if ":" in text:
      low, high = text.split(":")
      seeds = list(range(int(low), int(high)))
    else:
      seeds = [int(part) for part in text.split(",")]
  except ValueError:
    seeds = []
  if not seeds or len(set(seeds)) < len(seeds) or min(seeds) < 0:
    raise SweepError(f"--seeds={text} is not allowed; allowed: {_ALLOWED['seeds']} (distinct, "
                     ">= 0, at least one)")
  return seeds


def _split_values(text: str) -> list[str]:
  """'2,4,8' -> ['2', '4', '8']; commas inside brackets stay: '(1,2),(3,4)' -> 2 values."""
  values, depth, start = [], 0, 0
  for k, char in enumerate(text + ","):
    depth += (char in "([{") - (char in ")]}")
    if char == "," and depth == 0:
      values.append(text[start:k].strip())
      start = k + 1
  return values


def parse_grid(sets: Sequence[str]) -> list[tuple[str, list[str]]]:
  """['soup.m=2,4', ...] -> [('soup.m', ['2', '4']), ...], keys in the order given."""
  grid = []
  for item in sets:
    key, eq, text = item.partition("=")
    values = _split_values(text) if eq else []
    if not key or not values or "" in values or len(set(values)) < len(values):
      raise SweepError(f"--set {item} is not allowed; allowed: {_ALLOWED['set']}")
    if key in ("seed", "strategy", "pretrained") or key in dict(grid):
      raise SweepError(f"--set {key} is not allowed; allowed: a config key other than seed "
                       "(--seeds), strategy (--strategies) and pretrained, each set once")
    unknown = config_lib.unknown_keys([key])
    if unknown:
      raise SweepError(f"--set {item}: " + config_lib.unknown_key_message(unknown[0]))
    grid.append((key, values))
  return grid


def load_config(spec: str, overrides: Sequence[str]) -> dict[str, Any]:
  """The config `--config=spec` plus `overrides` (`--config.key=value`) give `sms_jax.main`,
  validated, as a dict (what the run writes to config.json); SweepError (one line) if bad."""
  path = config_files.resolve(spec)
  if os.path.isfile(path.split(":")[0]):
    config_files.make_importable(path.split(":")[0])
  argv = ["sweep", f"--config={path}", *overrides]
  values = flags.FlagValues()
  holder = config_flags.DEFINE_config_file("config", None, "", flag_values=values, sys_argv=argv)
  given = dict(arg[len("--config."):].split("=", 1) for arg in overrides)
  try:
    values(argv)
    config = holder.value
    config_files.check_loaded(config)
  except Exception as error:  # pylint: disable=broad-except
    for key, value in given.items():
      if str(error).startswith(f"flag --config.{key}="):
        raise SweepError(config_lib.wrong_type_message(key, value)) from error
    raise SweepError(config_files.error_line(path, error)) from error
  config_files.parse_tuple_overrides(config, config_flags.get_override_values(values["config"]))
  try:
    config_lib.validate(config)
  except config_lib.ConfigError as error:
    raise SweepError(str(error)) from error
  return json.loads(config.to_json())


def _load(spec: str, overrides: Sequence[str], seed: int, name: str) -> dict[str, Any]:
  """`load_config`, its error naming the run."""
  try:
    return load_config(spec, overrides)
  except SweepError as error:
    raise SweepError(f"run seed{seed}/{name}: {error}") from error


def _affects_pretraining(key: str) -> bool:
  """Whether what pretraining computes depends on config key `key` (see `pretraining`)."""
  from sms_jax import shared_pretraining  # pylint: disable=g-import-not-at-top  (loads JAX)
  return (key.startswith(shared_pretraining.PRETRAINING_KEYS)
          and not key.startswith(shared_pretraining.NOT_PRETRAINING_KEYS))


def plan(spec: str, seeds: Sequence[int], strategy_names: Sequence[str], sets: Sequence[str],
         root: str) -> list[Run]:
  """Every run of the sweep, validated: the pretraining runs that some run uses, then the runs
  (by seed, strategy, grid point). SweepError (one line) for a bad strategy, key or value, or a
  workdir that holds a run of another config."""
  from sms_jax import strategies  # pylint: disable=g-import-not-at-top  (loads JAX)
  for name in strategy_names:
    if name not in strategies.STRATEGIES:
      raise SweepError(f"--strategies: unknown strategy {name!r}; allowed: "
                       f"{', '.join(strategies.STRATEGIES)}")
  if not strategy_names or len(set(strategy_names)) < len(strategy_names):
    raise SweepError(f"--strategies={','.join(strategy_names)} is not allowed; allowed: "
                     f"{_ALLOWED['strategies']}, each once")
  grid = parse_grid(sets)
  points = [list(zip([k for k, _ in grid], combo))
            for combo in itertools.product(*[values for _, values in grid])]
  label = lambda pairs: "".join(f",{k}={v.replace(os.sep, '_')}" for k, v in pairs)
  pretrains, runs = {}, []
  for seed, name, point in itertools.product(seeds, strategy_names, points):
    base = [f"--config.seed={seed}", f"--config.strategy={name}"]
    sets_ = [f"--config.{k}={v}" for k, v in point]
    after = None
    if strategies.STRATEGIES[name].shares_pretraining:
      shared = [(k, v) for k, v in point if _affects_pretraining(k)]
      after = os.path.join(root, f"seed{seed}", "pretrain" + label(shared))
      if after not in pretrains:
        overrides = (f"--config.seed={seed}", "--config.strategy=dense",
                     *[f"--config.{k}={v}" for k, v in shared])
        pretrains[after] = Run("pretrain" + label(shared), seed, after, overrides, None,
                               _load(spec, overrides, seed, "pretrain" + label(shared)))
      sets_.append(f"--config.pretrained={after}")
    workdir = os.path.join(root, f"seed{seed}", name + label(point))
    overrides = tuple(base + sets_)
    runs.append(Run(name + label(point), seed, workdir, overrides, after,
                    _load(spec, overrides, seed, name + label(point))))
  out = sorted(pretrains.values(), key=lambda run: run.seed) + runs
  for run in out:
    try:
      workdir_lib.check(run.config, run.workdir)
    except workdir_lib.WorkdirError as error:
      raise SweepError(str(error)) from error
  return out


def command(spec: str, run: Run, python: str = "python") -> list[str]:
  """The run's command line: `python -m sms_jax.main --config=spec --workdir=... overrides`."""
  return [python, "-m", "sms_jax.main", f"--config={spec}", f"--workdir={run.workdir}",
          *run.overrides]


def finished(run: Run) -> bool:
  """Whether `run.workdir` holds this run, finished: results.json, and a config.json equal to
  the planned config apart from checkpoint.*."""
  try:
    with open(os.path.join(run.workdir, "config.json")) as f:
      config = json.load(f)
  except (OSError, ValueError):
    return False
  return (os.path.exists(os.path.join(run.workdir, "results.json"))
          and config_lib.resume_key(config) == config_lib.resume_key(run.config))


def _last_line(path: str) -> str:
  with open(path, errors="replace") as f:
    lines = [line.strip() for line in f.read()[-20000:].splitlines() if line.strip()]
  return lines[-1][:200] if lines else "(empty)"


def execute(spec: str, runs: Sequence[Run], root: str, jobs: int, record: dict[str, Any],
            poll_s: float = 0.2) -> list[dict[str, Any]]:
  """Runs `runs` (pretraining first), `jobs` at a time, each as `sys.executable -m
  sms_jax.main ...` with its output in `<root>/logs/seed<k>_<name>.log`; prints a line per start
  and end and keeps `<root>/sweep.json` (`record` plus the runs) current. Returns one dict per
  run: name, seed, workdir, command, status (done / skipped / failed / blocked), wall_s,
  exit_code. On Ctrl-C, interrupts the running runs (they resume when run again) and raises
  KeyboardInterrupt."""
  from sms_jax import report  # pylint: disable=g-import-not-at-top
  os.makedirs(os.path.join(root, "logs"), exist_ok=True)
  total = len(runs)
  rows = [{"name": run.name, "seed": run.seed, "workdir": run.workdir,
           "command": shlex.join(command(spec, run, sys.executable)), "status": "pending",
           "wall_s": None, "exit_code": None} for run in runs]
  save = lambda: report.write_json(os.path.join(root, "sweep.json"), {**record, "runs": rows})
  say = lambda k, verb, more="": print(f"[{k + 1}/{total}] {verb} seed{runs[k].seed}/"
                                      f"{runs[k].name}{more}", flush=True)
  status = {run.workdir: rows[k] for k, run in enumerate(runs)}
  for k, run in enumerate(runs):
    if finished(run):
      rows[k].update(status="skipped", wall_s=0.0)
      say(k, "skipped", " (finished)")
  pending = [k for k in range(total) if rows[k]["status"] == "pending"]
  running = {}  # k -> (process, start time, log path)
  save()
  try:
    while pending or running:
      for k in list(pending):
        after = status[runs[k].after]["status"] if runs[k].after else "done"
        if after in ("failed", "blocked"):
          pending.remove(k)
          rows[k].update(status="blocked")
          say(k, "blocked", f" (its pretraining {runs[k].after} {after})")
          save()
        elif after in ("done", "skipped") and len(running) < jobs:
          pending.remove(k)
          log = os.path.join(root, "logs", f"seed{runs[k].seed}_{runs[k].name}.log")
          with open(log, "ab") as out:
            process = subprocess.Popen(
                command(spec, runs[k], sys.executable), stdout=out, stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL, env=dict(os.environ, PYTHONUNBUFFERED="1"))
          running[k] = (process, time.perf_counter(), log)
          say(k, "started")
      ended = [k for k, (process, _, _) in running.items() if process.poll() is not None]
      for k in ended:
        process, start, log = running.pop(k)
        wall = round(time.perf_counter() - start, 1)
        rows[k].update(wall_s=wall, exit_code=process.returncode,
                       status="done" if process.returncode == 0 else "failed")
        if process.returncode == 0:
          say(k, "done", f" in {wall:.0f} s")
        else:
          say(k, "failed", f" in {wall:.0f} s (exit {process.returncode}; log: {log}; last "
                            f"line: {_last_line(log)})")
      if ended:
        save()
      elif pending or running:
        time.sleep(poll_s)
  except KeyboardInterrupt:
    for process, _, _ in running.values():
      process.send_signal(signal.SIGINT)
    for process, _, _ in running.values():
      try:
        process.wait(timeout=60)
      except subprocess.TimeoutExpired:
        process.kill()
    for k, (process, start, _) in running.items():
      rows[k].update(status="interrupted", exit_code=process.returncode,
                     wall_s=round(time.perf_counter() - start, 1))
    save()
    raise
  return rows


def _print_lines(lines: Sequence[str]) -> int:
  """Prints `lines`; 0 (also when the reader stops early, e.g. `| head`)."""
  try:
    print("\n".join(lines), flush=True)
  except BrokenPipeError:
    os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
  return 0


def _flag_values() -> flags.FlagValues:
  values = flags.FlagValues()
  flags.DEFINE_string("config", None, _ALLOWED["config"], flag_values=values)
  flags.DEFINE_string("seeds", "0", _ALLOWED["seeds"], flag_values=values)
  flags.DEFINE_list("strategies", None, _ALLOWED["strategies"], flag_values=values)
  flags.DEFINE_multi_string("set", [], _ALLOWED["set"], flag_values=values)
  flags.DEFINE_string("root", None, _ALLOWED["root"], flag_values=values)
  flags.DEFINE_integer("jobs", 1, _ALLOWED["jobs"], lower_bound=1, flag_values=values)
  flags.DEFINE_enum("print", None, ["all", "pretrain", "runs"], _ALLOWED["print"],
                    flag_values=values)
  return values


def main(argv: list[str] | None = None) -> int:
  """The command line (see the module docstring); returns the exit code."""
  argv = sys.argv[1:] if argv is None else argv
  if cli.wants_help(argv):
    return _print_lines([__doc__.strip()])
  argv = ["--print=all" if arg == "--print" else arg for arg in argv]
  values, problem = cli.parse("sweep", argv, _flag_values(), _ALLOWED,
                              required=("config", "strategies", "root"))
  try:
    if problem:
      raise SweepError(problem)
    runs = plan(values.config, parse_seeds(values.seeds), values.strategies, values.set,
                values.root)
  except SweepError as error:
    print(f"error: {error}", file=sys.stderr, flush=True)
    return 2
  if values.print:
    stages = {"all": (True, False), "pretrain": (True,), "runs": (False,)}[values.print]
    return _print_lines([shlex.join(command(values.config, run)) for is_pretrain in stages
                         for run in runs if run.is_pretrain == is_pretrain])
  record = {"flags": {name: values[name].value for name in _ALLOWED}}
  print(f"sweep: {len(runs)} runs in {values.root}, {values.jobs} at a time", flush=True)
  on_term = signal.signal(signal.SIGTERM, signal.default_int_handler)  # scancel: as Ctrl-C.
  try:
    rows = execute(values.config, runs, values.root, values.jobs, record)
  except KeyboardInterrupt:
    print("error: interrupted; run the same sweep again to resume", file=sys.stderr, flush=True)
    return 130
  finally:
    signal.signal(signal.SIGTERM, on_term)
  counts = {s: sum(row["status"] == s for row in rows)
            for s in ("done", "skipped", "failed", "blocked")}
  print(f"sweep: {', '.join(f'{n} {s}' for s, n in counts.items())}; "
        f"{os.path.join(values.root, 'sweep.json')}", flush=True)
  return 0 if counts["done"] + counts["skipped"] == len(rows) else 1


if __name__ == "__main__":
  sys.exit(main())
