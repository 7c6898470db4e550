"""Bad inputs are refused before any work, in one line naming the key, the value and what is
allowed: absurd lengths, splits too small to train or validate on, bools in integer tuples,
non-finite floats, tuple overrides (echoed as parsed), and config files that do not load."""

import subprocess
import types

import ml_collections
import pytest

from configs import default, mnist1d
from conftest import start_cli
from sms_jax import config as config_lib

BIG = 10**9

# (overrides of the `mnist1d:quick` config (sms, m = 2), a fragment of the message).
CORPUS = [
    # Absurd lengths (8a).
    ({"train.epochs": 1e9}, "train.epochs = 1000000000.0 has the wrong type; allowed: an integer"),
    ({"train.epochs": BIG}, "train.epochs = 1000000000 is not allowed; allowed: an integer in "
                            "[1, 100000]"),
    ({"retrain.epochs_per_phase": BIG}, "retrain.epochs_per_phase = 1000000000 is not allowed; "
                                        "allowed: an integer in [1, 100000]"),
    ({"retrain.epochs_per_phase": 1e9}, "retrain.epochs_per_phase = 1000000000.0 has the wrong "
                                        "type"),
    ({"prune.n_phases": 1000000}, "prune.n_phases = 1000000 is not allowed; allowed: an integer "
                                  "in [1, 100]"),
    ({"soup.m": 10000}, "soup.m = 10000 is not allowed; allowed: an integer in [1, 256]"),
    ({"gradual.start_epoch": BIG}, "gradual.start_epoch = 1000000000 is not allowed; allowed: an "
                                   "integer in [0, 100000]"),
    ({"gradual.end_epoch": BIG}, "gradual.end_epoch = 1000000000 is not allowed; allowed: an "
                                 "integer in [1, 100000]"),
    ({"gradual.update_every": 2**31}, "gradual.update_every = 2147483648 is not allowed; allowed: "
                                      "an integer in [1, 2**31 - 1]"),
    ({"regrow.update_every": 2**31}, "regrow.update_every = 2147483648 is not allowed"),
    ({"regrow.end_epoch": BIG}, "regrow.end_epoch = 1000000000 is not allowed; allowed: an "
                                "integer in [0, 100000]"),
    ({"train.eval_every_epochs": BIG}, "train.eval_every_epochs = 1000000000 is not allowed"),
    ({"train.step_epochs": BIG}, "train.step_epochs = 1000000000 is not allowed"),
    ({"checkpoint.every_epochs": BIG}, "checkpoint.every_epochs = 1000000000 is not allowed"),
    ({"dataset.num_train": 2**31}, "dataset.num_train = 2147483648 is not allowed; allowed: an "
                                   "integer in [0, 2**31 - 1]"),
    ({"dataset.image_size": 100000}, "dataset.image_size = 100000 is not allowed"),
    ({"soup.vary": "seed,retrain_epochs", "soup.retrain_epochs": (10, BIG)},
     "soup.retrain_epochs = (10, 1000000000) is not allowed (element [1] = 1000000000); allowed: "
     "integers in [1, 100000]"),
    # Splits too small, greedy soups without validation data, bools as integers (8b).
    ({"dataset.val_fraction": 0.0, "soup.method": "greedy"},
     "soup.method = 'greedy' is not allowed with dataset.val_fraction = 0.0"),
    ({"dataset.num_train": 1}, "dataset.num_train = 1 is not allowed with train.batch_size = 128 "
                               "and dataset.val_fraction = 0.1; allowed: 0 (all) or at least 142"),
    ({"dataset.num_train": 1, "train.batch_size": 1},
     "dataset.num_train = 1 is not allowed with train.batch_size = 1 and dataset.val_fraction = "
     "0.1; allowed: 0 (all) or at least 6"),
    ({"dataset.num_train": 100, "dataset.val_fraction": 0.0},
     "dataset.num_train = 100 is not allowed with train.batch_size = 128 and dataset.val_fraction "
     "= 0.0; allowed: 0 (all) or at least 128"),
    ({"soup.seeds": (True, False)},
     "soup.seeds = (True, False) is not allowed (element [0] = True); allowed: integers in "
     "[0, 2**31)"),
    ({"soup.vary": "seed,retrain_epochs", "soup.retrain_epochs": (2, True)},
     "soup.retrain_epochs = (2, True) is not allowed (element [1] = True)"),
    ({"seed": True}, "seed = True has the wrong type; allowed: an integer"),
    # Non-finite floats (9b).
    ({"train.learning_rate": float("nan")},
     "train.learning_rate = nan is not allowed; allowed: a finite number > 0"),
    ({"train.learning_rate": float("inf")},
     "train.learning_rate = inf is not allowed; allowed: a finite number > 0"),
    ({"train.weight_decay": float("-inf")},
     "train.weight_decay = -inf is not allowed; allowed: a finite number >= 0"),
    ({"dataset.val_fraction": float("nan")},
     "dataset.val_fraction = nan is not allowed; allowed: a finite number in [0, 1)"),
    # Tuples name the offending element (9c).
    ({"soup.vary": "weight_decay", "soup.weight_decays": (0.1, -1)},
     "soup.weight_decays = (0.1, -1) is not allowed (element [1] = -1); allowed: finite numbers "
     ">= 0"),
    ({"soup.vary": "learning_rate", "soup.learning_rates": (0.1, float("nan"))},
     "soup.learning_rates = (0.1, nan) is not allowed (element [1] = nan); allowed: finite "
     "numbers > 0"),
    ({"train.milestones": (0.5, float("inf"))},
     "train.milestones = (0.5, inf) is not allowed (element [1] = inf); allowed: strictly "
     "increasing fractions"),
]


