"""The epoch engine: one step, stacked candidates equal separate runs in every execution,
scan equals dispatched steps, the dropout key, and the execution choice."""

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import default
from sms_jax import models, sparsity
from sms_jax.data import Dataset, Split
from sms_jax.training import engine, retrain, state as state_lib


def _dataset(n=192, seed=0):
  rng = np.random.default_rng(seed)
  split = lambda n: Split(rng.normal(size=(n, 40, 1)).astype(np.float32),
                          rng.integers(0, 10, n).astype(np.int32))
  return Dataset("synthetic", split(n), split(64), split(64), 10, "none")


HPARAMS = [dict(weight_decay=1e-3, peak=0.05, epochs=2, seed=0),
           dict(weight_decay=1e-2, peak=0.1, epochs=1, seed=1),
           dict(weight_decay=0.0, peak=0.02, epochs=2, seed=2)]


def _setup():
  model = models.create_model("cnn1d", 10)
  params = model.init(jax.random.key(0), jnp.zeros((1, 40, 1)))
  masks = sparsity.prune(params["params"], sparsity.create_masks(params["params"]), 0.5)
  pruned = sparsity.apply_masks(params["params"], masks)
  train = default.get_config().train
  pretrain = retrain.pretrain_schedule(train, 3)
  txs = [sparsity.FixedMasks().wrap(retrain.retrain_optimizer(
      train, "llr", pretrain, peak_learning_rate=h["peak"], total_steps=3 * h["epochs"],
      weight_decay=h["weight_decay"]), masks) for h in HPARAMS]
  states = [state_lib.TrainState(jnp.zeros((), jnp.int32), pruned, params["batch_stats"],
                                 tx.init(pruned)) for tx in txs]
  keys = jnp.stack([jax.random.fold_in(jax.random.key(5), h["seed"]) for h in HPARAMS])
  return model, _dataset(), masks, txs, states, keys


def _separate_runs(model, dataset, txs, states, keys):
  out = []
  for tx, state, key, h in zip(txs, states, keys, HPARAMS):
    state = jax.tree.map(jnp.copy, state)  # Steps donate their input; the states share arrays.
    run = engine.EpochRunner(state, dataset, model=model, tx=tx, batch_size=64,
                             epoch_loop="steps")
    for epoch in range(h["epochs"]):
      state, _ = run(state, jax.random.fold_in(key, epoch))
    out.append(state)
  return out


def _stacked_runs(model, dataset, txs, states, keys, execution, epoch_loop="steps"):
  stacked = engine.stack(states)
  chex.assert_tree_shape_prefix(stacked.params, (3,))
  run = engine.EpochRunner(stacked, dataset, model=model, tx=txs[0], batch_size=64,
                           epoch_loop=epoch_loop, execution=execution)
  for epoch in range(2):
    active = jnp.asarray([epoch < h["epochs"] for h in HPARAMS])
    stacked, step_metrics = run(stacked, jax.vmap(jax.random.fold_in, (0, None))(keys, epoch),
                                active)
    chex.assert_shape(step_metrics["loss"], (3, 3))  # [steps, m]
  return stacked


@pytest.mark.parametrize("execution", ["vmap", "map", "loop"])
def test_stacked_candidates_equal_separate_runs(execution):
  """Each candidate trains with its own weight decay, peak, budget and data order, and
  stops after its own number of epochs."""
  model, dataset, masks, txs, states, keys = _setup()
  expected = _separate_runs(model, dataset, txs, states, keys)
  stacked = _stacked_runs(model, dataset, txs, states, keys, execution)
  for got, want in zip(engine.unstack(stacked), expected):
    chex.assert_trees_all_close(got.params, want.params, rtol=2e-5, atol=2e-6)
    chex.assert_trees_all_close(got.batch_stats, want.batch_stats, rtol=2e-5, atol=2e-6)
    assert int(got.step) == int(want.step)
  for got in engine.unstack(stacked):  # Every candidate kept the mask.
    chex.assert_trees_all_equal(sparsity.apply_masks(got.params, masks), got.params)
  # The candidates differ: a stacking that mixed them up would make some equal.
  firsts = [np.asarray(jax.tree.leaves(s.params)[0]) for s in engine.unstack(stacked)]
  assert not np.allclose(firsts[0], firsts[1]) and not np.allclose(firsts[1], firsts[2])


