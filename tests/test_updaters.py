"""The shared suite every registered sparsity updater passes, and each updater's own rules.

Every entry of `sparsity.registry.UPDATERS` is built from a small config and trained with
dense random gradients (pruned entries included) under SGD, Nesterov SGD with weight decay
and AdamW: weights outside the masks stay exactly 0, the sparsity is the updater's target
at every step, a mask change compiles nothing new, and the wrapped optimizer gives the same
results under vmap over stacked candidates and inside lax.scan as in a Python loop.
"""

import dataclasses
import functools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from configs import default
from sms_jax import sparsity
from sms_jax.sparsity import gmp, registry
from sms_jax.training import optimizers

STEPS_PER_EPOCH, EPOCHS = 4, 5  # 20 steps.
_is_none = lambda x: x is None


def _params(seed: int):
  """Two conv kernels, a dense kernel and biases."""
  rng = np.random.default_rng(seed)
  shapes = {"conv0": {"kernel": (3, 3, 2, 4), "bias": (4,)}, "conv1": {"kernel": (3, 4, 6)},
            "dense": {"kernel": (30, 5), "bias": (5,)}}
  return jax.tree.map(lambda s: jnp.asarray(rng.normal(size=s), jnp.float32), shapes,
                      is_leaf=lambda x: isinstance(x, tuple))


def _start_masks(params, seed=9, density=0.5):
  """A random start mask keeping about `density` of every kernel."""
  rng = np.random.default_rng(seed)
  return jax.tree.map(lambda m: None if m is None else jnp.asarray(rng.random(m.shape) < density),
                      sparsity.create_masks(params), is_leaf=_is_none)


def _config(optimizer="sgd", nesterov=False, weight_decay=0.0):
  config = default.get_config()
  config.train.epochs, config.train.optimizer = EPOCHS, optimizer
  config.train.nesterov, config.train.weight_decay = nesterov, weight_decay
  config.prune.goal_sparsity = 0.85
  config.gradual.start_epoch, config.gradual.end_epoch, config.gradual.update_every = 1, 4, 3
  config.regrow.update_every = config.rigl.update_every = 3
  return config


OPTIMIZER_SETTINGS = {"sgd": dict(), "nesterov_wd": dict(nesterov=True, weight_decay=1e-2),
                      "adamw": dict(optimizer="adamw", weight_decay=1e-2)}


def _setup(name, optimizer="sgd", seed=0):
  config = _config(**OPTIMIZER_SETTINGS[optimizer])
  params = _params(seed)
  masks = _start_masks(params)
  params = sparsity.apply_masks(params, masks)
  updater = registry.build(name, config, STEPS_PER_EPOCH, masks)
  inner = optimizers.make_optimizer(config.train, lambda count: 0.05)
  return updater, updater.wrap(inner, masks), params, masks


def _step_fn(tx):
  def step(params, opt_state, key):
    grads = jax.tree.map(lambda p: jax.random.normal(key, p.shape), params)  # Dense.
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state
  return step


def _alive(masks):
  return [int(np.sum(m)) for m in jax.tree.leaves(masks)]


@pytest.mark.parametrize("optimizer", sorted(OPTIMIZER_SETTINGS))
@pytest.mark.parametrize("name", sorted(registry.UPDATERS))
def test_weights_outside_the_masks_stay_exactly_zero(name, optimizer):
  updater, tx, params, masks = _setup(name, optimizer)
  step, opt_state = jax.jit(_step_fn(tx)), tx.init(params)
  changed = 0
  for t in range(STEPS_PER_EPOCH * EPOCHS):
    before = sparsity.masks_of(opt_state)
    params, opt_state = step(params, opt_state, jax.random.key(t))
    held = sparsity.masks_of(opt_state)
    assert sparsity.zero_outside(params, held)
    if not sparsity.masks_equal(before, held):
      changed += 1
      assert bool(updater.is_update_step(t + 1)), f"the masks changed after step {t + 1}"
  assert changed > 0 or not updater.changes_masks  # The suite saw the masks change.


@pytest.mark.parametrize("name", sorted(registry.UPDATERS))
def test_sparsity_is_the_target_after_every_step(name):
  updater, tx, params, masks = _setup(name)
  step, opt_state = jax.jit(_step_fn(tx)), tx.init(params)
  start, sizes = sparsity.sparsity(masks), sparsity.layer_alive(masks)[1]
  for t in range(1, STEPS_PER_EPOCH * EPOCHS + 1):
    params, opt_state = step(params, opt_state, jax.random.key(t))
    held = sparsity.masks_of(opt_state)
    # Rounding to whole weights: at most half a weight per layer.
    assert abs(sparsity.sparsity(held) - updater.target_sparsity(t, start)) <= \
        0.5 * len(sizes) / sum(sizes)


