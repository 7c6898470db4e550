"""SNIP and SynFlow inside a random start mask (`init_mask.within`), and `init_mask.rescale`."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import orbax.checkpoint as ocp
import pytest

from conftest import make_tiny_config
from sms_jax import data, experiment, models, pretraining, sparsity
from sms_jax import config as config_lib
from sms_jax.sparsity import init_masks

KERNELS = ("conv0", "conv1", "conv2", "dense", "classifier")  # cnn1d's prunable leaves.


@pytest.fixture(scope="module")
def cnn1d():
  """The tiny config's model, parameters, BatchNorm statistics and dataset."""
  config = make_tiny_config()
  model = models.create_model("cnn1d", 10)
  variables = model.init(jax.random.key(3), jnp.zeros((1, 40, 1)))
  return model, variables["params"], variables["batch_stats"], data.load(config.dataset)


def _masks(config, cnn1d):
  model, params, batch_stats, dataset = cnn1d
  masks, _ = pretraining.start_masks(config, model, params, batch_stats, dataset)
  return {name: np.asarray(masks[name]["kernel"]) for name in KERNELS}


def _plain_random_start(config, cnn1d):
  """What a random start of the `within` distribution and density draws (an independent call)."""
  plain = config.copy_and_resolve_references()
  plain.init_mask.update(distribution=config.init_mask.within,
                         density=config.init_mask.within_density, method="random", within="none")
  return _masks(plain, cnn1d)


def _independent_snip(cnn1d, start, num_batches, batch_size):
  """|w * g| of the network masked by `start`, g the loss gradient summed over the first
  batches, -inf outside `start`: written here without the library's scoring helpers."""
  model, params, batch_stats, dataset = cnn1d
  masked = jax.tree_util.tree_map_with_path(
      lambda path, p: p * start[path[0].key] if path[0].key in start and path[-1].key == "kernel"
      else p, params)

  def loss(p, x, y):
    logits, _ = model.apply({"params": p, "batch_stats": batch_stats}, x, train=True,
                            mutable=["batch_stats"])
    return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()

  total, grad_fn = None, jax.jit(jax.grad(loss))
  x, y = dataset.train.x, dataset.train.y
  for b in range(num_batches):
    part = slice(b * batch_size, (b + 1) * batch_size)
    g = grad_fn(masked, x[part], y[part])
    total = g if total is None else jax.tree.map(jnp.add, total, g)
  return {name: np.where(start[name], np.abs(np.asarray(masked[name]["kernel"])
                                             * np.asarray(total[name]["kernel"])), -np.inf)
          for name in KERNELS}


def _within_config(tiny_config, **init):
  tiny_config.init_mask.update(**init)
  config_lib.validate(tiny_config)
  return tiny_config


def test_snip_within_keeps_the_top_scores_inside_the_start_mask(tiny_config, cnn1d):
  config = _within_config(tiny_config, distribution="global", density=0.15, method="snip",
                          within="er", within_density=0.5, score_batches=2)
  final, start = _masks(config, cnn1d), _plain_random_start(config, cnn1d)
  sizes = sum(start[n].size for n in KERNELS)
  assert sum(int(start[n].sum()) for n in KERNELS) == pytest.approx(0.5 * sizes, abs=4)
  assert all(not np.any(final[n] & ~start[n]) for n in KERNELS)  # Final ⊆ start.
  assert sum(int(final[n].sum()) for n in KERNELS) == round(0.15 * sizes)  # Exactly.
  scores = _independent_snip(cnn1d, start, 2, config.train.batch_size)
  kept = np.concatenate([scores[n][final[n]] for n in KERNELS])
  dropped = np.concatenate([scores[n][start[n] & ~final[n]] for n in KERNELS])
  # The kept weights are the best-scoring of the start mask (up to float rounding of ties).
  assert kept.min() >= dropped.max() - 1e-6 * kept.max() and np.isfinite(kept).all()


def test_synflow_within_nests_with_exact_layer_counts(tiny_config, cnn1d):
  config = _within_config(tiny_config, distribution="balanced", density=0.2, method="synflow",
                          within="balanced", within_density=0.6)
  final, start = _masks(config, cnn1d), _plain_random_start(config, cnn1d)
  _, params, _, _ = cnn1d
  paths = models.param_paths(cnn1d[0], (40, 1))
  wanted = init_masks.layer_densities_for(params, sparsity.masks.is_kernel, paths, "balanced",
                                          0.2)
  for name in KERNELS:
    assert not np.any(final[name] & ~start[name])
    assert int(final[name].sum()) == round(wanted[f"{name}/kernel"] * final[name].size)


def _linear_params():
  rng = np.random.default_rng(2)  # A seed where the masked and dense networks rank apart.
  return {"l1": {"kernel": jnp.asarray(rng.normal(size=(3, 4)), jnp.float32)},
          "l2": {"kernel": jnp.asarray(rng.normal(size=(4, 2)), jnp.float32)}}


