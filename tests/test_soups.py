"""Soups: uniform means, the greedy rule, BatchNorm recalibration."""

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sms_jax import soups
from sms_jax.training import engine


def test_soup_of_identical_candidates_is_the_candidate():
  tree = {"w": jnp.asarray(np.random.default_rng(0).normal(size=(5, 3)), jnp.float32),
          "b": jnp.arange(3.0)}
  chex.assert_trees_all_equal(soups.uniform_soup(engine.stack([tree] * 4)), tree)


def test_uniform_soup_is_the_mean_of_the_chosen():
  stacked = {"w": jnp.asarray([[1.0, 2.0], [3.0, 6.0], [5.0, 1.0]])}
  np.testing.assert_allclose(soups.uniform_soup(stacked)["w"], [3.0, 3.0])
  np.testing.assert_allclose(soups.uniform_soup(stacked, [0, 2])["w"], [3.0, 1.5])


def test_greedy_soup_follows_the_reference_rule():
  val = [0.80, 0.90, 0.85, 0.70]  # Order by val: 1, 2, 0, 3.
  scripted = {(1, 2): 0.91, (1, 2, 0): 0.91, (1, 2, 0, 3): 0.905}
  asked = []

  def soup_val(indices):
    asked.append(tuple(indices))
    return scripted[tuple(indices)]

  # 2 raises 0.90 to 0.91 (accept); 0 keeps 0.91 (>=, accept); 3 drops it (reject).
  assert soups.greedy_soup(val, soup_val) == [1, 2, 0]
  assert asked == [(1, 2), (1, 2, 0), (1, 2, 0, 3)]
  # Rejected when the soup is worse than the best single candidate.
  assert soups.greedy_soup([0.5, 0.9], lambda idx: 0.89) == [1]


class _Net(nn.Module):
  @nn.compact
  def __call__(self, x, train=False):
    x = nn.BatchNorm(use_running_average=not train, momentum=0.7)(x)
    x = nn.Dense(4)(x)
    return nn.BatchNorm(use_running_average=not train, momentum=0.9, name="bn_out")(x)


def test_recalibration_is_the_average_of_batch_statistics_and_leaves_params():
  model = _Net()
  x = jnp.asarray(np.random.default_rng(1).normal(2.0, 3.0, size=(60, 3)), jnp.float32)
  variables = model.init(jax.random.key(0), x[:1])
  params = jax.tree.map(jnp.copy, variables["params"])
  batches = [x[:20], x[20:40], x[40:60]]
  stats = soups.recalibrate_batch_stats(model, params, variables["batch_stats"], batches)
  chex.assert_trees_all_equal(params, variables["params"])
  first = stats["BatchNorm_0"]
  np.testing.assert_allclose(first["mean"], np.mean([b.mean(0) for b in batches], 0), rtol=1e-5)
  np.testing.assert_allclose(first["var"], np.mean([b.var(0) for b in batches], 0), rtol=1e-5)
  dense = params["Dense_0"]  # The first BatchNorm normalises with batch statistics (scale 1).
  hidden = [(b - b.mean(0)) / np.sqrt(b.var(0) + 1e-5) @ dense["kernel"] + dense["bias"]
            for b in map(np.asarray, batches)]
  np.testing.assert_allclose(stats["bn_out"]["mean"], np.mean([h.mean(0) for h in hidden], 0),
                             rtol=1e-4, atol=1e-6)
  np.testing.assert_allclose(stats["bn_out"]["var"], np.mean([h.var(0) for h in hidden], 0),
                             rtol=1e-4)


class _FlagNet(nn.Module):
  """Dense -> BatchNorm, its training flag named like BatchNorm's own."""

  @nn.compact
  def __call__(self, x, use_running_average=True):
    x = nn.Dense(4)(x)
    return nn.BatchNorm(use_running_average=use_running_average, momentum=0.5)(x)


