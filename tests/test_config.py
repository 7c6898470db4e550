"""Config validation: every shipped config is valid; bad values give one clear error."""

import importlib
import inspect
import os

import ml_collections
import pytest

from configs import default
from sms_jax import config as config_lib
from sms_jax import config_files

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.parametrize("name", sorted(config_files.shipped_configs()))
def test_shipped_configs_are_valid(name):
  module = importlib.import_module("sms_jax.configs." + name)
  config_lib.validate(module.get_config())
  if inspect.signature(module.get_config).parameters:  # The `--config=file.py:quick` variant.
    config_lib.validate(module.get_config("quick"))


@pytest.mark.parametrize("key, value, expected", [
    ("train.learning_rate", -0.1, "train.learning_rate = -0.1"),
    ("train.batch_size", 0, "train.batch_size = 0"),
    ("train.momentum", 1.5, "allowed: a number in [0, 1)"),
    ("train.schedule", "exponential", "one of constant, linear, cosine"),
    ("dataset.name", "imagenet21k", "dataset.name = 'imagenet21k'"),
    ("model.name", "resnet19", "model.name = 'resnet19'"),
    ("strategy", "lottery", "strategy = 'lottery'"),
    ("train.milestones", (0.75, 0.5), "increasing fractions"),
    ("prune.goal_sparsity", 1.0, "prune.goal_sparsity = 1.0"),
    ("prune.selector", "l1", "one of global, uniform, random"),
    ("retrain.schedule", "onecycle", "one of ft, lrw, slr, clr, llr, allr"),
    ("soup.method", "best", "one of uniform, greedy"),
    ("soup.vary", "seed,momentum", "names among seed, weight_decay, learning_rate"),
    ("soup.weight_decays", (1e-4, -1.0), "numbers >= 0"),
    ("soup.bn_recalibration_frac", 0.0, "(0, 1]"),
    ("parallel.candidate_execution", "pmap", "one of auto, vmap, map, loop"),
    ("train.dtype", "float16", "one of auto, float32, bfloat16"),
    ("train.optimizer", "lamb", "one of sgd, adamw"),
    ("regrow.drop_fraction", 1.0, "(0, 1)"),
    ("regrow.decay", "linear", "one of constant, cosine"),
    ("ood.severity", 6, "0..5"),
])
def test_out_of_range_values_are_refused(key, value, expected):
  config = default.get_config()
  section, name = key.rsplit(".", 1) if "." in key else (None, key)
  (config[section] if section else config)[name] = value
  with pytest.raises(config_lib.ConfigError, match="allowed") as info:
    config_lib.validate(config)
  assert expected in str(info.value)
  assert "\n" not in str(info.value)


def test_unknown_key_is_refused():
  config = default.get_config()
  config.unlock()
  config.train.lr = 0.1
  with pytest.raises(config_lib.ConfigError, match="unknown config key 'train.lr'.*learning_rate"):
    config_lib.validate(config)


def _untyped_default():
  """The default config without ConfigDict's own type checks, as a program could build it."""
  return ml_collections.ConfigDict(default.get_config().to_dict(), type_safe=False)


def test_wrong_type_is_refused():
  config = _untyped_default()
  config.train.epochs = "ten"
  with pytest.raises(config_lib.ConfigError, match="train.epochs = 'ten' has the wrong type"):
    config_lib.validate(config)



def test_warmup_must_be_shorter_than_training():
  config = default.get_config()
  config.train.warmup_epochs = float(config.train.epochs)
  with pytest.raises(config_lib.ConfigError, match="train.warmup_epochs = 60.0 is not allowed"):
    config_lib.validate(config)


def test_streamed_dataset_refuses_on_device_augmentation():
  config = default.get_config()
  config.dataset.name = "imagenet2012"
  config.dataset.augment = "crop_flip"
  with pytest.raises(config_lib.ConfigError, match="dataset.augment = 'crop_flip'"):
    config_lib.validate(config)


def test_unknown_config_argument_is_refused():
  from configs import cifar10, mnist1d  # pylint: disable=g-import-not-at-top
  with pytest.raises(ValueError, match="unknown config argument 'bogus'; allowed: quick"):
    mnist1d.get_config("bogus")
  assert cifar10.get_config("resnet56").model.name == "resnet56"
  with pytest.raises(ValueError, match="unknown config argument 'wrn16_8'"):
    cifar10.get_config("wrn16_8")


@pytest.mark.parametrize("vary, key, values, expected", [
    ("seed", "weight_decays", (1e-4, 2e-4, 3e-4, 4e-4), "soup.vary = 'seed' does not name"),
    ("weight_decay", "weight_decays", (1e-4, 2e-4), "2 values; allowed: soup.m = 4 values"),
])
def test_candidate_values_must_match_vary_and_m(vary, key, values, expected):
  config = default.get_config()
  config.soup.m, config.soup.vary, config.soup[key] = 4, vary, values
  with pytest.raises(config_lib.ConfigError, match="allowed") as info:
    config_lib.validate(config)
  assert expected in str(info.value)