@pytest.mark.parametrize("name", sorted(registry.UPDATERS))
def test_a_mask_change_compiles_nothing(name):
  _, tx, params, _ = _setup(name)
  chex.clear_trace_counter()  # The parametrised runs share the counter of `step`'s code.

  @jax.jit
  @chex.assert_max_traces(n=1)
  def step(params, opt_state, key):
    return _step_fn(tx)(params, opt_state, key)

  opt_state = tx.init(params)
  for t in range(STEPS_PER_EPOCH * EPOCHS):
    params, opt_state = step(params, opt_state, jax.random.key(t))
  assert step._cache_size() == 1  # pylint: disable=protected-access


@pytest.mark.parametrize("name", sorted(registry.UPDATERS))
def test_vmap_over_candidates_and_scan_equal_a_python_loop(name):
  _, tx, _, _ = _setup(name)
  step, num_steps = _step_fn(tx), STEPS_PER_EPOCH * EPOCHS
  starts = [sparsity.apply_masks(_params(seed), _setup(name)[3]) for seed in (1, 2, 3)]
  keys = jax.random.split(jax.random.key(0), num_steps)

  def run_loop(params):
    opt_state, jitted = tx.init(params), jax.jit(step)
    for key in keys:
      params, opt_state = jitted(params, opt_state, key)
    return params, opt_state

  def run_scan(params):
    return jax.lax.scan(lambda carry, key: (step(*carry, key), None),
                        (params, tx.init(params)), keys)[0]

  looped = [run_loop(p) for p in starts]
  stacked = jax.tree.map(lambda *xs: jnp.stack(xs), *starts)
  vmapped = jax.jit(jax.vmap(run_scan))(stacked)
  for k, expected in enumerate(looped):
    got = jax.tree.map(lambda x, k=k: x[k], vmapped)
    chex.assert_trees_all_close(got[0], expected[0], rtol=1e-5, atol=1e-6)
    assert sparsity.masks_equal(sparsity.masks_of(got[1]), sparsity.masks_of(expected[1]))


def test_fixed_masks_need_no_parameters_and_replace_masks_resets_momentum():
  params = _params(3)
  masks = sparsity.create_masks(params)
  tx = sparsity.FixedMasks().wrap(optax.sgd(0.1, momentum=0.9), masks)
  opt_state = tx.init(params)
  _, opt_state = tx.update(_params(4), opt_state)  # No params needed.
  new_masks = sparsity.prune(params, masks, 0.6)
  pruned = sparsity.replace_masks(tx, opt_state, new_masks)
  trace = optax.tree_utils.tree_get(pruned, "trace")
  kernel, mask = np.asarray(trace["dense"]["kernel"]), np.asarray(new_masks["dense"]["kernel"])
  assert np.all(kernel[~mask] == 0) and np.all(kernel[mask] != 0)
  chex.assert_trees_all_equal(trace["dense"]["bias"],
                              optax.tree_utils.tree_get(opt_state, "trace")["dense"]["bias"])
  assert sparsity.masks_equal(sparsity.masks_of(pruned), new_masks)


def test_a_changing_updater_needs_the_parameters():
  _, tx, params, _ = _setup("gmp")
  with pytest.raises(ValueError, match="the gmp updater needs the parameters"):
    tx.update(params, tx.init(params))


@pytest.mark.parametrize("selector", ["global", "uniform"])
def test_gmp_keeps_the_largest_alive_weights_with_exact_counts(selector):
  params = _params(0)
  masks = sparsity.create_masks(params)
  schedule = sparsity.CubicSchedule(3, 15, 4, 0.0, 0.9)  # Updates after steps 7, 11, 15.
  tx = gmp.GradualMagnitude.create(schedule, masks, selector).wrap(
      optax.chain(optax.add_decayed_weights(1e-2), optax.sgd(0.05, momentum=0.9)), masks)
  step, opt_state = jax.jit(_step_fn(tx)), tx.init(params)
  sizes, previous = sparsity.layer_alive(masks)[1], masks
  for t in range(1, 21):
    before = params
    params, opt_state = step(params, opt_state, jax.random.key(t))
    held = sparsity.masks_of(opt_state)
    done = [s for s in schedule.update_steps() if s <= t]
    target = schedule.sparsity(done[-1]) if done else 0.0
    if selector == "global":
      assert sum(_alive(held)) == round((1 - target) * sum(sizes))
    else:
      assert _alive(held) == [round(n * (1 - target)) for n in sizes]
    for now, then in zip(jax.tree.leaves(held), jax.tree.leaves(previous)):
      assert not (np.asarray(now) & ~np.asarray(then)).any()  # Nothing revived.
    if t in schedule.update_steps():  # Kept: the largest magnitudes before the step.
      values = [np.abs(np.asarray(b)).ravel() for b in jax.tree.leaves(before)
                if b.ndim >= 2]
      kept = [np.asarray(h).ravel() for h in jax.tree.leaves(held)]
      if selector == "global":
        values, kept = [np.concatenate(values)], [np.concatenate(kept)]
      for v, keep in zip(values, kept):
        assert v[keep].min() > v[~keep].max()
    previous = held


