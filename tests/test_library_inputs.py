"""Library inputs that used to give silently wrong answers: each is a clear ValueError now.

Pruning with non-finite parameters or without prunable leaves, masks whose tree or shapes do
not match the parameters, soups of candidates with different masks or bad ingredients, greedy
soups with NaN scores, gradual schedules and SET settings out of range, and a start mask whose
achieved sparsity is already above `prune.goal_sparsity`. Also the invariant behind several of
them: pruning and gradual magnitude pruning never re-enable a pruned weight, and SET keeps
every layer's alive count, whatever the (finite or not) inputs.
"""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from sms_jax import config as config_lib, experiment, soups, sparsity
from sms_jax.sparsity import gmp

_is_none = lambda x: x is None


def _params(seed: int = 0):
  """Two kernels and a bias, by hand."""
  rng = np.random.default_rng(seed)
  return {"conv": {"kernel": jnp.asarray(rng.normal(size=(3, 2, 4)), jnp.float32)},
          "dense": {"kernel": jnp.asarray(rng.normal(size=(8, 5)), jnp.float32),
                    "bias": jnp.zeros(5)}}


def _masks(params, density: float = 0.5, seed: int = 1):
  """A random mask keeping about `density` of each kernel."""
  rng = np.random.default_rng(seed)
  return jax.tree.map(lambda m: None if m is None else jnp.asarray(rng.random(m.shape) < density),
                      sparsity.create_masks(params), is_leaf=_is_none)


def _revived(new, old) -> int:
  """Entries alive in `new` but not in `old`."""
  return sum(int(np.sum(np.asarray(n) & ~np.asarray(o)))
             for n, o in zip(jax.tree.leaves(new), jax.tree.leaves(old)))


# Pruning.


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_prune_refuses_non_finite_params_naming_the_leaf(bad):
  params = _params()
  masks = sparsity.create_masks(params)
  params["dense"]["kernel"] = params["dense"]["kernel"].at[:6].set(bad)
  with pytest.raises(ValueError, match="'dense/kernel' has non-finite values"):
    sparsity.prune(params, sparsity.prune(_params(), masks, 0.5), 0.6)


def test_prune_refuses_masks_without_prunable_leaves():
  params = {"bias": jnp.zeros(3)}
  with pytest.raises(ValueError, match="no prunable weights"):
    sparsity.prune(params, sparsity.create_masks(params), 0.5)


@pytest.mark.parametrize("selector", sparsity.SELECTORS)
def test_prune_never_revives_a_weight_even_with_ties_at_zero(selector):
  params = _params()
  params["conv"]["kernel"] = params["conv"]["kernel"].at[1:].set(0.0)  # Many ties at 0.
  masks = _masks(params)
  start = sparsity.sparsity(masks)
  for target in (start, start + 0.05, 0.7, 0.9, 1.0):
    new = sparsity.prune(params, masks, target, selector=selector, key=jax.random.key(0))
    assert _revived(new, masks) == 0, target
    masks = new


@pytest.mark.parametrize("selector", ["global", "uniform"])
def test_many_phases_to_a_tiny_goal_reach_it(selector):
  """100 phases to sparsity 0.001 of 1,000 weights: phase 51 prunes the one weight (rounding
  up), and the later targets, below that by under half a weight, must not be refused."""
  params = {"dense": {"kernel": jax.random.normal(jax.random.key(0), (25, 40))}}
  masks = sparsity.create_masks(params)
  for k in range(1, 101):
    masks = sparsity.prune(params, masks, sparsity.phase_sparsity(0.001, 100, k),
                           selector=selector)
  assert sparsity.count_alive(masks) == (999, 1000)
  with pytest.raises(ValueError, match="target sparsity 0.0001 is not allowed"):
    sparsity.prune(params, masks, 0.0001, selector=selector)


# Gradual magnitude pruning and SET: the masks chosen inside the training step.


@pytest.mark.parametrize("selector", gmp.SELECTORS)
def test_gmp_never_revives_when_the_mask_is_sparser_than_the_schedule(selector):
  params = _params()
  masks = _masks(params, density=0.3)  # Sparsity about 0.7, above every scheduled target.
  schedule = sparsity.CubicSchedule(0, 4, 2, 0.5, 0.6)
  updater = sparsity.GradualMagnitude.create(schedule, masks, selector)
  for step in schedule.update_steps():
    new = updater.new_masks(masks, params, None, jnp.asarray(step, jnp.int32))
    assert _revived(new, masks) == 0, step


