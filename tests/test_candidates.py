"""Stacked candidates: one state with a candidate axis equals m separate runs."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import default
from sms_jax import models, sparsity
from sms_jax.data import Dataset, Split
from sms_jax.training import candidates, loop, retrain, state as state_lib


def _dataset(n=192, seed=0):
  rng = np.random.default_rng(seed)
  split = lambda n: Split(rng.normal(size=(n, 40, 1)).astype(np.float32),
                          rng.integers(0, 10, n).astype(np.int32))
  return Dataset("synthetic", split(n), split(64), split(64), 10, "none")


HPARAMS = [dict(weight_decay=1e-3, peak=0.05, epochs=2, seed=0),
           dict(weight_decay=1e-2, peak=0.1, epochs=3, seed=1),
           dict(weight_decay=0.0, peak=0.02, epochs=1, seed=2)]


def _setup():
  model = models.create_model("cnn1d", 10)
  dataset = _dataset()
  params = model.init(jax.random.key(0), jnp.zeros((1, 40, 1)))
  masks = sparsity.prune(params["params"], sparsity.create_masks(params["params"]), 0.5)
  pruned = sparsity.apply_masks(params["params"], masks)
  train = default.get_config().train
  pretrain = retrain.pretrain_schedule(train, 3)
  txs = [retrain.retrain_optimizer("llr", pretrain, masks, peak_learning_rate=h["peak"],
                                   total_steps=3 * h["epochs"], weight_decay=h["weight_decay"],
                                   momentum=0.9, nesterov=True) for h in HPARAMS]
  states = [state_lib.TrainState(jnp.zeros((), jnp.int32), pruned, params["batch_stats"],
                                 tx.init(pruned)) for tx in txs]
  keys = jnp.stack([jax.random.fold_in(jax.random.key(5), h["seed"]) for h in HPARAMS])
  return model, dataset, masks, txs, states, keys


def _separate_runs(model, dataset, txs, states, keys):
  out = []
  for tx, state, key, h in zip(txs, states, keys, HPARAMS):
    state = jax.tree.map(jnp.copy, state)  # Steps donate their input; the states share arrays.
    run = loop.in_memory_epochs(state, dataset, key, batch_size=64, epoch_loop="steps",
                                log=lambda _: None, model=model, tx=tx)
    for epoch in range(h["epochs"]):
      state, _ = run(state, epoch)
    out.append(state)
  return out


@pytest.mark.parametrize("execution", ["vmap", "map", "loop"])
def test_stacked_candidates_equal_separate_runs(execution):
  model, dataset, masks, txs, states, keys = _setup()
  expected = _separate_runs(model, dataset, txs, states, keys)
  stacked = candidates.stack(states)
  chex.assert_tree_shape_prefix(stacked.params, (3,))
  run = candidates.candidate_epochs(stacked, dataset, keys, [h["epochs"] for h in HPARAMS],
                                    execution=execution, batch_size=64, epoch_loop="steps",
                                    log=lambda _: None, model=model, tx=txs[0])
  for epoch in range(3):
    stacked, step_metrics = run(stacked, epoch)
    np.testing.assert_array_equal(step_metrics["active"], [epoch < h["epochs"] for h in HPARAMS])
    assert np.isnan(step_metrics["loss"][:, ~step_metrics["active"]]).all() or execution != "loop"
  for got, want in zip(candidates.unstack(stacked), expected):
    chex.assert_trees_all_close(got.params, want.params, rtol=2e-5, atol=2e-6)
    chex.assert_trees_all_close(got.batch_stats, want.batch_stats, rtol=2e-5, atol=2e-6)
    assert int(got.opt_state[2].count) == int(want.opt_state[2].count)
  # Every candidate kept the mask: pruned weights are exactly zero.
  for got in candidates.unstack(stacked):
    chex.assert_trees_all_equal(sparsity.apply_masks(got.params, masks), got.params)


def test_scan_epochs_equal_dispatched_steps_for_candidates():
  model, dataset, _, txs, states, keys = _setup()
  results = []
  for epoch_loop in ("scan", "steps"):
    stacked = candidates.stack(states)
    run = candidates.candidate_epochs(stacked, dataset, keys, [2, 2, 2], execution="vmap",
                                      batch_size=64, epoch_loop=epoch_loop, log=lambda _: None,
                                      model=model, tx=txs[0])
    for epoch in range(2):
      stacked, _ = run(stacked, epoch)
    results.append(stacked.params)
  chex.assert_trees_all_close(*results, rtol=2e-5, atol=2e-6)


def test_unknown_execution_is_rejected():
  with pytest.raises(ValueError, match="unknown candidate execution 'pmap'; allowed: auto"):
    candidates.resolve_execution("pmap")


def test_auto_execution_measures_on_accelerators_only(monkeypatch):
  """'auto' is 'loop' on CPU without measuring; on an accelerator it takes whichever of
  vmap and loop `measure_execution` times faster."""
  model, dataset, _, txs, states, _ = _setup()
  stacked = candidates.stack(states)
  kwargs = dict(batch_size=64, log=lambda _: None, model=model, tx=txs[0])
  times = candidates.measure_execution(stacked, jnp.asarray(dataset.train.x[:64]),
                                       jnp.asarray(dataset.train.y[:64]), repeats=1,
                                       model=model, tx=txs[0])
  assert set(times) == {"vmap", "loop"} and min(times.values()) > 0
  assert candidates.choose_execution("auto", stacked, dataset, **kwargs) == "loop"  # CPU
  assert candidates.choose_execution("map", stacked, dataset, **kwargs) == "map"
  monkeypatch.setattr(candidates.jax, "default_backend", lambda: "gpu")
  for measured, expected in (({"vmap": 1.0, "loop": 2.0}, "vmap"),
                             ({"vmap": 2.0, "loop": 1.0}, "loop")):
    monkeypatch.setattr(candidates, "measure_execution", lambda *a, t=measured, **k: t)
    assert candidates.choose_execution("auto", stacked, dataset, **kwargs) == expected
