"""One experiment from a config: validate, load data, run the strategy, write results.

Nothing is written to the workdir before the config has been validated and the data loaded,
and results.json is written last, atomically.
"""

import json
import os
import time
from typing import Any

import ml_collections

from sms_jax import config as config_lib
from sms_jax import data, report, strategies


class WorkdirError(ValueError):
  """The workdir holds a run of a different config."""


def _resume_key(config_dict: dict[str, Any]) -> dict[str, Any]:
  """The parts of a config that must match to resume a run (checkpoint policy may differ)."""
  return {k: v for k, v in config_dict.items() if k != "checkpoint"}


def check_workdir(config_dict: dict[str, Any], workdir: str) -> None:
  """Raises WorkdirError if `workdir/config.json` exists and describes another experiment."""
  path = os.path.join(workdir, "config.json")
  if not os.path.exists(path):
    return
  with open(path) as f:
    previous = _resume_key(json.load(f))
  current = _resume_key(config_dict)
  if previous != current:
    differing = sorted(_differences(previous, current))
    raise WorkdirError(f"workdir {workdir} holds a run with another config (differs in "
                       f"{', '.join(differing[:5])}); pass another --workdir or remove it")


def _differences(a: dict[str, Any], b: dict[str, Any], prefix: str = "") -> list[str]:
  out = []
  for k in set(a) | set(b):
    if isinstance(a.get(k), dict) and isinstance(b.get(k), dict):
      out += _differences(a[k], b[k], prefix + k + ".")
    elif a.get(k) != b.get(k):
      out.append(prefix + k)
  return out


def run(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
  """Runs the experiment `config` in `workdir`; returns what it writes to results.json."""
  start = time.perf_counter()
  config_lib.validate(config)
  config_dict = json.loads(config.to_json())
  check_workdir(config_dict, workdir)
  dataset = data.load(config.dataset)
  if config.train.batch_size > dataset.train.num_examples:
    raise config_lib.ConfigError(
        f"config key train.batch_size = {config.train.batch_size} is not allowed; allowed: at "
        f"most the {dataset.train.num_examples} training examples of {config.dataset.name}")
  os.makedirs(workdir, exist_ok=True)
  report.write_json(os.path.join(workdir, "config.json"), config_dict)
  report.log(f"workdir {workdir}; devices {report.devices()}")

  results = strategies.STRATEGIES[config.strategy](config, dataset, workdir)
  results = {"config": config_dict, **results,
             "wall_time_s": time.perf_counter() - start, "devices": report.devices()}
  report.write_json(os.path.join(workdir, "results.json"), results)
  report.log(f"wrote {os.path.join(workdir, 'results.json')}")
  return results
