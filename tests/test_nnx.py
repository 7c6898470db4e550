"""The library on a Flax NNX model: masks, pruning, the masking transform, soups, BatchNorm."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from sms_jax import soups, sparsity


class _Net(nnx.Module):
  """Conv -> BatchNorm -> mean over space -> Linear."""

  def __init__(self, rngs: nnx.Rngs):
    self.conv = nnx.Conv(2, 4, (3, 3), rngs=rngs)
    self.bn = nnx.BatchNorm(4, momentum=0.8, rngs=rngs)
    self.linear = nnx.Linear(4, 3, rngs=rngs)

  def __call__(self, x):
    return self.linear(jnp.mean(self.bn(self.conv(x)), axis=(1, 2)))


def _x(seed: int, n: int = 8) -> jax.Array:
  return jnp.asarray(np.random.default_rng(seed).normal(1.0, 2.0, size=(n, 5, 5, 2)), jnp.float32)


def test_masks_and_global_pruning_of_an_nnx_state_keep_the_largest_kernels():
  model = _Net(nnx.Rngs(0))
  params = nnx.state(model, nnx.Param)
  masks = sparsity.create_masks(params)
  assert sparsity.count_alive(masks) == (2 * 9 * 4 + 4 * 3,) * 2  # The kernels only.
  masks = sparsity.prune(params, masks, 0.5)
  kernels = {"conv": np.asarray(model.conv.kernel[...]),
             "linear": np.asarray(model.linear.kernel[...])}
  magnitudes = np.sort(np.concatenate([np.abs(k).ravel() for k in kernels.values()]))[::-1]
  threshold = magnitudes[magnitudes.size // 2 - 1]  # The smallest kept (no ties: normal draws).
  for name, kernel in kernels.items():
    np.testing.assert_array_equal(np.asarray(masks[name]["kernel"]), np.abs(kernel) >= threshold)
  assert sparsity.sparsity(masks) == 0.5

  nnx.update(model, sparsity.apply_masks(params, masks))
  for name, kernel in kernels.items():
    got, mask = np.asarray(getattr(model, name).kernel[...]), np.abs(kernel) >= threshold
    assert np.all(got[~mask] == 0.0) and np.array_equal(got[mask], kernel[mask])
  np.testing.assert_array_equal(model.bn.scale[...], np.ones(4))  # Not prunable.


def test_prune_refuses_a_tree_without_prunable_leaves():
  params = nnx.state(nnx.BatchNorm(4, rngs=nnx.Rngs(0)), nnx.Param)
  with pytest.raises(ValueError, match="cannot prune: masks have no prunable weights"):
    sparsity.prune(params, sparsity.create_masks(params), 0.5)


def test_soup_of_two_nnx_states_is_the_mean_and_updates_a_model():
  states = [nnx.state(_Net(nnx.Rngs(seed)), nnx.Param) for seed in (1, 2)]
  stacked = soups.stack_candidates(states)
  soup = soups.uniform_soup(stacked)
  want = [(np.asarray(a) + np.asarray(b)) / 2
          for a, b in zip(jax.tree.leaves(states[0]), jax.tree.leaves(states[1]))]
  for got, expected in zip(jax.tree.leaves(soup), want):
    np.testing.assert_allclose(got, expected, rtol=1e-6)
  model = _Net(nnx.Rngs(3))
  nnx.update(model, soup)
  np.testing.assert_allclose(model.linear.kernel[...], soup["linear"]["kernel"][...])
  chex.assert_trees_all_equal(soups.unstack_candidates(stacked), states)


def _train(model, tx, steps: int):
  optimizer = nnx.Optimizer(model, tx, wrt=nnx.Param)

  @nnx.jit
  def step(model, optimizer, x):
    grads = nnx.grad(lambda m: jnp.sum(m(x) ** 2))(model)
    optimizer.update(model, grads)

  for k in range(steps):
    step(model, optimizer, _x(k))
  return optimizer


_UPDATERS = {  # name -> (updater from the start masks, sparsity after 3 steps)
    "fixed": (lambda masks: sparsity.FixedMasks(), 0.5),
    "gmp": (lambda masks: sparsity.GradualMagnitude.create(
        sparsity.CubicSchedule(0, 2, 1, 0.5, 0.75), masks), 0.75),
    "set": (lambda masks: sparsity.SET(update_every=2, end_step=3, drop_fraction=0.3), 0.5),
    "dpf": (lambda masks: sparsity.DPF.create(
        sparsity.CubicSchedule(0, 2, 1, 0.5, 0.75), masks), 0.75),
}


@pytest.mark.parametrize("updater", sorted(_UPDATERS))
def test_a_training_step_with_the_masking_transform_keeps_pruned_weights_zero(updater):
  model = _Net(nnx.Rngs(4))
  params = nnx.state(model, nnx.Param)
  masks = sparsity.prune(params, sparsity.create_masks(params), 0.5)
  nnx.update(model, sparsity.apply_masks(params, masks))
  before = {name: np.asarray(getattr(model, name).kernel[...]) for name in ("conv", "linear")}
  inner = optax.chain(optax.add_decayed_weights(1e-2), optax.sgd(0.1, momentum=0.9))
  make, want_sparsity = _UPDATERS[updater]
  optimizer = _train(model, make(masks).wrap(inner, masks), steps=3)

  held = sparsity.masks_of(optimizer.opt_state)
  assert sparsity.sparsity(held) == want_sparsity
  assert sparsity.zero_outside(nnx.state(model, nnx.Param), held)
  for name, kernel in before.items():  # Pruned weights exactly 0; those alive throughout trained.
    mask, got = np.asarray(held[name]["kernel"][...]), np.asarray(getattr(model, name).kernel[...])
    kept = mask & np.asarray(masks[name]["kernel"][...])
    assert np.all(got[~mask] == 0.0) and np.all(got[kept] != kernel[kept])


@pytest.mark.parametrize("pure_masks", [False, True])
def test_a_functional_step_on_nnx_states_keeps_pruned_weights_zero(pure_masks):
  model = _Net(nnx.Rngs(5))
  model.eval()
  graphdef, params, rest = nnx.split(model, nnx.Param, ...)
  masks = sparsity.prune(params, sparsity.create_masks(params), 0.5)
  params = sparsity.apply_masks(params, masks)
  masks = nnx.to_pure_dict(masks) if pure_masks else masks  # Either form goes with the state.
  gmp = sparsity.GradualMagnitude.create(sparsity.CubicSchedule(0, 1, 1, 0.5, 0.7), masks)
  tx = gmp.wrap(optax.sgd(0.1, momentum=0.9), masks)
  loss = lambda p, r: jnp.sum(nnx.merge(graphdef, p, r)(_x(0)) ** 2)
  grads = jax.jit(jax.grad(loss))(params, rest)
  updates, state = jax.jit(tx.update)(grads, tx.init(params), params)  # Prunes to 0.7.
  assert sparsity.sparsity(state.masks) == pytest.approx(0.7, abs=0.5 / 84)
  assert sparsity.zero_outside(optax.apply_updates(params, updates), state.masks)


def test_recalibration_of_an_nnx_model_averages_the_batch_statistics():
  model = _Net(nnx.Rngs(6))
  batches = [_x(seed) for seed in (10, 11, 12)]
  stats = soups.recalibrate_batch_stats(model, nnx.state(model, nnx.Param),
                                        nnx.state(model, nnx.BatchStat), batches)
  conv = [np.asarray(model.conv(x)).reshape(-1, 4) for x in batches]  # The BatchNorm's input.
  np.testing.assert_allclose(stats["bn"]["mean"][...], np.mean([h.mean(0) for h in conv], 0),
                             rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(stats["bn"]["var"][...], np.mean([h.var(0) for h in conv], 0),
                             rtol=1e-5)
  np.testing.assert_array_equal(model.bn.mean[...], np.zeros(4))  # The model is untouched.


def test_masks_of_a_pure_dict_go_with_the_nnx_state_and_back():
  params = nnx.state(_Net(nnx.Rngs(7)), nnx.Param)
  pure = sparsity.prune(params, sparsity.create_masks(nnx.to_pure_dict(params)), 0.6)
  wrapped = sparsity.masks_like(params, pure)
  assert isinstance(wrapped, nnx.State) and isinstance(wrapped["linear"]["kernel"], nnx.Param)
  chex.assert_trees_all_equal(sparsity.masks_like(nnx.to_pure_dict(params), wrapped), pure)
  chex.assert_trees_all_equal(sparsity.apply_masks(params, pure),
                              sparsity.apply_masks(params, wrapped))
