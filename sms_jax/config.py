"""Config validation: one schema (configs/default.py) and the allowed values of every key.

`validate(config)` runs before any compute. It raises `ConfigError` with a one-line message
naming the key, the bad value and what is allowed. Importing this module loads no JAX: the
registries that list the allowed names (strategies, models, datasets, ...) are imported by
`validate` itself.
"""

import math
from typing import Any, Callable

import ml_collections

from sms_jax import defaults


class ConfigError(ValueError):
  """A config key holds a value that is not allowed."""


def _choice(options) -> tuple[Callable[[Any], bool], str]:
  options = tuple(options)
  return (lambda v: v in options), "one of " + ", ".join(map(str, options))


def _positive() -> tuple[Callable[[Any], bool], str]:
  return (lambda v: v > 0), "a number > 0"


def _non_negative() -> tuple[Callable[[Any], bool], str]:
  return (lambda v: v >= 0), "a number >= 0"


def _number(v: Any) -> bool:
  return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _fraction(low_open: bool = False, high_open: bool = True):
  def ok(v):
    return (v > 0 if low_open else v >= 0) and (v < 1 if high_open else v <= 1)
  return ok, f"a number in {'(' if low_open else '['}0, 1{')' if high_open else ']'}"


Rule = tuple[Callable[[Any], bool], str]  # (predicate, what is allowed)


def rules() -> dict[str, Rule]:
  """key -> (predicate, what is allowed). Every key of the default config has an entry or is
  free-form (strings such as dataset.data_dir)."""
  # pylint: disable=g-import-not-at-top
  from sms_jax import data, models, soups, sparsity, strategies
  from sms_jax.data import device
  from sms_jax.phases import plan
  from sms_jax.sparsity import init_masks, set_updater
  from sms_jax.training import engine, optimizers, retrain, schedules
  # pylint: enable=g-import-not-at-top
  varied = plan.varied_names
  return {
      "strategy": _choice(strategies.STRATEGIES),
      "seed": ((lambda v: 0 <= v < 2**32), "an integer in [0, 2**32)"),
      "dataset.name": _choice(data.DATASETS),
      "dataset.val_fraction": _fraction(),
      "dataset.augment": _choice(("auto",) + device.AUGMENTATIONS),
      "dataset.num_train": _non_negative(),
      "dataset.image_size": _positive(),
      "model.name": (models.is_known_model, models.MODEL_NAMES_HELP),
      "train.epochs": _positive(),
      "train.batch_size": _positive(),
      "train.eval_batch_size": _positive(),
      "train.learning_rate": _positive(),
      "train.weight_decay": _non_negative(),
      "train.momentum": _fraction(),
      "train.schedule": _choice(schedules.SCHEDULES),
      "train.warmup_epochs": _non_negative(),
      "train.milestones": ((lambda v: all(isinstance(m, (int, float)) and 0 < m < 1 for m in v)
                            and all(a < b for a, b in zip(v, v[1:]))),
                           "strictly increasing fractions of train.epochs in (0, 1)"),
      "train.step_epochs": _positive(),
      "train.decay_factor": _fraction(low_open=True, high_open=False),
      "train.label_smoothing": _fraction(),
      "train.eval_every_epochs": _positive(),
      "train.epoch_loop": _choice(engine.EPOCH_LOOPS),
      "train.optimizer": _choice(optimizers.OPTIMIZERS),
      "train.dtype": _choice(models.COMPUTE_DTYPES),
      "init_mask.distribution": _choice(("none",) + sparsity.DISTRIBUTIONS + ("global",)),
      "init_mask.score_batches": _positive(),
      "init_mask.density": _fraction(low_open=True, high_open=False),
      "init_mask.method": _choice(init_masks.METHODS),
      "prune.goal_sparsity": _fraction(low_open=True),
      "prune.n_phases": _positive(),
      "prune.selector": _choice(sparsity.SELECTORS),
      "gradual.start_epoch": _non_negative(),
      "gradual.end_epoch": _positive(),
      "gradual.update_every": _positive(),
      "regrow.update_every": _positive(),
      "regrow.drop_fraction": _fraction(low_open=True),
      "regrow.end_epoch": _non_negative(),
      "regrow.decay": _choice(set_updater.DECAYS),
      "retrain.schedule": _choice(retrain.RETRAIN_SCHEDULES),
      "retrain.epochs_per_phase": _positive(),
      "soup.m": _positive(),
      "soup.method": _choice(soups.SOUP_METHODS),
      "soup.vary": ((lambda v: bool(varied(v)) and all(n in plan.VARIABLE_HPARAMS
                                                       for n in varied(v))),
                    "comma-separated names among " + ", ".join(plan.VARIABLE_HPARAMS)),
      "soup.seeds": ((lambda v: all(isinstance(x, int) and 0 <= x < 2**31 for x in v)),
                     "integers in [0, 2**31)"),
      "soup.weight_decays": ((lambda v: all(_number(x) and x >= 0 for x in v)), "numbers >= 0"),
      "soup.learning_rates": ((lambda v: all(_number(x) and x > 0 for x in v)), "numbers > 0"),
      "soup.retrain_epochs": ((lambda v: all(isinstance(x, int) and x > 0 for x in v)),
                              "integers > 0"),
      "soup.bn_recalibration_frac": _fraction(low_open=True, high_open=False),
      "parallel.candidate_execution": _choice(engine.EXECUTIONS),
      "ood.severity": ((lambda v: 0 <= v <= 5), "an integer in 0..5 (0: no OOD evaluation)"),
      "checkpoint.every_epochs": _positive(),
      "checkpoint.keep": _positive(),
  }