def test_set_keeps_every_layers_alive_count_with_nan_params():
  params = _params()
  masks = _masks(params)
  params = jax.tree.map(lambda p: p.at[:2].set(jnp.nan) if p.ndim >= 2 else p, params)
  updater = sparsity.SET(update_every=1, end_step=10, drop_fraction=0.3)
  new = updater.new_masks(masks, params, None, jnp.asarray(1, jnp.int32))
  assert sparsity.layer_alive(new)[0] == sparsity.layer_alive(masks)[0]


# Masks that do not match the parameters.


def _apply(params, masks):
  return sparsity.apply_masks(params, masks)


def _prune(params, masks):
  return sparsity.prune(params, masks, 0.6)


def _layer_stats(params, masks):
  return sparsity.layer_stats(params, masks, ["conv/kernel", "dense/kernel", "dense/bias"])


def _zero_outside(params, masks):
  return sparsity.zero_outside(params, masks)


def _set_update(params, masks):
  return sparsity.SET(update_every=1, end_step=10, drop_fraction=0.3).new_masks(
      masks, params, None, jnp.asarray(1, jnp.int32))


MASK_USERS = [_apply, _prune, _layer_stats, _zero_outside, _set_update]


@pytest.mark.parametrize("use", MASK_USERS)
def test_masks_missing_a_leaf_are_refused_naming_it(use):
  params = _params()
  masks = sparsity.create_masks(params)
  del masks["dense"]["bias"]  # Its other leaves would pair with the wrong parameters.
  with pytest.raises(ValueError, match="masks do not match params: params has leaf 'dense/bias' "
                                       "that masks lacks"):
    use(params, masks)


@pytest.mark.parametrize("use", MASK_USERS)
def test_masks_with_an_extra_leaf_are_refused_naming_it(use):
  params = _params()
  masks = sparsity.create_masks(params)
  masks["embed"] = {"kernel": jnp.ones((2, 2), bool)}
  with pytest.raises(ValueError, match="masks has leaf 'embed/kernel' that params lacks"):
    use(params, masks)


@pytest.mark.parametrize("use", [_apply, _prune, _layer_stats, _set_update])
def test_masks_that_only_broadcast_to_a_kernel_are_refused(use):
  params = _params()
  masks = sparsity.create_masks(params)
  masks["dense"]["kernel"] = jnp.ones((1, 5), bool)
  with pytest.raises(ValueError, match=r"mask 'dense/kernel' has shape \(1, 5\); allowed: the "
                                       r"shape of its parameter, \(8, 5\)"):
    use(params, masks)


def test_the_masking_transform_refuses_masks_that_only_broadcast():
  params = _params()
  masks = sparsity.create_masks(params)
  masks["dense"]["kernel"] = jnp.ones((1, 5), bool)
  tx = sparsity.FixedMasks().wrap(optax.sgd(0.1), masks)
  with pytest.raises(ValueError, match="mask 'dense/kernel' has shape"):
    tx.update(params, tx.init(params), params)


# Soups.


def _stacked(m: int = 3):
  return {"w": jnp.arange(m * 4, dtype=jnp.float32).reshape(m, 4)}


def test_soup_of_candidates_with_different_masks_is_refused():
  masks = {"w": jnp.asarray([[1, 1, 0, 0], [1, 1, 0, 0], [1, 0, 1, 0]], bool)}
  with pytest.raises(ValueError, match="candidates' masks differ: candidate 2 .*'w'.* needs one "
                                       "shared mask"):
    soups.uniform_soup(_stacked(), masks=masks)
  np.testing.assert_allclose(soups.uniform_soup(_stacked(), [0, 1], masks=masks)["w"],
                             [2.0, 3.0, 4.0, 5.0])  # Those two share theirs.