def test_recalibration_calls_the_model_in_training_mode_as_told():
  model = _FlagNet()
  x = np.random.default_rng(2).normal(1.0, 2.0, size=(30, 3)).astype(np.float32)
  variables = model.init(jax.random.key(0), x[:1])
  batches = [x[:10], x[10:20], x[20:]]
  stats = soups.recalibrate_batch_stats(model, variables["params"], variables["batch_stats"],
                                        batches, apply_kwargs={"use_running_average": False})
  dense = jax.tree.map(np.asarray, variables["params"]["Dense_0"])
  hidden = [b @ dense["kernel"] + dense["bias"] for b in batches]
  np.testing.assert_allclose(stats["BatchNorm_0"]["mean"], np.mean([h.mean(0) for h in hidden], 0),
                             rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(stats["BatchNorm_0"]["var"], np.mean([h.var(0) for h in hidden], 0),
                             rtol=1e-5)
  with pytest.raises(ValueError, match="apply_kwargs must not hold 'mutable'"):
    soups.recalibrate_batch_stats(model, variables["params"], variables["batch_stats"], batches,
                                  apply_kwargs={"mutable": True})
  with pytest.raises(ValueError, match="allowed: a flax.linen Module or a flax.nnx Module"):
    soups.recalibrate_batch_stats(print, variables["params"], variables["batch_stats"], batches)


def test_stack_and_unstack_candidates_round_trip_and_check_their_trees():
  trees = [{"w": jnp.full((2, 3), float(k)), "b": jnp.arange(3.0) + k} for k in range(3)]
  stacked = soups.stack_candidates(trees)
  chex.assert_tree_shape_prefix(stacked, (3,))
  chex.assert_trees_all_equal(soups.unstack_candidates(stacked), trees)
  with pytest.raises(ValueError, match="needs at least one tree"):
    soups.stack_candidates([])
  with pytest.raises(ValueError, match="candidate 1's tree differs from candidate 0's"):
    soups.stack_candidates([trees[0], {"w": trees[1]["w"][:1], "b": trees[1]["b"]}])


def test_greedy_soup_variables_average_the_accepted_and_recalibrate():
  model = _Net()
  x = jnp.asarray(np.random.default_rng(3).normal(0.5, 2.0, size=(40, 3)), jnp.float32)
  batches = [x[:20], x[20:]]
  candidates = [model.init(jax.random.key(k), x[:1]) for k in range(3)]
  stacked = soups.stack_candidates(candidates)
  kernels = [np.asarray(c["params"]["Dense_0"]["kernel"]) for c in candidates]
  scripted = {(1, 0): 0.95, (1, 0, 2): 0.5}  # Ranked 1, 0, 2: accept 0, reject 2.
  seen = []

  def evaluate(variables):
    kernel = np.asarray(variables["params"]["Dense_0"]["kernel"])
    subset = next(s for s in scripted if np.allclose(kernel, np.mean([kernels[k] for k in s], 0)))
    seen.append((subset, variables))
    return scripted[subset]

  soup, accepted = soups.greedy_soup_variables(model, stacked, [0.8, 0.9, 0.7], evaluate,
                                               iter(batches))  # An iterator: read once.
  assert accepted == [1, 0] and [s for s, _ in seen] == [(1, 0), (1, 0, 2)]
  want = jax.tree.map(lambda a, b: (np.asarray(a) + np.asarray(b)) / 2, candidates[1]["params"],
                      candidates[0]["params"])
  chex.assert_trees_all_close(soup["params"], want, rtol=1e-6)
  direct = soups.recalibrate_batch_stats(model, want, candidates[0]["batch_stats"], batches)
  chex.assert_trees_all_close(soup["batch_stats"], direct, rtol=1e-5)
  chex.assert_trees_all_close(seen[0][1], soup, rtol=1e-6)  # The soup evaluated is returned.
  alone = soups.soup_variables(model, stacked, [2], batches)  # One ingredient: as it is.
  chex.assert_trees_all_equal(alone, candidates[2])
