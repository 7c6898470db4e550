"""Config validation: one schema (configs/default.py) and the allowed values of every key.

`validate(config)` runs before any compute. It raises `ConfigError` with a one-line message
naming the key, the bad value and what is allowed. Importing this module loads no JAX: the
registries that list the allowed names (strategies, models, datasets, ...) are imported by
`validate` itself.
"""

import hashlib
import json
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

# Bounds that no real experiment reaches; beyond them a typo would overflow int32 step counts,
# allocate the whole run's schedule at once or compile for minutes before failing.
MAX_EPOCHS = 100_000  # Any length in epochs: ~100x the longest published schedules.
MAX_PHASES = 100  # prune.n_phases: published IMP / SMS runs use at most a few dozen.
MAX_CANDIDATES = 256  # soup.m: trained in one program; published soups hold at most ~70.
MAX_INT32 = 2**31 - 1  # Optimizer step counters and example indices are int32.
MAX_IMAGE_SIZE = 4096  # dataset.image_size, in pixels.
# Keys that take values of more than one type (their rule checks the type): ood.severity is an
# int or 'all'.
UNTYPED_KEYS = ("ood.severity",)


def _count(low: int, high: int, high_text: str = "", note: str = "") -> Rule:
  """An integer in [low, high] (for keys whose default is an int: the type check runs first)."""
  return (lambda v: low <= v <= high), f"an integer in [{low}, {high_text or high}]{note}"


def _integer(v: Any) -> bool:
  return isinstance(v, int) and not isinstance(v, bool)


class _Each:
  """The predicate of a tuple key: every element passes `ok`, and the tuple `whole`."""

  def __init__(self, ok: Callable[[Any], bool], whole: Callable[[Any], bool] = lambda v: True):
    self.ok, self.whole = ok, whole

  def __call__(self, values) -> bool:
    return self.first_bad(values) is None and self.whole(values)

  def first_bad(self, values) -> int | None:
    """The index of the first element that fails `ok`, or None."""
    return next((k for k, x in enumerate(values) if not self.ok(x)), None)