def test_scan_epochs_equal_dispatched_steps():
  model, dataset, _, txs, states, keys = _setup()
  scanned = _stacked_runs(model, dataset, txs, states, keys, "vmap", epoch_loop="scan")
  stepped = _stacked_runs(model, dataset, txs, states, keys, "vmap", epoch_loop="steps")
  chex.assert_trees_all_close(scanned.params, stepped.params, rtol=2e-5, atol=2e-6)
  single = [engine.EpochRunner(states[0], dataset, model=model, tx=txs[0], batch_size=64,
                               epoch_loop=loop)(jax.tree.map(jnp.copy, states[0]), keys[0])
            for loop in ("scan", "steps")]
  chex.assert_trees_all_close(*single, rtol=2e-5, atol=2e-6)
  chex.assert_shape(single[0][1]["loss"], (3,))


class _DropoutNet(nn.Module):
  @nn.compact
  def __call__(self, x, train: bool):
    x = nn.Dense(16)(x.reshape(x.shape[0], -1))
    return nn.Dense(10)(nn.Dropout(0.5, deterministic=not train)(x))


def test_train_step_key_drives_dropout():
  model, x = _DropoutNet(), jnp.ones((8, 40, 1))
  y = jnp.zeros((8,), jnp.int32)
  import optax  # pylint: disable=g-import-not-at-top
  state = state_lib.create_train_state(model, optax.sgd(0.1), jax.random.key(0), (40, 1))
  step = jax.jit(lambda s, k: engine.train_step(s, x, y, k, model=model, tx=optax.sgd(0.1)))
  a, b, c = (step(state, jax.random.key(k))[1]["loss"] for k in (1, 1, 2))
  assert float(a) == float(b) != float(c)


def test_epoch_plans_are_functions_of_the_key():
  plans = [engine.epoch_plan(jax.random.key(k), 100, 16) for k in (0, 0, 1)]
  chex.assert_shape(plans[0].batches, (6, 16))
  chex.assert_trees_all_equal(plans[0].batches, plans[1].batches)
  assert not np.array_equal(plans[0].batches, plans[2].batches)
  assert len(set(np.asarray(plans[0].batches).ravel())) == 96  # No example twice.


def test_unknown_execution_and_epoch_loop_are_rejected():
  with pytest.raises(ValueError, match="unknown candidate execution 'pmap'; allowed: auto"):
    engine.resolve_execution("pmap")
  with pytest.raises(ValueError, match="unknown epoch loop 'while'; allowed: auto"):
    engine.resolve_epoch_loop("while")


def test_auto_execution_measures_on_accelerators_only(monkeypatch):
  """'auto' is 'loop' on CPU without measuring; on an accelerator it takes whichever of
  vmap and loop `measure_execution` times faster."""
  model, dataset, _, txs, states, _ = _setup()
  stacked = engine.stack(states)
  kwargs = dict(mesh=None, batch_size=64, log=lambda _: None, model=model, tx=txs[0])
  times = engine.measure_execution(stacked, jnp.asarray(dataset.train.x[:64]),
                                   jnp.asarray(dataset.train.y[:64]), repeats=1,
                                   model=model, tx=txs[0])
  assert set(times) == {"vmap", "loop"} and min(times.values()) > 0
  assert engine.choose_execution("auto", stacked, dataset, **kwargs) == "loop"  # CPU
  assert engine.choose_execution("map", stacked, dataset, **kwargs) == "map"
  monkeypatch.setattr(engine.jax, "default_backend", lambda: "gpu")
  for measured, expected in (({"vmap": 1.0, "loop": 2.0}, "vmap"),
                             ({"vmap": 2.0, "loop": 1.0}, "loop")):
    monkeypatch.setattr(engine, "measure_execution", lambda *a, t=measured, **k: t)
    assert engine.choose_execution("auto", stacked, dataset, **kwargs) == expected
