"""Training: schedules, the SGD chain against PyTorch's update rule, steps and epochs."""

import functools

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import default
from sms_jax.training import optimizer, schedules, steps
from sms_jax.training.state import create_train_state


def _train_config(**overrides):
  config = default.get_config().train
  config.update(overrides)
  return config


def test_cosine_with_warmup():
  fn = schedules.make_schedule(_train_config(epochs=10, learning_rate=0.1, warmup_epochs=1,
                                             schedule="cosine"), steps_per_epoch=10)
  np.testing.assert_allclose([fn(0), fn(5), fn(10)], [0.0, 0.05, 0.1], atol=1e-7)
  np.testing.assert_allclose(fn(55), 0.05, atol=1e-7)  # Half-way through the cosine part.
  assert float(fn(100)) == pytest.approx(0.0, abs=1e-7)


def test_multistep_and_step():
  multi = schedules.make_schedule(_train_config(epochs=100, learning_rate=1.0, schedule="multistep",
                                                milestones=(0.5, 0.75), decay_factor=0.1), 1)
  np.testing.assert_allclose([multi(49), multi(50), multi(74), multi(75)],
                             [1.0, 0.1, 0.1, 0.01], rtol=1e-6)
  step = schedules.make_schedule(_train_config(epochs=90, learning_rate=1.0, schedule="step",
                                               step_epochs=30, decay_factor=0.5), 2)
  np.testing.assert_allclose([step(59), step(60), step(120)], [1.0, 0.5, 0.25], rtol=1e-6)


def test_linear_and_constant():
  linear = schedules.make_schedule(_train_config(epochs=4, learning_rate=0.4, schedule="linear"), 5)
  np.testing.assert_allclose([linear(0), linear(10), linear(20)], [0.4, 0.2, 0.0], atol=1e-7)
  const = schedules.make_schedule(
      _train_config(epochs=4, learning_rate=0.4, schedule="constant"), 5)
  assert float(const(17)) == pytest.approx(0.4)


@pytest.mark.parametrize("nesterov", [False, True])
def test_sgd_matches_pytorch_update_rule(nesterov):
  """torch.optim.SGD: g += wd*w; b = m*b + g; d = g + m*b (Nesterov) or b; w -= lr*d."""
  lr, wd, m = 0.1, 0.01, 0.9
  tx = optimizer.sgd(lr, wd, m, nesterov)
  w = {"w": jnp.array([1.0, -2.0, 3.0])}
  state = tx.init(w)
  w_ref, buf = np.array([1.0, -2.0, 3.0]), np.zeros(3)
  rng = np.random.default_rng(0)
  for _ in range(4):
    g = rng.normal(size=3).astype(np.float32)
    updates, state = tx.update({"w": jnp.asarray(g)}, state, w)
    w = jax.tree.map(lambda p, u: p + u, w, updates)
    g_ref = g + wd * w_ref
    buf = m * buf + g_ref
    w_ref = w_ref - lr * (g_ref + m * buf if nesterov else buf)
  np.testing.assert_allclose(w["w"], w_ref, rtol=1e-5)


class _TinyNet(nn.Module):
  @nn.compact
  def __call__(self, x, train: bool):
    x = nn.Dense(8)(x.reshape(x.shape[0], -1))
    x = nn.BatchNorm(use_running_average=not train, momentum=0.9)(x)
    return nn.Dense(3)(nn.relu(x))


def _setup(n=64):
  model = _TinyNet()
  cfg = _train_config(epochs=2, learning_rate=0.1, schedule="constant")
  tx = optimizer.make_optimizer(cfg, steps_per_epoch=4)
  state = create_train_state(model, tx, jax.random.key(0), (5,))
  x = jax.random.normal(jax.random.key(1), (n, 5))
  y = (x[:, 0] > 0).astype(jnp.int32) + (x[:, 1] > 0).astype(jnp.int32)
  return model, tx, state, x, y


def test_train_epoch_equals_a_loop_of_train_steps():
  model, tx, state, x, y = _setup()
  key = jax.random.key(7)
  scanned, step_metrics = jax.jit(functools.partial(
      steps.train_epoch, model=model, tx=tx, batch_size=16, augment="none"))(state, key, x, y)
  chex.assert_shape(step_metrics["loss"], (4,))
  order_key, _ = jax.random.split(key)
  step = jax.jit(functools.partial(steps.train_step, model=model, tx=tx))
  looped = state
  for idx in np.asarray(jax.random.permutation(order_key, 64)).reshape(4, 16):
    looped, _ = step(looped, x[idx], y[idx])
  chex.assert_trees_all_close(scanned, looped, rtol=1e-5, atol=1e-6)
  assert int(scanned.step) == 4
  assert not jax.tree.all(jax.tree.map(jnp.array_equal, scanned.batch_stats, state.batch_stats))