def test_gmp_from_a_sparse_mask_keeps_each_layers_fraction_and_only_removes():
  params = _params(1)
  masks = _start_masks(params, seed=5)
  params = sparsity.apply_masks(params, masks)
  schedule = sparsity.CubicSchedule(0, 6, 2, sparsity.sparsity(masks), 0.9)
  tx = gmp.GradualMagnitude.create(schedule, masks, "uniform").wrap(optax.sgd(0.05), masks)
  step, opt_state = jax.jit(_step_fn(tx)), tx.init(params)
  for t in range(8):
    params, opt_state = step(params, opt_state, jax.random.key(t))
  ratio = 0.1 / (1 - sparsity.sparsity(masks))
  for first, last in zip(jax.tree.leaves(masks), jax.tree.leaves(sparsity.masks_of(opt_state))):
    assert not (np.asarray(last) & ~np.asarray(first)).any()
    assert int(np.sum(last)) == round(int(np.sum(first)) * ratio)


def test_cubic_schedule_values():
  schedule = sparsity.CubicSchedule(start_step=10, end_step=50, update_every=10,
                                    initial_sparsity=0.0, final_sparsity=0.8)
  np.testing.assert_array_equal(schedule.update_steps(), [20, 30, 40, 50])
  # s_f * (1 - (1 - t / T) ** 3) with t = step - 10, T = 40.
  expected = {0: 0.0, 10: 0.0, 20: 0.8 * (1 - 0.75 ** 3), 30: 0.7, 40: 0.8 * (1 - 0.25 ** 3),
              50: 0.8, 70: 0.8}
  for step, value in expected.items():
    assert schedule.sparsity(step) == pytest.approx(value, abs=1e-12)
  from_sparse = dataclasses.replace(schedule, initial_sparsity=0.5)
  assert from_sparse.sparsity(10) == pytest.approx(0.5)
  assert from_sparse.sparsity(30) == pytest.approx(0.8 - 0.3 * 0.5 ** 3)
  # The end is always an update, also off the grid or beyond one interval.
  np.testing.assert_array_equal(dataclasses.replace(schedule, end_step=45).update_steps(),
                                [20, 30, 40, 45])
  np.testing.assert_array_equal(dataclasses.replace(schedule, update_every=100).update_steps(),
                                [50])
  in_epochs = sparsity.cubic_schedule(start_epoch=2, end_epoch=5, steps_per_epoch=7,
                                      update_every=3, initial_sparsity=0.1, final_sparsity=0.9)
  assert (in_epochs.start_step, in_epochs.end_step) == (14, 35)


def test_set_drops_the_smallest_and_regrows_elsewhere_at_zero():
  params = _params(2)
  masks = _start_masks(params, seed=3)
  params = sparsity.apply_masks(params, masks)
  updater = sparsity.SET(update_every=2, end_step=100, drop_fraction=0.3, seed=4)
  tx = updater.wrap(optax.sgd(0.05, momentum=0.9), masks)
  step, opt_state = jax.jit(_step_fn(tx)), tx.init(params)
  params, opt_state = step(params, opt_state, jax.random.key(0))  # Step 1: no update.
  before, old = params, sparsity.masks_of(opt_state)
  params, opt_state = step(params, opt_state, jax.random.key(1))  # Step 2: drop and regrow.
  new = sparsity.masks_of(opt_state)
  momentum = optax.tree_utils.tree_get(opt_state, "trace")
  for path in (("conv0", "kernel"), ("conv1", "kernel"), ("dense", "kernel")):
    get = lambda tree, path=path: np.asarray(functools.reduce(lambda t, k: t[k], path, tree))
    o, n, w, mom = get(old), get(new), get(before), get(momentum)
    dropped, grown, kept = o & ~n, n & ~o, o & n
    assert dropped.sum() == grown.sum() == round(0.3 * o.sum())  # Same count per layer.
    assert np.abs(w[dropped]).max() <= np.abs(w[kept]).min()  # The smallest went.
    assert (get(params)[grown] == 0).all() and (mom[grown] == 0).all()  # Grown at 0.
    assert (get(params)[dropped] == 0).all()
  params, opt_state = step(params, opt_state, jax.random.key(2))
  grown = jax.tree.map(lambda n, o: n & ~o, new, old)
  kernels = [p for p, g in zip(jax.tree.leaves(params), jax.tree.leaves(
      grown, is_leaf=_is_none)) if g is not None]
  assert all((np.asarray(p)[np.asarray(g)] != 0).any()  # Grown weights train from then on.
             for p, g in zip(kernels, jax.tree.leaves(grown)))


def test_set_cosine_decay_and_end():
  updater = sparsity.SET(update_every=10, end_step=100, drop_fraction=0.4, decay="cosine")
  assert float(updater.fraction(0)) == pytest.approx(0.4)
  assert float(updater.fraction(50)) == pytest.approx(0.2)
  assert [bool(updater.is_update_step(t)) for t in (10, 15, 90, 100, 110)] == [
      True, False, True, False, False]
