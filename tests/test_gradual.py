"""Gradual magnitude pruning: the cubic schedule, the in-step transform, gmp and sms_gmp."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from configs import default
from sms_jax import data, experiment, sparsity
from sms_jax.strategies import gradual
from sms_jax.training import retrain, schedules


def _random_params(seed: int):
  """Two conv kernels, a dense kernel and biases."""
  rng = np.random.default_rng(seed)
  shapes = {"conv0": {"kernel": (3, 3, 2, 4), "bias": (4,)}, "conv1": {"kernel": (3, 4, 6)},
            "dense": {"kernel": (30, 5), "bias": (5,)}}
  return jax.tree.map(lambda s: jnp.asarray(rng.normal(size=s), jnp.float32), shapes,
                      is_leaf=lambda x: isinstance(x, tuple))


def test_cubic_schedule_values():
  schedule = sparsity.CubicSchedule(start_step=10, end_step=50, update_every=10,
                                    initial_sparsity=0.0, final_sparsity=0.8)
  np.testing.assert_array_equal(schedule.update_steps(), [20, 30, 40, 50])
  # s_f * (1 - (1 - t / T) ** 3) with t = step - 10, T = 40.
  expected = {0: 0.0, 10: 0.0, 20: 0.8 * (1 - 0.75 ** 3), 30: 0.7, 40: 0.8 * (1 - 0.25 ** 3),
              50: 0.8, 70: 0.8}
  for step, value in expected.items():
    assert schedule.sparsity(step) == pytest.approx(value, abs=1e-12)
  from_sparse = schedule._replace(initial_sparsity=0.5)
  assert from_sparse.sparsity(10) == pytest.approx(0.5)
  assert from_sparse.sparsity(30) == pytest.approx(0.8 - 0.3 * 0.5 ** 3)
  # The end is always an update, also off the grid or beyond one interval.
  np.testing.assert_array_equal(schedule._replace(end_step=45).update_steps(), [20, 30, 40, 45])
  np.testing.assert_array_equal(schedule._replace(update_every=100).update_steps(), [50])
  in_epochs = sparsity.cubic_schedule(start_epoch=2, end_epoch=5, steps_per_epoch=7,
                                      update_every=3, initial_sparsity=0.1, final_sparsity=0.9)
  assert (in_epochs.start_step, in_epochs.end_step) == (14, 35)


def _train_with_gradual_pruning(params, masks, schedule, selector, num_steps):
  """SGD with momentum and weight decay then `gradual_pruning`, dense random gradients;
  returns the params before each step and the masks and params after it."""
  tx = optax.chain(optax.add_decayed_weights(1e-2), optax.sgd(0.05, momentum=0.9),
                   sparsity.gradual_pruning(masks, schedule, selector))
  opt_state = tx.init(params)

  @jax.jit
  def step(params, opt_state, key):
    grads = jax.tree.map(lambda p: jax.random.normal(key, p.shape), params)
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state

  trace = []
  for t in range(num_steps):
    before = params
    params, opt_state = step(params, opt_state, jax.random.key(t))
    (held,) = sparsity.held_masks(opt_state)
    trace.append((before, held, params))
  assert step._cache_size() == 1  # Mask updates are array operations: one compiled step.
  return trace


@pytest.mark.parametrize("selector", ["global", "uniform"])
def test_gradual_pruning_follows_the_schedule_with_exact_counts(selector):
  params = _random_params(0)
  masks = sparsity.create_masks(params)
  schedule = sparsity.CubicSchedule(3, 15, 4, 0.0, 0.9)  # Updates after steps 7, 11, 15.
  trace = _train_with_gradual_pruning(params, masks, schedule, selector, 20)
  is_none = lambda x: x is None
  leaves = lambda tree: [np.asarray(x) for x, m in zip(
      jax.tree.leaves(tree, is_leaf=is_none), jax.tree.leaves(masks, is_leaf=is_none))
                         if m is not None]
  sizes = [m.size for m in leaves(masks)]
  previous = leaves(masks)
  for t, (before, held, after) in enumerate(trace, start=1):
    held = leaves(held)
    done = [s for s in schedule.update_steps() if s <= t]
    target = schedule.sparsity(done[-1]) if done else 0.0
    alive = [int(m.sum()) for m in held]
    if selector == "global":
      assert sum(alive) == round((1 - target) * sum(sizes))
    else:
      assert alive == [round(n * (1 - target)) for n in sizes]
    for now, then, weights in zip(held, previous, leaves(after)):
      assert not (now & ~then).any()  # Nothing revived.
      assert (weights[~now] == 0.0).all() and (weights[now] != 0.0).all()
    if t in schedule.update_steps():  # Kept: the largest alive magnitudes before the step.
      groups = [np.concatenate([b.ravel() for b in leaves(before)])] if selector == "global" \
          else [b.ravel() for b in leaves(before)]
      kept = [np.concatenate([h.ravel() for h in held])] if selector == "global" \
          else [h.ravel() for h in held]
      for values, keep in zip(groups, kept):
        assert np.abs(values[keep]).min() > np.abs(values[~keep]).max()
    previous = held
  assert sparsity.sparsity(trace[-1][1]) == pytest.approx(0.9, abs=1e-2)


def test_gradual_pruning_from_a_sparse_mask_only_removes():
  params = _random_params(1)
  rng = np.random.default_rng(5)
  masks = jax.tree.map(lambda m: None if m is None else jnp.asarray(rng.random(m.shape) < 0.5),
                       sparsity.create_masks(params), is_leaf=lambda x: x is None)
  params = sparsity.apply_masks(params, masks)
  initial = sparsity.sparsity(masks)
  schedule = sparsity.CubicSchedule(0, 6, 2, initial, 0.9)
  trace = _train_with_gradual_pruning(params, masks, schedule, "uniform", 8)
  final = trace[-1][1]
  for first, last in zip(jax.tree.leaves(masks), jax.tree.leaves(final)):
    assert not (np.asarray(last) & ~np.asarray(first)).any()
    # Every layer keeps the same fraction of its initially alive weights.
    assert int(np.sum(last)) == round(int(np.sum(first)) * 0.1 / (1 - initial))


def test_continue_schedule_goes_on_with_pretraining():
  config = default.get_config().train
  config.epochs, config.schedule, config.warmup_epochs = 10, "cosine", 1.0
  pre = retrain.pretrain_schedule(config, 10)
  fn = schedules.make_schedule(config, 10)
  for count in (0, 37, 99, 150):
    lr = retrain.learning_rate(retrain.CONTINUE, jnp.asarray(count), jnp.asarray(1),
                               jnp.asarray(0.025), pre)
    assert float(lr) == pytest.approx(0.5 * float(fn(min(count, 99))), rel=1e-6)


@pytest.fixture
def gmp_config(tiny_config):
  """GMP on 512 MNIST-1D examples: 5 epochs, to 90% between epochs 1 and 4."""
  config = tiny_config
  config.strategy = "gmp"
  config.train.epochs = 5
  config.prune.goal_sparsity = 0.9
  config.gradual.start_epoch = 1
  config.gradual.end_epoch = 4
  config.gradual.update_every = 5
  config.checkpoint.every_epochs = 1
  return config


def test_gmp_reaches_the_goal_along_the_schedule(gmp_config, tmp_path):
  results = experiment.run(gmp_config, str(tmp_path))
  steps_per_epoch = data.load(gmp_config.dataset).steps_per_epoch(gmp_config.train.batch_size)
  start, end = steps_per_epoch, 4 * steps_per_epoch
  schedule = sparsity.CubicSchedule(start, end, 5, 0.0, 0.9)
  assert [u["step"] for u in results["gradual"]["updates"]] == [*range(start + 5, end, 5), end]
  for record in results["history"]:
    done = [s for s in schedule.update_steps() if s <= record["epoch"] * steps_per_epoch]
    expected = schedule.sparsity(done[-1]) if done else 0.0
    assert record["sparsity"] == pytest.approx(expected, abs=1e-3)
  final = results["final"]
  assert abs(final["sparsity"] - 0.9) < 1e-3
  assert final["sparsity"] == 1 - sum(l["nonzero"] for l in results["layers"]) / sum(
      l["size"] for l in results["layers"])
  assert 0.1 < final["test_accuracy"] <= 1.0
  assert results["flops"]["nonzero"] < results["flops"]["dense"]
  assert json.load(open(tmp_path / "results.json"))["final"] == final


def test_gmp_interrupted_after_a_mask_update_resumes_identically(gmp_config, tmp_path,
                                                                 die_after_save):
  reference = experiment.run(gmp_config, str(tmp_path / "uninterrupted"))
  die_after_save(lambda directory, step: step == 3)  # Mid-schedule, masks already pruned.
  with pytest.raises(KeyboardInterrupt):
    experiment.run(gmp_config, str(tmp_path / "resumed"))
  die_after_save.restore()
  resumed = experiment.run(gmp_config, str(tmp_path / "resumed"))
  without_times = lambda h: [{k: v for k, v in r.items() if k != "time_s"} for r in h]
  assert without_times(resumed["history"]) == without_times(reference["history"])
  assert resumed["final"] == reference["final"]


def test_sms_gmp_phases_follow_the_schedule_and_continue_its_learning_rate(gmp_config,
                                                                           tmp_path):
  config = gmp_config
  config.strategy = "sms_gmp"
  config.prune.n_phases = 2
  config.soup.m = 2
  config.soup.vary = "seed,weight_decay"
  assert gradual.phase_epochs(config) == [3, 4]  # 1 + round(1.5), 1 + round(3).
  results = experiment.run(config, str(tmp_path))
  assert len(results["history"]) == 3  # One model up to the first mask update.
  steps_per_epoch = data.load(config.dataset).steps_per_epoch(config.train.batch_size)
  schedule = sparsity.CubicSchedule(steps_per_epoch, 4 * steps_per_epoch, 5, 0.0, 0.9)
  lr = schedules.make_schedule(config.train, steps_per_epoch)
  for phase, (start, end) in zip(results["phases"], [(3, 4), (4, 5)]):
    first_step = start * steps_per_epoch
    assert phase["target_sparsity"] == pytest.approx(schedule.sparsity(first_step))
    assert abs(phase["sparsity"] - phase["target_sparsity"]) < 1e-3
    assert [r["epoch"] for r in phase["history"]] == list(range(1, end - start + 1))
    # Each candidate's last step of its first epoch: the training schedule's, going on.
    assert phase["history"][0]["learning_rate"] == pytest.approx(
        [float(lr(first_step + steps_per_epoch - 1))] * 2, rel=1e-5)
    assert phase["soup"]["ingredients"] == [0, 1]
  assert abs(results["final"]["sparsity"] - 0.9) < 1e-3


def test_sms_gmp_interrupted_mid_phase_resumes_identically(gmp_config, tmp_path, die_after_save):
  config = gmp_config
  config.strategy, config.prune.n_phases, config.soup.m = "sms_gmp", 2, 2
  config.gradual.end_epoch = 3  # Phases: epochs 2-3 and 3-5.
  reference = experiment.run(config, str(tmp_path / "uninterrupted"))
  die_after_save(lambda directory, step: (directory, step) == ("phase2_candidates", 1))
  with pytest.raises(KeyboardInterrupt):
    experiment.run(config, str(tmp_path / "resumed"))
  die_after_save.restore()
  resumed = experiment.run(config, str(tmp_path / "resumed"))
  without_times = lambda p: {k: v for k, v in p.items() if not k.endswith("time_s")
                             and k != "history"}
  assert [without_times(p) for p in resumed["phases"]] == [
      without_times(p) for p in reference["phases"]]
  assert resumed["final"] == reference["final"]