def test_training_reduces_the_loss():
  model, tx, state, x, y = _setup(256)
  epoch = jax.jit(functools.partial(steps.train_epoch, model=model, tx=tx, batch_size=32,
                                    augment="none"))
  first = None
  for e in range(8):
    state, m = epoch(state, jax.random.key(e), x, y)
    first = first if first is not None else float(m["loss"][0])
  assert float(m["loss"].mean()) < 0.6 * first


def test_predict_pads_and_matches_direct_apply():
  model, _, state, x, _ = _setup(50)
  logits = steps.predict(state, x, model=model, batch_size=16)  # 50 = 3 * 16 + 2.
  direct = model.apply({"params": state.params, "batch_stats": state.batch_stats}, x, train=False)
  chex.assert_trees_all_close(logits, direct, rtol=1e-5, atol=1e-6)


def test_host_metrics_match_the_jitted_ones():
  from sms_jax import metrics  # pylint: disable=g-import-not-at-top
  logits = jax.random.normal(jax.random.key(0), (300, 7)) * 3
  labels = jax.random.randint(jax.random.key(1), (300,), 0, 7)
  host = metrics.evaluate_logits(np.asarray(logits), np.asarray(labels))
  assert host["loss"] == pytest.approx(float(metrics.cross_entropy(logits, labels)), rel=1e-5)
  assert host["accuracy"] == pytest.approx(float(metrics.accuracy(logits, labels)))


def test_epoch_loops_scan_and_steps_agree():
  from sms_jax import data  # pylint: disable=g-import-not-at-top
  from sms_jax.training import loop  # pylint: disable=g-import-not-at-top
  model, tx, state, x, y = _setup(96)
  split = data.Split(np.asarray(x), np.asarray(y))
  dataset = data.Dataset("toy", split, split, split, num_classes=3, augment="none")
  results = {}
  for epoch_loop in ("scan", "steps"):
    run = loop.in_memory_epochs(state, dataset, jax.random.key(3), batch_size=32,
                                epoch_loop=epoch_loop, log=lambda _: None, model=model, tx=tx)
    s = jax.tree.map(jnp.copy, state)  # The epoch functions donate their input state.
    for epoch in range(2):
      s, m = run(s, epoch)
    results[epoch_loop] = (s, m)
  chex.assert_trees_all_close(results["scan"], results["steps"], rtol=1e-5, atol=1e-6)
  chex.assert_shape(results["steps"][1]["loss"], (3,))


def test_step_counts_from_the_start_and_equal_milestones_multiply():
  step = schedules.make_schedule(_train_config(epochs=90, learning_rate=1.0, schedule="step",
                                               step_epochs=30, decay_factor=0.1,
                                               warmup_epochs=5), 1)
  np.testing.assert_allclose([step(29), step(30), step(60)], [1.0, 0.1, 0.01], rtol=1e-6)
  merged = schedules.make_schedule(_train_config(epochs=10, learning_rate=1.0, schedule="multistep",
                                                 milestones=(0.5, 0.52), decay_factor=0.1), 1)
  assert float(merged(5)) == pytest.approx(0.01)  # 0.5 and 0.52 both round to iteration 5.


def test_label_smoothing_matches_the_formula():
  from sms_jax import metrics  # pylint: disable=g-import-not-at-top
  logits = jnp.array([[2.0, 0.5, -1.0]])
  log_p = np.asarray(jax.nn.log_softmax(logits))[0]
  expected = -(0.9 + 0.1 / 3) * log_p[0] - (0.1 / 3) * (log_p[1] + log_p[2])
  assert float(metrics.cross_entropy(logits, jnp.array([0]), 0.1)) == pytest.approx(expected)


def test_make_optimizer_follows_the_schedule_and_config():
  cfg = _train_config(epochs=2, learning_rate=0.4, schedule="linear", weight_decay=0.01)
  tx = optimizer.make_optimizer(cfg, steps_per_epoch=5)
  params = {"w": jnp.ones(3)}
  state = tx.init(params)
  for _ in range(4):
    updates, state = tx.update({"w": jnp.zeros(3)}, state, params)
  assert float(state.hyperparams["learning_rate"]) == pytest.approx(0.4 * (1 - 3 / 10))
  assert float(state.hyperparams["weight_decay"]) == pytest.approx(0.01)
  # Zero gradients: the step is pure weight decay through momentum, scaled by the LR.
  assert float(updates["w"][0]) < 0
