"""`config.pretrained` refuses, in one line and before writing anything, every source a run
cannot start from. (That a shared start computes what the run's own pretraining would is in
test_sms.py, beside the SMS run it is compared with.)"""

import os

import pytest

from conftest import make_tiny_config
from sms_jax import config as config_lib
from sms_jax import experiment, shared_pretraining


def _imp_config():
  config = make_tiny_config()
  config.strategy = "imp"
  config.prune.goal_sparsity = 0.5
  config.prune.n_phases = 1
  config.retrain.epochs_per_phase = 1
  return config


def _fake_source(path, *, epochs_saved=(3,), **changes):
  """A workdir that looks like a finished dense run of `_imp_config()` (config.json and the
  names of its pretraining checkpoints), with `changes` ({dotted key: value}) to its config."""
  config = _imp_config()
  config.strategy = "dense"
  for key, value in changes.items():
    *parents, leaf = key.split(".")
    node = config
    for parent in parents:
      node = node[parent]
    node[leaf] = value
  os.makedirs(path)
  with open(os.path.join(path, "config.json"), "w") as f:
    f.write(config.to_json())
  for epoch in epochs_saved:
    os.makedirs(os.path.join(path, "checkpoints", "pretrain", str(epoch)))
  return str(path)


@pytest.mark.parametrize("changes, epochs_saved, expected", [
    ({"model.name": "mlp"}, (3,), "its model.name is 'mlp', this run's 'cnn1d'"),
    ({"train.learning_rate": 0.1}, (3,), "its train.learning_rate is 0.1, this run's 0.05"),
    ({"seed": 7}, (3,), "its seed is 7, this run's 0"),
    ({"init_mask.distribution": "er"}, (3,), "its init_mask.distribution is 'er'"),
    ({"dataset.num_train": 256}, (3,), "its dataset.num_train is 256, this run's 512"),
    ({}, (1, 2), "its pretraining has not finished (its newest checkpoint is epoch 2 of 3"),
    ({}, (), "its pretraining has not finished (it has no checkpoint"),
    ({"strategy": "gmp"}, (3,), "its strategy gmp pretrains in its own way"),
    ({"pretrained": "elsewhere"}, (3,), "started from the pretraining of 'elsewhere'; pass that"),
])
def test_unusable_sources_are_refused_before_writing(tmp_path, changes, epochs_saved, expected):
  config = _imp_config()
  config.pretrained = _fake_source(tmp_path / "source", epochs_saved=epochs_saved, **changes)
  with pytest.raises(config_lib.ConfigError) as info:
    experiment.run(config, str(tmp_path / "run"))
  message = str(info.value)
  assert "\n" not in message and expected in message, message
  assert message.startswith(f"config key pretrained = {config.pretrained!r} is not allowed")
  assert not os.path.exists(tmp_path / "run")


def test_a_source_that_differs_only_where_pretraining_does_not_look_is_accepted(tmp_path):
  """Other keys (the strategy's, the soup's, data_dir) may differ: the check passes, and the
  run gets as far as reading the (here fake, so unreadable) checkpoint."""
  from sms_jax import checkpoints  # pylint: disable=g-import-not-at-top
  config = _imp_config()
  config.pretrained = _fake_source(tmp_path / "source", **{
      "soup.m": 8, "prune.goal_sparsity": 0.9, "dataset.data_dir": "/elsewhere"})
  with pytest.raises(checkpoints.CheckpointError, match="cannot read checkpoint 3"):
    experiment.run(config, str(tmp_path / "run"))


def test_missing_source_and_own_workdir_are_refused(tmp_path):
  config = _imp_config()
  config.pretrained = str(tmp_path / "nothing")
  with pytest.raises(config_lib.ConfigError, match="cannot read .*config.json"):
    experiment.run(config, str(tmp_path / "run"))
  config.pretrained = str(tmp_path / "run")  # A run of this very config, resumed.
  os.makedirs(tmp_path / "run")
  with open(tmp_path / "run" / "config.json", "w") as f:
    f.write(config.to_json())
  with pytest.raises(config_lib.ConfigError, match="it is this run's own workdir"):
    experiment.run(config, str(tmp_path / "run"))


@pytest.mark.parametrize("strategy", ["gmp", "sms_gmp", "dpf", "sms_dpf", "bimp", "sms_bimp",
                                      "gmp_mx", "set", "sms_rigl", "sms_granet"])
def test_strategies_that_pretrain_their_own_way_refuse_the_key(strategy):
  config = _imp_config()
  config.strategy = strategy
  config.pretrained = "runs/any"
  with pytest.raises(config_lib.ConfigError) as info:
    config_lib.validate(config)
  assert (f"config key pretrained = 'runs/any' is not allowed with strategy {strategy}"
          in str(info.value)), str(info.value)
  assert "with the strategies dense, imp, imp_avg_reprune, imp_mx, sms" in str(info.value)


def test_a_source_without_the_rewind_point_is_refused(tmp_path):
  """Rewinding to pretraining epoch 2 needs the source's rewind point or its checkpoint 2; a
  rewind point of the source (its own retrain.rewind) is found."""
  config = _imp_config()
  config.retrain.rewind = "epoch:2"
  config.pretrained = _fake_source(tmp_path / "source", epochs_saved=(3,),
                                   **{"retrain.rewind": "epoch:2"})
  with pytest.raises(config_lib.ConfigError, match="it kept no state of epoch 2 to rewind to"):
    experiment.run(config, str(tmp_path / "run"))
  os.makedirs(tmp_path / "source" / "checkpoints" / "rewind" / "2")
  shared_pretraining.check_source(config, str(tmp_path / "run"))
