"""Soups: uniform means, the greedy rule, BatchNorm recalibration."""

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

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