def rules() -> dict[str, Rule]:
  """key -> (predicate, what is allowed). Every key of the default config has an entry or is
  free-form (strings such as dataset.data_dir)."""
  # pylint: disable=g-import-not-at-top
  from sms_jax import data, models, soups, sparsity, strategies
  from sms_jax.data import corruptions, device
  from sms_jax.phases import plan
  from sms_jax.sparsity import edge_popup, init_masks, set_updater
  from sms_jax.training import engine, optimizers, retrain, schedules
  # pylint: enable=g-import-not-at-top
  varied = plan.varied_names
  return {
      "strategy": _choice(strategies.STRATEGIES),
      "seed": ((lambda v: 0 <= v < 2**32), "an integer in [0, 2**32)"),
      "dataset.name": _choice(data.DATASETS),
      "dataset.val_fraction": _fraction(),
      "dataset.augment": _choice(("auto",) + device.AUGMENTATIONS),
      "dataset.num_train": _count(0, MAX_INT32, "2**31 - 1", " (0: all)"),
      "dataset.image_size": _count(1, MAX_IMAGE_SIZE),
      "model.name": (models.is_known_model, models.MODEL_NAMES_HELP),
      "train.epochs": _count(1, MAX_EPOCHS),
      "train.batch_size": _positive(),
      "train.eval_batch_size": _positive(),
      "train.learning_rate": _positive(),
      "train.weight_decay": _non_negative(),
      "train.momentum": _fraction(),
      "train.schedule": _choice(schedules.SCHEDULES),
      "train.warmup_epochs": _non_negative(),
      "train.milestones": (_Each(lambda m: _number(m) and 0 < m < 1,
                                 whole=lambda v: all(a < b for a, b in zip(v, v[1:]))),
                           "strictly increasing fractions of train.epochs in (0, 1)"),
      "train.step_epochs": _count(1, MAX_EPOCHS),
      "train.decay_factor": _fraction(low_open=True, high_open=False),
      "train.label_smoothing": _fraction(),
      "train.eval_every_epochs": _count(1, MAX_EPOCHS),
      "train.epoch_loop": _choice(engine.EPOCH_LOOPS),
      "train.optimizer": _choice(optimizers.OPTIMIZERS),
      "train.dtype": _choice(models.COMPUTE_DTYPES),
      "init_mask.distribution": _choice(("none",) + sparsity.DISTRIBUTIONS + ("global",)),
      "init_mask.score_batches": _positive(),
      "init_mask.density": _fraction(low_open=True, high_open=False),
      "init_mask.method": _choice(init_masks.METHODS),
      "init_mask.rescale": _choice(init_masks.RESCALES),
      "init_mask.within": _choice(("none",) + sparsity.DISTRIBUTIONS),
      "init_mask.within_density": _fraction(low_open=True, high_open=False),
      "prune.goal_sparsity": _fraction(low_open=True),
      "prune.n_phases": _count(1, MAX_PHASES),
      "prune.selector": _choice(sparsity.SELECTORS),
      "gradual.start_epoch": _count(0, MAX_EPOCHS),
      "gradual.end_epoch": _count(1, MAX_EPOCHS),
      "gradual.update_every": _count(1, MAX_INT32, "2**31 - 1"),
      "regrow.update_every": _count(1, MAX_INT32, "2**31 - 1"),
      "regrow.drop_fraction": _fraction(low_open=True),
      "regrow.end_epoch": _count(0, MAX_EPOCHS),
      "regrow.decay": _choice(set_updater.DECAYS),
      "rigl.update_every": _count(1, MAX_INT32, "2**31 - 1"),
      "rigl.drop_fraction": _fraction(low_open=True, high_open=False),
      "rigl.end_fraction": _fraction(low_open=True, high_open=False),
      "edge_popup.init": _choice(edge_popup.INITS),
      "retrain.schedule": _choice(retrain.RETRAIN_SCHEDULES),
      "retrain.epochs_per_phase": _count(1, MAX_EPOCHS),
      "retrain.rewind": (retrain.is_rewind, "none, init or epoch:K (K an integer >= 0)"),
      "bimp.pretrain_epochs": _count(0, MAX_EPOCHS, note=" (0: auto)"),
      "avg_reprune.diverge_epochs": _count(1, MAX_EPOCHS),
      "avg_reprune.retrain_epochs": _count(1, MAX_EPOCHS),
      "soup.m": _count(1, MAX_CANDIDATES),
      "soup.method": _choice(soups.SOUP_METHODS),
      "soup.vary": ((lambda v: bool(varied(v)) and all(n in plan.VARIABLE_HPARAMS
                                                       for n in varied(v))),
                    "comma-separated names among " + ", ".join(plan.VARIABLE_HPARAMS)),
      "soup.seeds": (_Each(lambda x: _integer(x) and 0 <= x < 2**31), "integers in [0, 2**31)"),
      "soup.weight_decays": (_Each(lambda x: _number(x) and x >= 0), "finite numbers >= 0"),
      "soup.learning_rates": (_Each(lambda x: _number(x) and x > 0), "finite numbers > 0"),
      "soup.retrain_epochs": (_Each(lambda x: _integer(x) and 1 <= x <= MAX_EPOCHS),
                              f"integers in [1, {MAX_EPOCHS}]"),
      "soup.bn_recalibration_frac": _fraction(low_open=True, high_open=False),
      "soup.bn_recalibration": _choice(soups.BN_RECALIBRATIONS),
      "soup.bn_recalibration_average": _choice(soups.BN_AVERAGES),
      "parallel.candidate_execution": _choice(engine.EXECUTIONS),
      "ood.severity": ((lambda v: v == "all" or (_integer(v) and 0 <= v <= 5)),
                       "an integer in 0..5 (0: no OOD evaluation) or 'all' (the mean over 1..5)"),
      "ood.corruptions": (corruptions.selection_ok, corruptions.allowed_text(images=True)),
      "checkpoint.every_epochs": _count(1, MAX_EPOCHS),
      "checkpoint.min_interval_s": _non_negative(),
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


def flat_schema() -> dict[str, Any]:
  """{dotted key: default value} of every key of the default config."""
  return _flatten(defaults.get_config())


def describe_keys() -> list[tuple[str, str, str]]:
  """`(key, default as shown, what is allowed)` of every key of the default config, sorted by
  key: what `--config_help` prints. Loads the registries that list the allowed names."""
  allowed = rules()
  return [(key, _shown(default), allowed[key][1] if key in allowed else _type_name(default))
          for key, default in flat_schema().items()]


def _type_ok(value: Any, default: Any) -> bool:
  if isinstance(default, bool) or isinstance(value, bool):
    return isinstance(value, bool) and isinstance(default, bool)
  if isinstance(default, float):  # Non-finite values are refused with the key's rule.
    return isinstance(value, (int, float))
  if isinstance(default, (tuple, list)):
    return isinstance(value, (tuple, list))
  return isinstance(value, type(default))


def _type_name(default: Any) -> str:
  return {bool: "a bool", int: "an integer", float: "a finite number", str: "a string"}.get(
      type(default), "a tuple" if isinstance(default, (tuple, list)) else type(default).__name__)


def _shown(value: Any) -> str:
  """`value` as a message shows it: tuples and lists as tuples, e.g. (0.1, -1)."""
  return repr(tuple(value)) if isinstance(value, (tuple, list)) else repr(value)


def _finite(allowed: str) -> str:
  """'a number > 0' -> 'a finite number > 0': what a float key allows, for nan and inf."""
  return allowed.replace("a number", "a finite number", 1) if "a number" in allowed else (
      "a finite number" + (f"; {allowed}" if allowed else ""))


def wrong_type_message(key: str, value: Any) -> str:
  """`config key train.epochs = 1e9 has the wrong type; allowed: an integer` for the command
  line's text `value` (shown as typed) of a known `key`."""
  default = flat_schema()[key]
  return f"config key {key} = {value} has the wrong type; allowed: {_type_name(default)}"


def unknown_key_message(key: str, schema: dict[str, Any] | None = None) -> str:
  """`unknown config key 'train.lr'; known keys here: train.batch_size, ...`."""
  schema = schema if schema is not None else flat_schema()
  section = key.rsplit(".", 1)[0] + "." if "." in key else ""
  known = sorted(k for k in schema if k.startswith(section) and "." not in k[len(section):])
  return f"unknown config key {key!r}; known keys here: {', '.join(known or sorted(schema))}"


def unknown_keys(paths: list[str]) -> list[str]:
  """Those dotted `paths` (e.g. 'train.lr') that are not keys of the default config."""
  schema = flat_schema()
  return [p for p in paths if p not in schema and not any(k.startswith(p + ".") for k in schema)]


def validate(config: ml_collections.ConfigDict) -> None:
  """Checks every key of `config` against the default config's schema and RULES.

  Raises:
    ConfigError: naming the first unknown key, wrongly typed or out-of-range value.
  """
  schema, allowed_values = flat_schema(), rules()
  for key, value in _flatten(config).items():
    if key not in schema:
      raise ConfigError(unknown_key_message(key, schema))
    if key not in UNTYPED_KEYS and not _type_ok(value, schema[key]):
      raise ConfigError(wrong_type_message(key, _shown(value)))
    ok, allowed = allowed_values.get(key, (lambda v: True, ""))
    if isinstance(value, float) and not math.isfinite(value):
      raise ConfigError(f"config key {key} = {value!r} is not allowed; allowed: {_finite(allowed)}")
    if not ok(value):
      bad = ok.first_bad(value) if isinstance(ok, _Each) else None
      element = f" (element [{bad}] = {value[bad]!r})" if bad is not None else ""
      raise ConfigError(f"config key {key} = {_shown(value)} is not allowed{element}; "
                        f"allowed: {allowed}")
  missing = sorted(set(schema) - set(_flatten(config)))
  if missing:
    raise ConfigError(f"config is missing key {missing[0]!r}; start configs from "
                      "configs/default.py")
  _check_across_keys(config)


def _check_across_keys(config: ml_collections.ConfigDict) -> None:
  """Rules that relate two keys, and the strategy's own checks."""
  # pylint: disable=g-import-not-at-top
  from sms_jax import data, strategies
  from sms_jax.data import corruptions
  from sms_jax.phases import plan
  from sms_jax.sparsity import init_masks
  from sms_jax.training import retrain
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
  init = config.init_mask
  if init.within != "none" and (init.method not in init_masks.SCORED
                                or init.distribution == "none"):
    raise ConfigError(f"config key init_mask.within = {init.within!r} has no meaning with "
                      f"init_mask.method = {init.method!r} and init_mask.distribution = "
                      f"{init.distribution!r} (nothing is scored inside a start mask); allowed: "
                      f"'none', or a sparse start with init_mask.method "
                      f"{' or '.join(init_masks.SCORED)}")
  if init.within != "none" and init.within_density <= init.density:
    raise ConfigError(f"config key init_mask.within_density = {init.within_density} is not "
                      f"allowed with init_mask.density = {init.density}; allowed: more than "
                      f"init_mask.density (the final mask is pruned from the start mask)")
  soup = config.soup
  for name, values_key in plan.VARIABLE_HPARAMS.items():
    values = soup[values_key]
    if values and name not in plan.varied_names(soup.vary):
      raise ConfigError(f"config key soup.{values_key} is set but soup.vary = {soup.vary!r} does "
                        f"not name {name}; allowed: add {name} to soup.vary, or leave it empty")
    if values and len(values) != soup.m:
      raise ConfigError(f"config key soup.{values_key} has {len(values)} values; allowed: "
                        f"soup.m = {soup.m} values (one per candidate) or none")
  dataset = config.dataset
  if (soup.method == "greedy" and dataset.val_fraction == 0
      and strategies.candidates_per_phase(config) > 1):
    raise ConfigError(f"config key soup.method = 'greedy' is not allowed with "
                      f"dataset.val_fraction = {dataset.val_fraction}; allowed: uniform, or "
                      "dataset.val_fraction > 0 (a greedy soup ranks candidates on the validation "
                      "split)")
  if dataset.num_train:
    fewest = _fewest_examples(train.batch_size, dataset.val_fraction)
    if dataset.num_train < fewest:
      raise ConfigError(
          f"config key dataset.num_train = {dataset.num_train} is not allowed with "
          f"train.batch_size = {train.batch_size} and dataset.val_fraction = "
          f"{dataset.val_fraction}; allowed: 0 (all) or at least {fewest} (a full training batch"
          f"{' and a validation example' if dataset.val_fraction else ''} after the hold-out)")
  streams = data.DATASETS[config.dataset.name].load is None
  if streams and config.dataset.augment not in ("auto", "none"):
    raise ConfigError(f"config key dataset.augment = {config.dataset.augment!r} is not allowed "
                      f"for the streamed dataset {config.dataset.name}; allowed: auto, none (its "
                      "input pipeline augments)")
  error = corruptions.config_error(config.ood.corruptions,
                                   data.DATASETS[config.dataset.name].input_shape)
  if error:
    raise ConfigError(error)
  if config.pretrained and not strategies.STRATEGIES[config.strategy].shares_pretraining:
    sharing = ", ".join(sorted(name for name, s in strategies.STRATEGIES.items()
                               if s.shares_pretraining))
    raise ConfigError(f"config key pretrained = {config.pretrained!r} is not allowed with strategy "
                      f"{config.strategy} (it pretrains in its own way); allowed: '' (pretrain "
                      f"here), or a run's workdir with the strategies {sharing}")
  if config.retrain.rewind != "none":
    rewinding = sorted(name for name, s in strategies.STRATEGIES.items() if s.rewinds)
    if not strategies.STRATEGIES[config.strategy].rewinds:
      raise ConfigError(f"config key retrain.rewind = {config.retrain.rewind!r} is not allowed "
                        f"with strategy {config.strategy}; allowed: none, or the strategies "
                        f"{', '.join(rewinding)}")
    epoch = retrain.rewind_epoch(config.retrain.rewind)
    if epoch is not None and epoch > config.train.epochs:
      raise ConfigError(f"config key retrain.rewind = {config.retrain.rewind!r} is not allowed "
                        f"with train.epochs = {config.train.epochs}; allowed: init, or epoch:K "
                        f"with K <= {config.train.epochs}")
  error = strategies.STRATEGIES[config.strategy].check(config)
  if error:
    raise ConfigError(error)


def _held_out(num_examples: int, val_fraction: float) -> int:
  """Validation examples held out of `num_examples`, as `sms_jax.data` splits them."""
  return int(round(val_fraction * num_examples))


def _fewest_examples(batch_size: int, val_fraction: float) -> int:
  """The fewest examples that leave a full training batch after the validation hold-out, and
  a validation example if `val_fraction` > 0 (both counts only grow with the examples)."""
  def enough(n):
    val = _held_out(n, val_fraction)
    return n - val >= batch_size and (val >= 1 or not val_fraction)
  low, high = 1, max(1, batch_size)
  while not enough(high):
    low, high = high + 1, 2 * high
  while low < high:
    mid = (low + high) // 2
    low, high = (low, mid) if enough(mid) else (mid + 1, high)
  return high


def check_against_dataset(config: ml_collections.ConfigDict, dataset: Any) -> None:
  """The checks that need the loaded `dataset`'s split sizes (after `validate`).

  A validation example when dataset.val_fraction > 0, and optimizer step counts (epochs x
  steps per epoch, of pretraining and of each retraining phase) that fit in int32.

  Raises:
    ConfigError: naming the key, its value and what this dataset allows.
  """
  # pylint: disable=g-import-not-at-top
  from sms_jax import strategies
  from sms_jax.phases import plan
  # pylint: enable=g-import-not-at-top
  num_train, num_val = dataset.train.num_examples, dataset.val.num_examples
  fraction = config.dataset.val_fraction
  if fraction > 0 and num_val == 0:
    total = max(1, num_train + num_val)
    raise ConfigError(f"config key dataset.val_fraction = {fraction} is not allowed with the "
                      f"{total} examples of {dataset.name} (an empty validation split); allowed: "
                      f"0, or more than {0.5 / total:.3g} (at least one validation example)")
  steps = num_train // config.train.batch_size  # As Dataset.steps_per_epoch.
  if steps < 1:
    return  # experiment.run refuses the batch size.
  most = MAX_INT32 // steps
  int32 = "(optimizer step counts must fit in int32)"
  epochs = config.train.epochs
  if epochs > most:
    raise ConfigError(f"config key train.epochs = {epochs} is not allowed with {steps} steps per "
                      f"epoch ({num_train} training examples, train.batch_size = "
                      f"{config.train.batch_size}): {epochs * steps} optimizer steps; allowed: "
                      f"at most {most} epochs {int32}")
  longest = strategies.STRATEGIES[config.strategy].phase_epochs(config)
  if longest > most:
    soup, per_phase = config.soup, config.retrain.epochs_per_phase
    given = soup.retrain_epochs and "retrain_epochs" in plan.varied_names(soup.vary)
    key = (f"soup.retrain_epochs = {_shown(soup.retrain_epochs)}" if given else
           f"retrain.epochs_per_phase = {per_phase}")
    raise ConfigError(f"config key {key} is not allowed with {steps} steps per epoch: a phase "
                      f"of {config.strategy} retrains {longest} epochs, {longest * steps} "
                      f"optimizer steps; allowed: at most {most} epochs a phase {int32}")


def resume_key(config_dict: dict[str, Any]) -> dict[str, Any]:
  """The parts of a config (as a dict) that must match to resume a run: all but the
  checkpoint policy, which a resumed run may change."""
  return {k: v for k, v in config_dict.items() if k != "checkpoint"}


def run_identity(config: ml_collections.ConfigDict) -> str:
  """A hex digest of the config's resume key: the same for every run that may resume another.

  Stored in each checkpoint, so that a run never resumes another run's checkpoints.
  """
  key = resume_key(json.loads(config.to_json()))
  return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()
