"""Masks at initialisation and sparse starts end to end."""

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
import pytest

from sms_jax import data, experiment, models, pretraining, sparsity
from sms_jax import config as config_lib
from sms_jax.sparsity import init_masks


def _cnn1d():
  model = models.create_model("cnn1d", 10)
  params = model.init(jax.random.key(0), jnp.zeros((1, 40, 1)))["params"]
  return model, params, models.param_paths(model, (40, 1))


def test_random_masks_have_exact_counts_and_differ_by_key():
  _, params, paths = _cnn1d()
  densities = init_masks.layer_densities_for(params, sparsity.masks.is_kernel, paths,
                                             "balanced", 0.2)
  a = init_masks.init_masks(jax.random.key(0), params, densities)
  b = init_masks.init_masks(jax.random.key(1), params, densities)
  for record in init_masks.mask_record(params, a, paths):
    assert record["nonzero"] == round(densities[record["name"]] * record["size"])
  assert sparsity.count_alive(a) == sparsity.count_alive(b) and not sparsity.masks_equal(a, b)
  assert abs(sparsity.count_alive(a)[0] / sparsity.count_alive(a)[1] - 0.2) < 1e-3
  bern = init_masks.init_masks(jax.random.key(0), params, densities, "bernoulli")
  assert abs(1 - sparsity.sparsity(bern) - 0.2) < 0.02  # About, not exactly.


def test_rescale_multiplies_sparse_layers_only():
  _, params, paths = _cnn1d()
  densities = {"conv1/kernel": 0.25, "classifier/kernel": 1.0}
  scaled = init_masks.rescale_init(params, densities)
  np.testing.assert_allclose(scaled["conv1"]["kernel"], params["conv1"]["kernel"] * 2, rtol=1e-6)
  np.testing.assert_array_equal(scaled["classifier"]["kernel"], params["classifier"]["kernel"])
  np.testing.assert_array_equal(scaled["conv0"]["kernel"], params["conv0"]["kernel"])


def test_goal_must_exceed_the_initial_sparsity(tiny_config):
  tiny_config.strategy = "imp"
  tiny_config.init_mask.distribution, tiny_config.init_mask.density = "erk", 0.1
  tiny_config.prune.goal_sparsity = 0.8
  with pytest.raises(config_lib.ConfigError, match="more than the initial sparsity 0.9"):
    config_lib.validate(tiny_config)


def test_dense_training_stays_inside_a_random_mask(tiny_config, tmp_path):
  tiny_config.init_mask.distribution, tiny_config.init_mask.density = "pyramidal", 0.3
  results = experiment.run(tiny_config, str(tmp_path))
  record = results["init_mask"]
  assert record["distribution"] == "pyramidal" and abs(record["achieved_density"] - 0.3) < 1e-3
  assert results["final"]["sparsity"] == pytest.approx(1 - record["achieved_density"])
  densities = [l["nonzero"] / l["size"] for l in record["layers"]]
  assert densities == sorted(densities, reverse=True)  # Pyramidal: denser near the input.


def test_imp_from_a_random_mask_never_revives_a_weight(tiny_config, tmp_path):
  tiny_config.strategy = "imp"
  tiny_config.train.epochs = 2
  tiny_config.init_mask.distribution, tiny_config.init_mask.density = "erk", 0.5
  tiny_config.prune.update(goal_sparsity=0.8, n_phases=2)
  tiny_config.retrain.epochs_per_phase = 1
  results = experiment.run(tiny_config, str(tmp_path))
  # From the initial sparsity 0.5 (up to rounding per layer) to 0.8 in two equal steps.
  assert [p["target_sparsity"] for p in results["phases"]] == pytest.approx(
      [1 - 0.5 * 0.4 ** 0.5, 0.8], abs=1e-4)
  model = models.create_model("cnn1d", 10)
  params = model.init(jax.random.key(0), jnp.zeros((1, 40, 1)))
  start, _ = pretraining.start_masks(tiny_config, model, params["params"], params["batch_stats"],
                                     data.load(tiny_config.dataset))
  with ocp.CheckpointManager(str(tmp_path / "checkpoints" / "phases")) as manager:
    saved = manager.restore(manager.latest_step(), args=ocp.args.Composite(
        state=ocp.args.StandardRestore()))["state"]
  for name in ("conv1", "dense"):
    final, initial = np.asarray(saved["masks"][name]["kernel"]), np.asarray(start[name]["kernel"])
    assert not np.any(final & ~initial)  # Alive now implies alive at the start.
    assert np.all(np.asarray(saved["params"][name]["kernel"])[~initial] == 0)
  assert abs(results["final"]["sparsity"] - 0.8) < 1e-3


