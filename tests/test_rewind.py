"""Lottery-ticket IMP: `retrain.rewind` (each phase prunes the trained model, then trains from
the rewind point's weights under the new masks) and the `full` retraining schedule."""

import jax
import numpy as np
import optax
import pytest

from conftest import make_tiny_config
from sms_jax import checkpoints, experiment, models
from sms_jax import config as config_lib
from sms_jax.phases import runner
from sms_jax.training import retrain, state as state_lib


def _lth_config(rewind="epoch:1"):
  """IMP on 512 examples: 3 dense epochs, 2 levels to 75% sparsity, each 2 epochs of the
  whole pretraining schedule, rewound to `rewind`; every pretraining epoch kept."""
  config = make_tiny_config()
  config.strategy = "imp"
  config.prune.goal_sparsity = 0.75
  config.prune.n_phases = 2
  config.retrain.epochs_per_phase = 2
  config.retrain.schedule = "full"
  config.retrain.rewind = rewind
  config.checkpoint.keep = 10
  return config


def _run_recording_starts(config, workdir):
  """Runs `config`; returns its results and each phase's start (params, batch_stats, masks)."""
  starts, train = [], runner.PhaseRunner.train

  def recording(self, plan, start, updater, peak_scales):
    starts.append(jax.tree.map(np.asarray, (start.params, start.batch_stats, start.masks)))
    return train(self, plan, start, updater, peak_scales)

  with pytest.MonkeyPatch.context() as patch:
    patch.setattr(runner.PhaseRunner, "train", recording)
    return experiment.run(config, str(workdir)), starts


@pytest.fixture(scope="module")
def lth_run(tmp_path_factory):
  workdir = tmp_path_factory.mktemp("lth")
  results, starts = _run_recording_starts(_lth_config(), workdir)
  return results, starts, workdir


def _state(workdir, name, step):
  return checkpoints.read_verified(str(workdir / "checkpoints" / name), step)[1]


def _masked(params, masks):
  return jax.tree.map(lambda p, m: p if m is None else p * m, params, masks,
                      is_leaf=lambda x: x is None)


def _assert_trees_equal(a, b):
  jax.tree.map(np.testing.assert_array_equal, a, b)


def test_each_phase_starts_from_the_rewind_epoch_under_its_masks(lth_run):
  results, starts, workdir = lth_run
  epoch1 = _state(workdir, "pretrain", 1)  # The pretraining checkpoint, not the rewind copy.
  assert len(starts) == 2
  for params, batch_stats, masks in starts:
    _assert_trees_equal(params, _masked(epoch1["params"], masks))
    _assert_trees_equal(batch_stats, epoch1["batch_stats"])
  assert [p["sparsity"] for p in results["phases"]] == [0.5, 0.75]


def test_masks_come_from_the_trained_weights_not_the_rewind_point(lth_run):
  """Phase 1 keeps the largest weights of the finished pretraining, phase 2 those of phase 1's
  trained model (global magnitude pruning): every kept |w| >= every pruned one."""
  _, starts, workdir = lth_run
  trained = [_state(workdir, "pretrain", 3)["params"], _state(workdir, "phases", 1)["params"]]
  for (_, _, masks), params in zip(starts, trained):
    pairs = [(np.abs(p), m) for p, m in zip(jax.tree.leaves(params),
                                            jax.tree.leaves(masks, is_leaf=lambda x: x is None))
             if m is not None]
    kept = np.concatenate([w[m.astype(bool)] for w, m in pairs])
    dropped = np.concatenate([w[~m.astype(bool)] for w, m in pairs])
    assert kept.min() >= dropped[dropped > 0].max()
  assert not np.array_equal(*[jax.tree.leaves(s[2])[0] for s in starts])


def test_killed_after_the_rewind_epoch_resumes_identically(lth_run, tmp_path, die_after_save):
  reference, _, _ = lth_run
  die_after_save(lambda directory, step: directory == "pretrain" and step == 2)
  with pytest.raises(KeyboardInterrupt):
    experiment.run(_lth_config(), str(tmp_path))
  die_after_save.restore()
  resumed = experiment.run(_lth_config(), str(tmp_path))
  drop_times = lambda r: {k: v for k, v in r.items() if not k.endswith("time_s")}
  assert [drop_times(p["model"]) for p in resumed["phases"]] == [
      drop_times(p["model"]) for p in reference["phases"]]
  assert resumed["final"] == reference["final"]


def test_a_run_sharing_the_pretraining_rewinds_to_init(lth_run, tmp_path):
  """SMS started from the IMP run's pretraining with `rewind = init`: its phase starts from the
  initial weights (an independent `model.init`) under masks pruned from the shared model."""
  _, starts, workdir = lth_run
  config = _lth_config("init")
  config.strategy, config.soup.m, config.pretrained = "sms", 2, str(workdir)
  config.prune.n_phases, config.prune.goal_sparsity = 1, 0.5
  _, shared_starts = _run_recording_starts(config, tmp_path)
  (params, batch_stats, masks), = shared_starts
  _assert_trees_equal(masks, starts[0][2])  # Pruned from the same pretrained model.
  model = models.create_model(config.model.name, 10)
  init_key = jax.random.split(jax.random.key(config.seed))[0]  # As pretraining draws it.
  initial = state_lib.create_train_state(model, optax.sgd(0.1), init_key, (40, 1))
  _assert_trees_equal(params, _masked(jax.device_get(initial.params), masks))
  _assert_trees_equal(batch_stats, jax.device_get(initial.batch_stats))


@pytest.mark.parametrize("changes, expected", [
    ({"retrain.rewind": "epoch:x"}, "retrain.rewind = 'epoch:x' is not allowed; allowed: none, "
                                    "init or epoch:K"),
    ({"retrain.rewind": "epoch:4"}, "retrain.rewind = 'epoch:4' is not allowed with "
                                    "train.epochs = 3; allowed: init, or epoch:K with K <= 3"),
    ({"strategy": "gmp"}, "retrain.rewind = 'epoch:1' is not allowed with strategy gmp; "
                          "allowed: none, or the strategies dense, imp, imp_mx, sms"),
])
def test_bad_rewinds_are_refused_in_one_line(changes, expected):
  config = _lth_config()
  for key, value in changes.items():
    section, _, leaf = key.rpartition(".")
    (config[section] if section else config)[leaf] = value
  with pytest.raises(config_lib.ConfigError) as info:
    config_lib.validate(config)
  assert expected in str(info.value) and "\n" not in str(info.value), str(info.value)


def test_full_schedule_replays_pretraining_stretched_over_the_phase():
  train = make_tiny_config().train
  train.warmup_epochs = 1.0
  pretrain = retrain.pretrain_schedule(train, steps_per_epoch=10)  # 30 steps.
  replay = lambda total: np.asarray([retrain.learning_rate(
      "full", j, total, pretrain.max_lr, pretrain) for j in range(total)])
  whole = np.asarray([pretrain.fn(j) for j in range(30)])
  np.testing.assert_allclose(replay(30), whole, rtol=1e-6)
  np.testing.assert_allclose(replay(15), whole[::2], rtol=1e-6)
  np.testing.assert_allclose(replay(60), np.repeat(whole, 2), rtol=1e-6)