@pytest.mark.parametrize("strategy, changes, expected", [
    ("gmp", {"gradual.start_epoch": 45}, "allowed: start_epoch < end_epoch <= train.epochs"),
    ("gmp", {"gradual.end_epoch": 70}, "allowed: start_epoch < end_epoch <= train.epochs = 60"),
    ("gmp", {"prune.selector": "random"}, "prune.selector = 'random' is not allowed with "
                                          "strategy 'gmp'; allowed: global, uniform"),
    ("sms_gmp", {"gradual.end_epoch": 60}, "allowed: fewer than train.epochs = 60"),
    ("sms_gmp", {"prune.n_phases": 36}, "allowed: at most gradual.end_epoch - "
                                        "gradual.start_epoch = 35"),
    ("sms_gmp", {"soup.vary": "seed,retrain_epochs"}, "allowed: seed, weight_decay, "
                                                      "learning_rate"),
    ("set", {}, "init_mask.distribution = 'none' is not allowed with strategy 'set'"),
    ("set", {"init_mask.distribution": "erk", "regrow.end_epoch": 61},
     "regrow.end_epoch = 61 is not allowed"),
    ("imp", {"init_mask.distribution": "erk", "init_mask.density": 0.05},
     "prune.goal_sparsity = 0.9 is not allowed with init_mask.density = 0.05"),
])
def test_strategies_check_their_keys(strategy, changes, expected):
  config = default.get_config()
  config.strategy = strategy
  for key, value in changes.items():
    section, name = key.split(".")
    config[section][name] = value
  with pytest.raises(config_lib.ConfigError) as info:
    config_lib.validate(config)
  assert expected in str(info.value)
  assert "\n" not in str(info.value)


def test_importing_the_config_module_loads_no_jax():
  import subprocess, sys  # pylint: disable=g-import-not-at-top,multiple-imports
  code = ("import sys, sms_jax.config, sms_jax.defaults; "
          "print(sorted(m for m in ('jax', 'flax', 'optax', 'tensorflow') if m in sys.modules))")
  out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                       check=True)
  assert out.stdout.strip() == "[]"


def test_every_registered_strategy_is_a_config_choice():
  from sms_jax import strategies  # pylint: disable=g-import-not-at-top
  config = default.get_config()
  for name in strategies.STRATEGIES:
    config.strategy = name
    config.init_mask.distribution = "erk" if name in ("set", "rigl", "sms_rigl", "edge_popup") else "none"
    config_lib.validate(config)


def test_random_start_experiments_are_valid_for_every_method_and_start():
  """configs/random_start_mnist1d.py:METHOD,START builds a valid run for every pair (but the
  dense starts of methods that have none, refused in one line), ending at 95% sparsity."""
  # pylint: disable-next=g-import-not-at-top
  from sms_jax.configs import random_start_mnist1d as experiments
  for method in experiments.METHODS:
    for start in experiments.STARTS:
      arg = f"{method},{start}"
      if start == "dense" and method in ("rigl", "sms_rigl", "edge_popup"):
        with pytest.raises(ValueError, match=f"unknown config argument '{arg}'"):
          experiments.get_config(arg)
        continue
      config = experiments.get_config(arg)
      config_lib.validate(config)
      config_lib.validate(experiments.get_config(arg + ",quick"))
      sparse_start = (config.init_mask.within if method in ("snip", "synflow")
                      else config.init_mask.distribution)
      assert (sparse_start == "none") == (start == "dense"), arg
      if method not in ("edge_popup", "static"):
        assert config.prune.goal_sparsity == 0.95 or config.init_mask.density == 0.05, arg
      if method.startswith("sms_"):
        assert config.strategy == method and config.soup.m > 1, arg


def test_random_start_cifar_experiments_are_valid_and_carry_their_choices():
  """configs/random_start_cifar.py:DATASET,MODEL,METHOD,START: every combination valid (quick
  too), the dataset and model as named, the start mask where the method puts it, and the
  lottery-ticket levels keeping about 80% each down to density 0.01."""
  # pylint: disable-next=g-import-not-at-top
  from sms_jax.configs import _random_start, random_start_cifar as experiments
  for method in _random_start.METHODS:
    for start in ("dense", "er", "pyramidal"):
      arg = f"cifar100,vgg16,{method},{start}"
      if start == "dense" and method in _random_start.NO_DENSE_START:
        with pytest.raises(ValueError, match="not dense for rigl, sms_rigl, edge_popup"):
          experiments.get_config(arg)
        continue
      config = experiments.get_config(arg)
      config_lib.validate(config)
      config_lib.validate(experiments.get_config(arg + ",quick"))
      assert (config.dataset.name, config.model.name) == ("cifar100", "vgg16"), arg
      init = config.init_mask
      sparse_start = init.within if method in ("snip", "synflow") else init.distribution
      assert (sparse_start == "none") == (start == "dense"), arg
      density = {"rigl": 0.01, "sms_rigl": 0.01, "edge_popup": 0.5, "snip": 0.01,
                 "synflow": 0.01}.get(method, 0.3)
      assert init.density == pytest.approx(density), arg
      assert config.prune.goal_sparsity == 0.99
  defaults = experiments.get_config("")
  assert (defaults.dataset.name, defaults.model.name, defaults.strategy) == (
      "cifar10", "resnet18", "sms")
  for start, levels in (("dense", 21), ("balanced", 15)):
    config = experiments.get_config(f"lth,{start}")
    assert (config.prune.n_phases, config.retrain.rewind, config.retrain.schedule) == (
        levels, "init", "full")
    density = 1.0 if start == "dense" else 0.3
    keep = (0.01 / density) ** (1 / levels)
    assert 0.78 < keep < 0.82, (start, keep)