def test_synflow_within_scores_the_masked_network():
  params = _linear_params()
  start = {"l1": {"kernel": jnp.asarray(np.arange(12).reshape(3, 4) % 3 != 0)},
           "l2": {"kernel": jnp.asarray([[1, 0], [1, 1], [0, 1], [1, 1]], bool)}}
  output_fn = lambda p: jnp.ones((1, 3)) @ p["l1"]["kernel"] @ p["l2"]["kernel"]
  one_round = init_masks.synflow_masks(output_fn, params, start, None, 0.25, rounds=1)
  m1, m2 = np.asarray(start["l1"]["kernel"]), np.asarray(start["l2"]["kernel"])
  w1 = np.abs(np.asarray(params["l1"]["kernel"])) * m1
  w2 = np.abs(np.asarray(params["l2"]["kernel"])) * m2
  scores = np.concatenate([np.where(m1, w1 * w2.sum(1)[None, :], -1).ravel(),
                           np.where(m2, w2 * w1.sum(0)[:, None], -1).ravel()])
  expected = np.zeros(20, bool)
  expected[np.argsort(-scores, kind="stable")[:5]] = True
  got = np.concatenate([np.asarray(one_round[n]["kernel"]).ravel() for n in ("l1", "l2")])
  np.testing.assert_array_equal(got, expected)
  many = init_masks.synflow_masks(output_fn, params, start, {"l1/kernel": 0.25,
                                                             "l2/kernel": 0.5}, 0.3)
  assert int(many["l1"]["kernel"].sum()) == 3 and int(many["l2"]["kernel"].sum()) == 4
  assert not np.any(np.asarray(many["l1"]["kernel"]) & ~m1)
  assert not np.any(np.asarray(many["l2"]["kernel"]) & ~m2)


@pytest.mark.parametrize("init, message", [
    (dict(distribution="er", method="random", within="er"), "has no meaning with"),
    (dict(distribution="none", method="snip", within="er"), "has no meaning with"),
    (dict(distribution="er", density=0.3, method="snip", within="er", within_density=0.3),
     "init_mask.within_density = 0.3 is not allowed with init_mask.density = 0.3"),
    (dict(rescale="he"), "allowed: one of none, density, fan_in"),
])
def test_within_and_rescale_are_validated(tiny_config, init, message):
  tiny_config.init_mask.update(**init)
  with pytest.raises(config_lib.ConfigError, match=message):
    config_lib.validate(tiny_config)


def test_a_final_distribution_that_does_not_fit_the_start_mask_is_refused(tiny_config, cnn1d):
  config = _within_config(tiny_config, distribution="uniform", density=0.3, method="snip",
                          within="pyramidal", within_density=0.4)
  with pytest.raises(config_lib.ConfigError, match="where the start mask .* has only"):
    _masks(config, cnn1d)


def test_rescale_fan_in_redraws_sparse_layers_with_the_reference_std(cnn1d):
  _, params, _, _ = cnn1d
  densities = {"conv1/kernel": 0.25, "dense/kernel": 0.5, "classifier/kernel": 1.0}
  key = jax.random.key(7)
  scaled = init_masks.rescale_init(params, densities, "fan_in", key)
  for name, d in (("conv1", 0.25), ("dense", 0.5)):
    kernel = np.asarray(scaled[name]["kernel"])
    fan_in = int(np.prod(kernel.shape[:-1]))
    assert kernel.std() == pytest.approx(np.sqrt(2 / (fan_in * d)), rel=0.05)
    assert abs(kernel.mean()) < 0.05 * kernel.std()
  for name in ("conv0", "classifier"):  # Not sparse: as initialised.
    np.testing.assert_array_equal(scaled[name]["kernel"], params[name]["kernel"])
  again = init_masks.rescale_init(params, densities, "fan_in", key)
  other = init_masks.rescale_init(params, densities, "fan_in", jax.random.key(8))
  np.testing.assert_array_equal(again["dense"]["kernel"], scaled["dense"]["kernel"])
  assert not np.array_equal(other["dense"]["kernel"], scaled["dense"]["kernel"])
  assert init_masks.rescale_init(params, densities, "none") is not None
  np.testing.assert_array_equal(init_masks.rescale_init(params, densities, "none")["dense"][
      "kernel"], params["dense"]["kernel"])


def test_dense_training_from_snip_within_never_leaves_the_start_mask(tiny_config, tmp_path,
                                                                      cnn1d):
  config = _within_config(tiny_config, distribution="global", density=0.2, method="snip",
                          within="balanced", within_density=0.4, score_batches=1,
                          rescale="fan_in")
  config.train.epochs = 1
  results = experiment.run(config, str(tmp_path))
  record = results["init_mask"]
  start = _plain_random_start(config, cnn1d)
  sizes = sum(start[n].size for n in KERNELS)
  assert record["within"] == {"distribution": "balanced", "density": 0.4,
                              "achieved_density": sum(int(start[n].sum()) for n in KERNELS)
                              / sizes}
  assert results["final"]["sparsity"] == pytest.approx(1 - round(0.2 * sizes) / sizes, abs=1e-9)
  with ocp.CheckpointManager(str(tmp_path / "checkpoints" / "pretrain")) as manager:
    saved = manager.restore(manager.latest_step(), args=ocp.args.Composite(
        state=ocp.args.StandardRestore()))["state"]
  for name in KERNELS:
    kernel = np.asarray(saved["params"][name]["kernel"])
    assert np.all(kernel[~start[name]] == 0) and np.any(kernel[start[name]] != 0)
