"""Dynamic pruning with feedback: the dpf and dpf_fixed updaters against a NumPy computation,
and the strategies dpf, gmp_mx and sms_dpf end to end on a tiny MNIST-1D run.

The shared updater suite (tests/test_updaters.py) runs both updaters too: exact zeros under
SGD, Nesterov with weight decay and AdamW, the target sparsity after every step, no
recompilation, and vmap over stacked candidates and lax.scan equal to a Python loop.
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from conftest import make_tiny_config
from sms_jax import checkpoints, data, experiment, sparsity
from sms_jax.phases import gradual
from sms_jax.phases.runner import PlanContext
from sms_jax.sparsity import dpf
from sms_jax.strategies import sms_dpf
from sms_jax.training import retrain, schedules

LR, MOMENTUM, WD = 0.1, 0.9, 0.01


def _problem(seed=0):
  """A linear least-squares problem: inputs [16, 6], targets [16, 4], params W [6, 4], b."""
  rng = np.random.default_rng(seed)
  x = rng.normal(size=(16, 6))
  y = x @ rng.normal(size=(6, 4)) * 2 + rng.normal(size=4)
  params = {"layer": {"kernel": 0.3 * rng.normal(size=(6, 4)), "bias": np.zeros(4)}}
  return x, y, params


def _grads(x, y, w, b):
  """NumPy gradients of mean((x @ w + b - y) ** 2) at (w, b)."""
  residual = 2 * (x @ w + b - y) / y.size
  return x.T @ residual, residual.sum(0)


def _jax_run(tx, params, x, y, steps):
  """Params and optimizer state after each of `steps` training steps (on the masked params)."""
  loss = lambda p: jnp.mean((x @ p["layer"]["kernel"] + p["layer"]["bias"] - y) ** 2)

  @jax.jit
  def step(params, opt_state):
    updates, opt_state = tx.update(jax.grad(loss)(params), opt_state, params)
    return optax.apply_updates(params, updates), opt_state

  opt_state, out = tx.init(params), []
  for _ in range(steps):
    params, opt_state = step(params, opt_state)
    out.append((params, opt_state))
  return out


def _top(scores, scope, k, margin=0.0):
  """NumPy: the k largest |scores| within `scope`, ties to the lower index (flat order);
  checks that the k-th and the next differ by more than `margin`."""
  flat = np.where(scope.ravel(), np.abs(scores.ravel()), -1.0)
  order = np.argsort(-flat, kind="stable")
  assert flat[order[k - 1]] - flat[order[k]] >= margin
  keep = np.zeros(flat.size, bool)
  keep[order[:k]] = True
  return keep.reshape(scores.shape)


def test_dpf_matches_numpy_dense_updates_mask_recomputation_and_revival():
  x, y, start = _problem()
  scope = np.ones((6, 4), bool)
  scope[[0, 2, 3, 5], [1, 0, 3, 2]] = False  # A sparse start: these never come in.
  start["layer"]["kernel"] = np.where(scope, start["layer"]["kernel"], 0.0)
  schedule = sparsity.CubicSchedule(2, 14, 3, 4 / 24, 0.75)
  masks = {"layer": {"kernel": jnp.asarray(scope), "bias": None}}
  updater = dpf.DPF.create(schedule, masks, "global")
  tx = updater.wrap(optax.chain(optax.add_decayed_weights(WD), optax.sgd(LR, MOMENTUM)), masks)
  f32 = lambda t: jax.tree.map(lambda a: jnp.asarray(a, jnp.float32), t)
  run = _jax_run(tx, f32(start), jnp.asarray(x, jnp.float32), jnp.asarray(y, jnp.float32), 16)

  w, b, mask = start["layer"]["kernel"], start["layer"]["bias"], scope.copy()
  vw, vb, revived = np.zeros_like(w), np.zeros_like(b), 0
  for t, (params, opt_state) in enumerate(run, start=1):
    gw, gb = _grads(x, y, np.where(mask, w, 0.0), b)  # At the masked weights.
    vw, vb = gw + WD * w + MOMENTUM * vw, gb + WD * b + MOMENTUM * vb  # Decay on dense w.
    w, b = np.where(scope, w - LR * vw, 0.0), b - LR * vb
    if t in (5, 8, 11, 14):
      s = 0.75 + (4 / 24 - 0.75) * (1 - (t - 2) / 12) ** 3
      new = _top(w, scope, round((1 - s) * 24), margin=1e-4)  # float32 ranks them alike.
      revived += int(np.sum(new & ~mask))
      mask = new
    held = np.asarray(sparsity.masks_of(opt_state)["layer"]["kernel"])
    np.testing.assert_array_equal(held, mask, err_msg=f"masks after step {t}")
    dense = dpf.dense_of(opt_state)["layer"]["kernel"]
    np.testing.assert_allclose(dense, w, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(params["layer"]["bias"], b, rtol=1e-5, atol=1e-6)
    # The params are the masked dense weights, bit for bit; nothing outside the scope.
    np.testing.assert_array_equal(params["layer"]["kernel"], jnp.where(held, dense, 0.0))
    assert not np.any(np.asarray(dense)[~scope])
  assert int(held.sum()) == 6  # round(0.25 * 24): the final sparsity exactly.
  assert revived > 0  # The feedback brought pruned weights back.


def test_fixed_feedback_trains_the_pruned_weights_from_the_given_dense_ones():
  x, y, dense_start = _problem(1)
  mask = np.random.default_rng(2).random((6, 4)) < 0.5
  masks = {"layer": {"kernel": jnp.asarray(mask), "bias": None}}
  f32 = lambda t: jax.tree.map(lambda a: jnp.asarray(a, jnp.float32), t)
  tx = dpf.FixedFeedback(dense=f32(dense_start)).wrap(optax.sgd(LR, MOMENTUM), masks)
  start = sparsity.apply_masks(f32(dense_start), masks)
  run = _jax_run(tx, start, jnp.asarray(x, jnp.float32), jnp.asarray(y, jnp.float32), 4)
  w, b = dense_start["layer"]["kernel"], dense_start["layer"]["bias"]
  vw, vb = np.zeros_like(w), np.zeros_like(b)
  for params, opt_state in run:
    gw, gb = _grads(x, y, np.where(mask, w, 0.0), b)
    vw, vb = gw + MOMENTUM * vw, gb + MOMENTUM * vb
    w, b = w - LR * vw, b - LR * vb
    np.testing.assert_allclose(dpf.dense_of(opt_state)["layer"]["kernel"], w, rtol=1e-5,
                               atol=1e-6)
    np.testing.assert_array_equal(params["layer"]["kernel"],
                                  jnp.where(mask, dpf.dense_of(opt_state)["layer"]["kernel"], 0))
    np.testing.assert_array_equal(sparsity.masks_of(opt_state)["layer"]["kernel"], mask)
  assert not np.allclose(w[~mask], dense_start["layer"]["kernel"][~mask])  # They learnt.


def test_soup_dense_is_the_soup_inside_and_the_ingredients_mean_outside():
  rng = np.random.default_rng(3)
  stacked = {"k": rng.normal(size=(3, 5, 4)).astype(np.float32),
             "b": rng.normal(size=(3, 4)).astype(np.float32)}
  masks, scope = {"k": rng.random((5, 4)) < 0.4, "b": None}, {"k": rng.random((5, 4)) < 0.8,
                                                                "b": None}
  masks["k"] &= scope["k"]
  soup = {"k": np.where(masks["k"], rng.normal(size=(5, 4)), 0).astype(np.float32),
          "b": rng.normal(size=4).astype(np.float32)}
  got = sms_dpf.soup_dense(stacked, soup, masks, scope, [0, 2])
  mean = (stacked["k"][0] + stacked["k"][2]) / 2
  np.testing.assert_array_equal(np.asarray(got["k"])[masks["k"]], soup["k"][masks["k"]])
  outside = scope["k"] & ~masks["k"]
  np.testing.assert_allclose(np.asarray(got["k"])[outside], mean[outside], rtol=1e-6)
  assert not np.any(np.asarray(got["k"])[~scope["k"]])
  np.testing.assert_array_equal(got["b"], soup["b"])


def _config(strategy):
  """512 MNIST-1D examples, 4 epochs; the schedule to 90% between epochs 1 and 3; 2 phases
  (at epochs 2 and 3) of 2 candidates."""
  config = make_tiny_config()
  config.strategy, config.train.epochs = strategy, 4
  config.prune.goal_sparsity, config.prune.n_phases = 0.9, 2
  config.gradual.start_epoch, config.gradual.end_epoch, config.gradual.update_every = 1, 3, 3
  config.soup.m, config.soup.vary = 2, "seed,weight_decay"
  config.parallel.candidate_execution = "vmap"
  config.ood.severity = 0
  if strategy == "sms_dpf":  # A learning rate that stays up: pruned weights come back.
    config.train.schedule, config.train.learning_rate = "constant", 0.1
  return config


def test_gmp_mx_plans_stretch_the_phases_and_the_learning_rate():
  config = _config("gmp_mx")
  context = PlanContext(steps_per_epoch=8, max_lr=0.1, start_sparsity=0.0)
  sms = gradual.plans(config, context, m=2)
  mx = gradual.plans(config, context, m=1, length_factor=2)
  assert [p.target_sparsity for p in mx] == [p.target_sparsity for p in sms]
  assert [p.retrain_epochs for p in mx] == [2, 2] and [p.retrain_epochs for p in sms] == [1, 1]
  assert [p.first_epoch for p in mx] == [2, 4] and [p.first_step for p in mx] == [16, 32]
  pre = retrain.pretrain_schedule(config.train, 8)
  stretched = gradual.stretch_schedule(pre, 16, 2)
  fn = schedules.make_schedule(config.train, 8)
  for step in (0, 10, 16, 23, 30, 47):  # Unchanged up to step 16, half as fast after.
    want = fn(step if step <= 16 else 16 + (step - 16) / 2)
    assert float(stretched.fn(step)) == pytest.approx(float(want), rel=1e-6)
  assert stretched.steps == 16 + 2 * (32 - 16)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
  """Results and workdirs of dpf, gmp_mx and sms_dpf on the tiny config."""
  out = {}
  for name in ("dpf", "gmp_mx", "sms_dpf"):
    workdir = tmp_path_factory.mktemp(name)
    out[name] = experiment.run(_config(name), str(workdir)), workdir
  return out


def _exact(sparsity_value, total):
  return abs(sparsity_value - (1 - round(0.1 * total) / total)) < 1e-12


def test_dpf_gmp_mx_and_sms_dpf_end_at_exactly_the_goal_sparsity(runs):
  for name, (results, _) in runs.items():
    layers = results["layers"] if "layers" in results else results["phases"][-1]["layers"]
    total = sum(layer["size"] for layer in layers)
    assert _exact(results["final"]["sparsity"], total), name
    assert results["final"]["test_accuracy"] > 0.15, name
  results = runs["dpf"][0]
  assert results["updater"]["name"] == "dpf"
  assert results["history"][-1]["sparsity"] == results["final"]["sparsity"]
  # gmp_mx: one model, each phase twice as long, the learning rate going on stretched.
  config, (results, _) = _config("gmp_mx"), runs["gmp_mx"]
  steps = data.load(config.dataset).steps_per_epoch(config.train.batch_size)
  lr = schedules.make_schedule(config.train, steps)
  for phase, start in zip(results["phases"], (2, 3)):
    assert "model" in phase and len(phase["history"]) == 2
    # The last step of its first epoch: that of half an epoch after the update, unstretched.
    assert phase["history"][0]["learning_rate"] == pytest.approx(
        [float(lr(start * steps + (steps - 1) / 2))], rel=1e-5)


def test_sms_dpf_phases_start_from_the_soup_of_dense_weights(runs):
  results, workdir = runs["sms_dpf"]
  phases = [checkpoints.read_verified(str(workdir / "checkpoints" / "phases"), k)[1]
            for k in (1, 2)]
  dense = [checkpoints.read_verified(str(workdir / "checkpoints" / "dpf_dense"), k)[1]
           for k in (1, 2)]
  for phase, handed_on, record in zip(phases, dense, results["phases"]):
    assert abs(record["sparsity"] - record["target_sparsity"]) < 1e-3
    for p, d, m in zip(*(jax.tree.leaves(t, is_leaf=lambda x: x is None)
                         for t in (phase["params"], handed_on, phase["masks"]))):
      if m is not None:  # The soup inside the masks; learnt pruned weights outside.
        np.testing.assert_array_equal(p, np.where(m, d, 0))
        assert np.any(d[~m] != 0)
  # Phase 2's masks: the largest dense weights phase 1 handed on, pruned ones competing.
  masks = [m for m in jax.tree.leaves(phases[1]["masks"]) if m is not None]
  scores = [np.abs(d) for d, m in zip(jax.tree.leaves(dense[0]),
                                      jax.tree.leaves(phases[0]["masks"],
                                                      is_leaf=lambda x: x is None))
            if m is not None]
  total = sum(s.size for s in scores)
  keep = _top(np.concatenate([s.ravel() for s in scores]), np.ones(total, bool),
              round((1 - results["phases"][1]["target_sparsity"]) * total))
  np.testing.assert_array_equal(np.concatenate([m.ravel() for m in masks]), keep)
  before = np.concatenate([m.ravel() for m in jax.tree.leaves(phases[0]["masks"])])
  assert results["phases"][1]["revived"] == int(np.sum(keep & ~before)) > 0
  assert results["phases"][0]["revived"] == 0  # From the dense model.