@pytest.mark.parametrize("indices", [[], [3], [-1], [0, 0]])
def test_soup_indices_out_of_range_empty_or_repeated_are_refused(indices):
  with pytest.raises(ValueError, match="soup"):
    soups.uniform_soup(_stacked(), indices)


def test_greedy_soup_refuses_a_nan_validation_score_naming_the_candidate():
  with pytest.raises(ValueError, match="candidate 1 has validation accuracy nan"):
    soups.greedy_soup([0.5, float("nan"), 0.7], lambda idx: 0.6)


def test_greedy_soup_refuses_no_candidates():
  with pytest.raises(ValueError, match="at least one candidate"):
    soups.greedy_soup([], lambda idx: 0.6)


# Gradual schedules and SET settings.


@pytest.mark.parametrize("make, match", [
    (lambda: sparsity.CubicSchedule(10, 5, 1, 0.0, 0.9),
     "end_step = 5 is before its start_step = 10"),
    (lambda: sparsity.CubicSchedule(0, 5, 1, 0.0, 1.0), "final_sparsity = 1.0"),
    (lambda: sparsity.CubicSchedule(0, 5, 1, 0.0, -0.1), "final_sparsity = -0.1"),
    (lambda: sparsity.CubicSchedule(0, 5, 0, 0.0, 0.9), "update_every = 0"),
    (lambda: dataclasses.replace(sparsity.CubicSchedule(0, 5, 1, 0.0, 0.9), update_every=0),
     "update_every = 0"),
    (lambda: sparsity.cubic_schedule(start_epoch=3, end_epoch=2, steps_per_epoch=4,
                                     update_every=1, initial_sparsity=0.0, final_sparsity=0.9),
     "end_step = 8 is before its start_step = 12"),
    (lambda: sparsity.SET(update_every=0, end_step=10, drop_fraction=0.3), "update_every = 0"),
    (lambda: sparsity.SET(update_every=2, end_step=10, drop_fraction=1.5), "drop_fraction = 1.5"),
    (lambda: sparsity.SET(update_every=2, end_step=10, drop_fraction=0.3, decay="linear"),
     "decay = 'linear'"),
])
def test_schedules_out_of_range_are_refused_at_construction(make, match):
  with pytest.raises(ValueError, match=match):
    make()


def test_schedule_from_config_refuses_update_every_zero(tiny_config):
  tiny_config.gradual.update_every = 0
  with pytest.raises(ValueError, match="update_every = 0"):
    gmp.schedule_from_config(tiny_config, 7, 0.0)


# A goal the start mask's achieved sparsity already exceeds.


def _bernoulli_start(config, strategy: str):
  """`config` for `strategy` from a Bernoulli ERK start of density 0.3, which achieves sparsity
  0.703296 here: above the goal 0.702, which the nominal start (0.7) allows."""
  config.strategy = strategy
  config.gradual.update(start_epoch=0, end_epoch=2, update_every=3)
  config.prune.n_phases = 2
  config.init_mask.update(distribution="erk", density=0.3, method="bernoulli")
  config.prune.goal_sparsity = 0.702
  config_lib.validate(config)
  return config


@pytest.mark.parametrize("strategy", ["gmp", "imp", "sms_gmp"])
def test_goal_below_the_achieved_start_sparsity_is_refused_before_training(
    tiny_config, tmp_path, strategy):
  config = _bernoulli_start(tiny_config, strategy)
  with pytest.raises(config_lib.ConfigError, match=r"prune.goal_sparsity = 0.702 is not allowed "
                                                   r".*achieved sparsity 0.703296"):
    experiment.run(config, str(tmp_path / "run"))
  # Refused before training: the new workdir is gone, so the corrected command can use it.
  assert not (tmp_path / "run").exists()


def test_only_strategies_that_prune_to_the_goal_check_it_against_the_start(tiny_config):
  from sms_jax import strategies  # pylint: disable=g-import-not-at-top
  for name, strategy in strategies.STRATEGIES.items():
    if name == "edge_popup":  # Refuses a Bernoulli start itself: its scores choose the mask.
      continue
    error = strategy.check(_bernoulli_start(tiny_config, name), 0.703296)
    if name in ("dense", "set", "rigl", "sms_rigl"):
      assert error is None, name
    else:
      assert "achieved sparsity 0.703296" in error, name
