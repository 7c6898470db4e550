"""Training: schedules, the optimizers against PyTorch's and optax's update rules, the step
and the epoch, prediction."""

import functools

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from configs import default
from sms_jax import data, evaluation, metrics
from sms_jax.training import engine, evaluator, optimizers, schedules
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
  tx = optimizers.make_optimizer(_train_config(weight_decay=wd, momentum=m, nesterov=nesterov),
                                 lambda count: lr)
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


def test_adamw_matches_optax():
  """Adam's moments with b1 = train.momentum, decoupled weight decay, the schedule's rate."""
  schedule = lambda count: 0.01 / (1.0 + count)
  tx = optimizers.make_optimizer(_train_config(optimizer="adamw", weight_decay=0.05,
                                               momentum=0.8), schedule)
  reference = optax.adamw(schedule, b1=0.8, b2=0.999, eps=1e-8, weight_decay=0.05)
  w = w_ref = {"w": jnp.array([1.0, -2.0, 3.0])}
  state, state_ref = tx.init(w), reference.init(w)
  rng = np.random.default_rng(1)
  for _ in range(4):
    g = {"w": jnp.asarray(rng.normal(size=3), jnp.float32)}
    updates, state = tx.update(g, state, w)
    updates_ref, state_ref = reference.update(g, state_ref, w_ref)
    w, w_ref = optax.apply_updates(w, updates), optax.apply_updates(w_ref, updates_ref)
  np.testing.assert_allclose(w["w"], w_ref["w"], rtol=1e-6)
  assert float(optimizers.learning_rate_of(state)) == pytest.approx(0.01 / 4)


class _TinyNet(nn.Module):
  @nn.compact
  def __call__(self, x, train: bool):
    x = nn.Dense(8)(x.reshape(x.shape[0], -1))
    x = nn.BatchNorm(use_running_average=not train, momentum=0.9)(x)
    return nn.Dense(3)(nn.relu(x))


def _setup(n=64):
  model = _TinyNet()
  tx = optimizers.make_optimizer(_train_config(), lambda count: 0.1)
  state = create_train_state(model, tx, jax.random.key(0), (5,))
  x = jax.random.normal(jax.random.key(1), (n, 5))
  y = (x[:, 0] > 0).astype(jnp.int32) + (x[:, 1] > 0).astype(jnp.int32)
  split = data.Split(np.asarray(x), np.asarray(y))
  return model, tx, state, data.Dataset("toy", split, split, split, 3, "none")


def test_an_epoch_is_the_train_step_on_each_planned_batch():
  model, tx, state, dataset = _setup()
  key = jax.random.key(7)
  copy = lambda tree: jax.tree.map(jnp.copy, tree)  # Epochs donate their input state.
  epoch, step_metrics = engine.EpochRunner(state, dataset, model=model, tx=tx, batch_size=16,
                                           epoch_loop="scan")(copy(state), key)
  chex.assert_shape(step_metrics["loss"], (4,))
  plan = engine.epoch_plan(key, 64, 16)
  step = jax.jit(functools.partial(engine.train_step, model=model, tx=tx))
  looped, x, y = state, dataset.train.x, dataset.train.y
  for i, idx in enumerate(np.asarray(plan.batches)):
    looped, _ = step(looped, x[idx], y[idx], jax.random.fold_in(plan.dropout_key, i))
  chex.assert_trees_all_close(epoch, looped, rtol=1e-5, atol=1e-6)
  assert int(epoch.step) == 4
  assert not jax.tree.all(jax.tree.map(jnp.array_equal, epoch.batch_stats, state.batch_stats))


def test_training_reduces_the_loss():
  model, tx, state, dataset = _setup(256)
  run = engine.EpochRunner(state, dataset, model=model, tx=tx, batch_size=32)
  losses = []
  for e in range(8):
    state, m = run(state, jax.random.key(e))
    losses.append(float(np.mean(m["loss"])))
  assert losses[-1] < 0.6 * losses[0]


def test_predict_pads_and_matches_direct_apply():
  model, _, state, dataset = _setup(50)
  x = dataset.train.x
  logits = evaluator.predict(state, x, model=model, batch_size=16)  # 50 = 3 * 16 + 2.
  direct = model.apply({"params": state.params, "batch_stats": state.batch_stats}, x, train=False)
  chex.assert_trees_all_close(logits, direct, rtol=1e-5, atol=1e-6)


def test_host_metrics_match_the_jitted_ones():
  logits = jax.random.normal(jax.random.key(0), (300, 7)) * 3
  labels = jax.random.randint(jax.random.key(1), (300,), 0, 7)
  host = evaluation.evaluate_logits(np.asarray(logits), np.asarray(labels))
  assert host["loss"] == pytest.approx(float(metrics.cross_entropy(logits, labels)), rel=1e-5)
  assert host["accuracy"] == pytest.approx(float(metrics.accuracy(logits, labels)))


def test_step_counts_from_the_start_and_equal_milestones_multiply():
  step = schedules.make_schedule(_train_config(epochs=90, learning_rate=1.0, schedule="step",
                                               step_epochs=30, decay_factor=0.1,
                                               warmup_epochs=5), 1)
  np.testing.assert_allclose([step(29), step(30), step(60)], [1.0, 0.1, 0.01], rtol=1e-6)
  merged = schedules.make_schedule(_train_config(epochs=10, learning_rate=1.0, schedule="multistep",
                                                 milestones=(0.5, 0.52), decay_factor=0.1), 1)
  assert float(merged(5)) == pytest.approx(0.01)  # 0.5 and 0.52 both round to iteration 5.


def test_label_smoothing_matches_the_formula():
  logits = jnp.array([[2.0, 0.5, -1.0]])
  log_p = np.asarray(jax.nn.log_softmax(logits))[0]
  expected = -(0.9 + 0.1 / 3) * log_p[0] - (0.1 / 3) * (log_p[1] + log_p[2])
  assert float(metrics.cross_entropy(logits, jnp.array([0]), 0.1)) == pytest.approx(expected)


def test_make_optimizer_follows_the_schedule_and_config():
  cfg = _train_config(epochs=2, learning_rate=0.4, schedule="linear", weight_decay=0.01)
  tx = optimizers.make_optimizer(cfg, schedules.make_schedule(cfg, 5))
  params = {"w": jnp.ones(3)}
  state = tx.init(params)
  for _ in range(4):
    updates, state = tx.update({"w": jnp.zeros(3)}, state, params)
  assert float(optimizers.learning_rate_of(state)) == pytest.approx(0.4 * (1 - 3 / 10))
  assert float(optax.tree_utils.tree_get(state, "weight_decay")) == pytest.approx(0.01)
  # Zero gradients: the step is pure weight decay through momentum, scaled by the LR.
  assert float(updates["w"][0]) < 0
  with pytest.raises(ValueError, match="unknown train.optimizer 'lamb'; allowed: sgd, adamw"):
    optimizers.make_optimizer(_train_config(optimizer="lamb"), lambda count: 0.1)