def _config(overrides):
  """`mnist1d:quick` with `overrides`, without ConfigDict's own type checks (as a program
  could build it)."""
  config = ml_collections.ConfigDict(mnist1d.get_config("quick").to_dict(), type_safe=False)
  for key, value in overrides.items():
    section, name = key.rsplit(".", 1) if "." in key else (None, key)
    (config[section] if section else config)[name] = value
  return config


@pytest.mark.parametrize("overrides, expected", CORPUS, ids=[str(o) for o, _ in CORPUS])
def test_corpus_of_bad_inputs_is_refused_in_one_line(overrides, expected):
  with pytest.raises(config_lib.ConfigError) as info:
    config_lib.validate(_config(overrides))
  message = str(info.value)
  assert expected in message and "\n" not in message, message
  assert message.startswith("config key ") and "allowed: " in message, message


def test_the_largest_allowed_values_are_valid():
  config = _config({"train.epochs": 100000, "prune.n_phases": 100, "soup.m": 256,
                    "retrain.epochs_per_phase": 100000, "checkpoint.every_epochs": 100000,
                    "dataset.num_train": 142})
  config_lib.validate(config)


@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf")])
def test_every_float_key_asks_for_a_finite_number(value):
  float_keys = [f"{section}.{key}" for section, block in default.get_config().items()
                if isinstance(block, ml_collections.ConfigDict)
                for key, value in block.items() if isinstance(value, float)]
  assert len(float_keys) >= 10
  for key in float_keys:
    with pytest.raises(config_lib.ConfigError) as info:
      config_lib.validate(_config({key: value}))
    assert f"config key {key} = {value} is not allowed; allowed: a finite number" in str(
        info.value), str(info.value)


def _dataset(train: int, val: int, name: str = "tiny"):
  split = lambda n: types.SimpleNamespace(num_examples=n)
  return types.SimpleNamespace(name=name, train=split(train), val=split(val))


@pytest.mark.parametrize("overrides, dataset, expected", [
    ({"strategy": "dense", "train.epochs": 3000, "train.batch_size": 1}, _dataset(10**6, 10),
     "train.epochs = 3000 is not allowed with 1000000 steps per epoch"),
    ({"strategy": "imp_mx", "soup.m": 256, "retrain.epochs_per_phase": 100000},
     _dataset(128 * 100, 10), "retrain.epochs_per_phase = 100000 is not allowed with 100 steps "
                              "per epoch: a phase of imp_mx retrains 25600000 epochs"),
    ({"soup.vary": "retrain_epochs", "soup.retrain_epochs": (2, 90000)},
     _dataset(128 * 30000, 10), "soup.retrain_epochs = (2, 90000) is not allowed with 30000 "
                                "steps per epoch"),
    ({"dataset.val_fraction": 0.1}, _dataset(200, 0),
     "dataset.val_fraction = 0.1 is not allowed with the 200 examples of tiny"),
])
def test_checks_against_the_loaded_dataset(overrides, dataset, expected):
  config = _config(overrides)
  config_lib.validate(config)
  with pytest.raises(config_lib.ConfigError) as info:
    config_lib.check_against_dataset(config, dataset)
  assert expected in str(info.value) and "allowed: " in str(info.value), str(info.value)
  assert "\n" not in str(info.value)
  config_lib.check_against_dataset(_config({}), _dataset(3600, 400))


def test_run_refuses_int32_step_overflow_before_writing(tmp_path):
  from sms_jax import experiment  # pylint: disable=g-import-not-at-top
  config = mnist1d.get_config("quick")
  config.strategy, config.soup.m, config.retrain.epochs_per_phase = "imp_mx", 256, 100000
  config.train.batch_size = 1
  with pytest.raises(config_lib.ConfigError, match="must fit in int32"):
    experiment.run(config, str(tmp_path / "run"))
  assert not (tmp_path / "run").exists()


def _cli(*args) -> subprocess.CompletedProcess:
  proc = start_cli(*args)
  out, err = proc.communicate(timeout=120)
  return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def _one_error_line(proc) -> str:
  assert proc.returncode == 2, proc.stderr
  lines = proc.stderr.strip().splitlines()
  assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
  assert "Traceback" not in proc.stderr + proc.stdout
  return lines[0]


@pytest.mark.parametrize("source, expected", [
    ("def get_config():\n  return 1 / 0\n", "ZeroDivisionError: division by zero (line 2)"),
    ("def get_config(:\n  pass\n", "SyntaxError: "),
    ("import no_such_module_here\n", "ModuleNotFoundError: No module named 'no_such_module_here'"),
    ("def get_config():\n  open('/no/such/file.csv')\n", "No such file or directory"),
    ("def get_config():\n  return 5\n", "get_config() returned int"),
])
def test_cli_config_file_that_fails_names_the_file(tmp_path, source, expected):
  path = tmp_path / "broken.py"
  path.write_text(source)
  line = _one_error_line(_cli(f"--config={path}", f"--workdir={tmp_path / 'run'}"))
  assert f"cannot load config file {path}: " in line and expected in line, line
  assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("overrides, expected", [
    (["--config.train.epochs=1e9"],
     "config key train.epochs = 1e9 has the wrong type; allowed: an integer"),
    (["--config.soup.vary=seed,weight_decay", "--config.soup.weight_decays=0.1,nan"],
     "config key soup.weight_decays = (0.1, nan) is not allowed (element [1] = nan); allowed: "
     "finite numbers >= 0"),
])
def test_cli_bad_overrides_are_one_line_exit_2(tmp_path, overrides, expected):
  line = _one_error_line(_cli("--config=configs/mnist1d.py:quick", f"--workdir={tmp_path / 'r'}",
                              *overrides))
  assert line == f"error: {expected}", line
  assert not (tmp_path / "r").exists()