def _flatten(config: ml_collections.ConfigDict, prefix: str = "") -> dict[str, Any]:
  flat = {}
  for key, value in config.items():
    path = prefix + key
    if isinstance(value, ml_collections.ConfigDict):
      flat.update(_flatten(value, path + "."))
    else:
      flat[path] = value
  return flat


def _type_ok(value: Any, default: Any) -> bool:
  if isinstance(default, bool) or isinstance(value, bool):
    return isinstance(value, bool) and isinstance(default, bool)
  if isinstance(default, float):
    return isinstance(value, (int, float)) and math.isfinite(value)
  if isinstance(default, (tuple, list)):
    return isinstance(value, (tuple, list))
  return isinstance(value, type(default))


def _type_name(default: Any) -> str:
  return {bool: "a bool", int: "an integer", float: "a number", str: "a string"}.get(
      type(default), "a tuple" if isinstance(default, (tuple, list)) else type(default).__name__)


def unknown_key_message(key: str, schema: dict[str, Any] | None = None) -> str:
  """`unknown config key 'train.lr'; known keys here: train.batch_size, ...`."""
  schema = schema if schema is not None else _flatten(defaults.get_config())
  section = key.rsplit(".", 1)[0] + "." if "." in key else ""
  known = sorted(k for k in schema if k.startswith(section) and "." not in k[len(section):])
  return f"unknown config key {key!r}; known keys here: {', '.join(known or sorted(schema))}"


def unknown_keys(paths: list[str]) -> list[str]:
  """Those dotted `paths` (e.g. 'train.lr') that are not keys of the default config."""
  schema = _flatten(defaults.get_config())
  return [p for p in paths if p not in schema and not any(k.startswith(p + ".") for k in schema)]


def validate(config: ml_collections.ConfigDict) -> None:
  """Checks every key of `config` against the default config's schema and RULES.

  Raises:
    ConfigError: naming the first unknown key, wrongly typed or out-of-range value.
  """
  schema, allowed_values = _flatten(defaults.get_config()), rules()
  for key, value in _flatten(config).items():
    if key not in schema:
      raise ConfigError(unknown_key_message(key, schema))
    if not _type_ok(value, schema[key]):
      raise ConfigError(f"config key {key} = {value!r} has the wrong type; "
                        f"allowed: {_type_name(schema[key])}")
    if key in allowed_values:
      ok, allowed = allowed_values[key]
      if not ok(value):
        raise ConfigError(f"config key {key} = {value!r} is not allowed; allowed: {allowed}")
  missing = sorted(set(schema) - set(_flatten(config)))
  if missing:
    raise ConfigError(f"config is missing key {missing[0]!r}; start configs from "
                      "configs/default.py")
  _check_across_keys(config)


def _check_across_keys(config: ml_collections.ConfigDict) -> None:
  """Rules that relate two keys, and the strategy's own checks."""
  # pylint: disable=g-import-not-at-top
  from sms_jax import data, strategies
  from sms_jax.phases import plan
  from sms_jax.sparsity import init_masks
  # pylint: enable=g-import-not-at-top
  train = config.train
  if train.warmup_epochs >= train.epochs:
    raise ConfigError(f"config key train.warmup_epochs = {train.warmup_epochs} is not allowed; "
                      f"allowed: fewer than train.epochs = {train.epochs}")
  first_decay = {"step": train.step_epochs,
                 "multistep": train.milestones[0] * train.epochs if train.milestones else None}
  decay_epoch = first_decay.get(train.schedule)
  if decay_epoch is not None and decay_epoch <= train.warmup_epochs:
    raise ConfigError(f"config key train.warmup_epochs = {train.warmup_epochs} is not allowed "
                      f"with train.schedule = {train.schedule!r}; allowed: fewer epochs than "
                      f"its first decay at epoch {decay_epoch:g}")
  if (config.init_mask.distribution == "global"
      and config.init_mask.method not in init_masks.SCORED):
    raise ConfigError(f"config key init_mask.distribution = 'global' is not allowed with "
                      f"init_mask.method = {config.init_mask.method!r}; allowed: with "
                      f"{' or '.join(init_masks.SCORED)}")
  soup = config.soup
  for name, values_key in plan.VARIABLE_HPARAMS.items():
    values = soup[values_key]
    if values and name not in plan.varied_names(soup.vary):
      raise ConfigError(f"config key soup.{values_key} is set but soup.vary = {soup.vary!r} does "
                        f"not name {name}; allowed: add {name} to soup.vary, or leave it empty")
    if values and len(values) != soup.m:
      raise ConfigError(f"config key soup.{values_key} has {len(values)} values; allowed: "
                        f"soup.m = {soup.m} values (one per candidate) or none")
  streams = data.DATASETS[config.dataset.name].load is None
  if streams and config.dataset.augment not in ("auto", "none"):
    raise ConfigError(f"config key dataset.augment = {config.dataset.augment!r} is not allowed "
                      f"for the streamed dataset {config.dataset.name}; allowed: auto, none (its "
                      "input pipeline augments)")
  error = strategies.STRATEGIES[config.strategy].check(config)
  if error:
    raise ConfigError(error)