def _linear_params(seed=0):
  rng = np.random.default_rng(seed)
  return {"l1": {"kernel": jnp.asarray(rng.normal(size=(3, 4)), jnp.float32)},
          "l2": {"kernel": jnp.asarray(rng.normal(size=(4, 2)), jnp.float32)}}


def _top(scores, k):
  flat = np.concatenate([scores["l1"].ravel(), scores["l2"].ravel()])
  keep = np.zeros(flat.size, bool)
  keep[np.argsort(-flat, kind="stable")[:k]] = True
  return keep


def test_snip_keeps_the_largest_weight_times_gradient():
  params = _linear_params()
  alive = sparsity.create_masks(params)
  batches = [jnp.full((3,), 1.0), jnp.asarray([0.5, -2.0, 1.0])]
  loss_fn = lambda p, x: jnp.sum(x @ p["l1"]["kernel"] @ p["l2"]["kernel"])
  scores = init_masks.snip_scores(loss_fn, params, batches, alive)
  x = sum(np.asarray(b) for b in batches)
  w1, w2 = np.asarray(params["l1"]["kernel"]), np.asarray(params["l2"]["kernel"])
  expected = {"l1": np.abs(w1 * np.outer(x, w2.sum(1))), "l2": np.abs(w2 * (x @ w1)[:, None])}
  np.testing.assert_allclose(scores["l1"]["kernel"], expected["l1"], rtol=1e-5)
  masks = init_masks.keep_by_scores(scores, None, 0.25)  # 5 of 20 weights, globally.
  got = np.concatenate([np.asarray(masks["l1"]["kernel"]).ravel(),
                        np.asarray(masks["l2"]["kernel"]).ravel()])
  np.testing.assert_array_equal(got, _top(expected, 5))


def test_synflow_is_data_free_and_keeps_the_requested_counts():
  params = jax.tree.map(lambda p: p - 0.5, _linear_params(1))
  alive = sparsity.create_masks(params)
  output_fn = lambda p: jnp.ones((1, 3)) @ p["l1"]["kernel"] @ p["l2"]["kernel"]
  one_round = init_masks.synflow_masks(output_fn, params, alive, None, 0.25, rounds=1)
  w1, w2 = np.abs(np.asarray(params["l1"]["kernel"])), np.abs(np.asarray(params["l2"]["kernel"]))
  expected = {"l1": w1 * w2.sum(1)[None, :], "l2": w2 * w1.sum(0)[:, None]}
  got = np.concatenate([np.asarray(one_round["l1"]["kernel"]).ravel(),
                        np.asarray(one_round["l2"]["kernel"]).ravel()])
  np.testing.assert_array_equal(got, _top(expected, 5))
  layered = init_masks.synflow_masks(output_fn, params, alive, {"l1/kernel": 0.5,
                                                                "l2/kernel": 0.25}, 0.4)
  assert int(layered["l1"]["kernel"].sum()) == 6 and int(layered["l2"]["kernel"].sum()) == 2


@pytest.mark.parametrize("method", ["snip", "synflow"])
def test_scored_sparse_starts_train_inside_their_masks(tiny_config, tmp_path, method):
  tiny_config.train.epochs = 1
  tiny_config.init_mask.update(distribution="global", density=0.2, method=method)
  results = experiment.run(tiny_config, str(tmp_path))
  assert abs(results["init_mask"]["achieved_density"] - 0.2) < 1e-3
  assert results["final"]["sparsity"] == pytest.approx(0.8, abs=1e-3)


def test_global_distribution_needs_a_scored_method(tiny_config):
  tiny_config.init_mask.update(distribution="global", method="random")
  with pytest.raises(config_lib.ConfigError, match="allowed: with snip or synflow"):
    config_lib.validate(tiny_config)
