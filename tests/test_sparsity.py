"""Masks, the masking transform and pruning: exact counts and the mask invariant."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from configs import default
from sms_jax import models, sparsity
from sms_jax.training import optimizers, retrain, schedules


def _random_params(seed: int):
  """A params-like tree with conv and dense kernels, biases and BatchNorm scales."""
  rng = np.random.default_rng(seed)
  shapes = {"conv0": {"kernel": (3, 3, 2, 4)}, "bn0": {"scale": (4,), "bias": (4,)},
            "conv1": {"kernel": (5, 4, 6)}, "dense": {"kernel": (24, 7), "bias": (7,)},
            "classifier": {"kernel": (7, 3), "bias": (3,)}}
  return jax.tree.map(lambda s: jnp.asarray(rng.normal(size=s), jnp.float32), shapes,
                      is_leaf=lambda x: isinstance(x, tuple))


ORDER = ["conv0/kernel", "bn0/scale", "bn0/bias", "conv1/kernel", "dense/kernel", "dense/bias",
         "classifier/kernel", "classifier/bias"]


def test_create_masks_marks_kernels_only():
  masks = sparsity.create_masks(_random_params(0))
  assert masks["bn0"]["scale"] is None and masks["dense"]["bias"] is None
  assert masks["conv0"]["kernel"].dtype == jnp.bool_ and bool(masks["conv0"]["kernel"].all())
  assert sparsity.count_alive(masks) == (72 + 120 + 168 + 21, 72 + 120 + 168 + 21)


def test_prunable_filter_keeps_first_and_last_dense():
  params = _random_params(0)
  masks = sparsity.create_masks(params, sparsity.prunable_filter(
      ORDER, keep_first_dense=True, keep_last_dense=True))
  assert masks["conv0"]["kernel"] is None and masks["classifier"]["kernel"] is None
  assert masks["conv1"]["kernel"] is not None and masks["dense"]["kernel"] is not None


@pytest.mark.parametrize("selector", ["global", "uniform", "random"])
def test_phases_reach_exact_sparsity_and_never_revive(selector):
  params = _random_params(1)
  masks = sparsity.create_masks(params)
  _, total = sparsity.count_alive(masks)
  for phase in range(1, 5):
    target = sparsity.phase_sparsity(0.95, 4, phase)
    new = sparsity.prune(params, masks, target, selector=selector, key=jax.random.key(phase))
    alive, _ = sparsity.count_alive(new)
    assert abs(alive - (1 - target) * total) <= (0.5 if selector == "global" else 4 * 0.5 + 1e-9)
    for old_leaf, new_leaf in zip(jax.tree.leaves(masks), jax.tree.leaves(new)):
      assert not np.any(np.asarray(new_leaf) & ~np.asarray(old_leaf))  # Nothing revived.
    params = sparsity.apply_masks(params, new)
    masks = new
  assert sparsity.sparsity(masks) == pytest.approx(0.95, abs=1e-3)


def test_global_magnitude_keeps_the_largest_with_index_tie_break():
  params = {"a": {"kernel": jnp.asarray([[3.0, -1.0], [2.0, 2.0]])},
            "b": {"kernel": jnp.asarray([[2.0, -5.0]])}}
  masks = sparsity.prune(params, sparsity.create_masks(params), 0.5)
  # Magnitudes 3, 1, 2, 2 | 2, 5: keep 5, 3 and the first of the three 2s (index order).
  np.testing.assert_array_equal(masks["a"]["kernel"], [[True, False], [True, False]])
  np.testing.assert_array_equal(masks["b"]["kernel"], [[False, True]])


def test_uniform_prunes_each_layer_alike_and_random_depends_on_key():
  params = _random_params(2)
  masks = sparsity.create_masks(params)
  uniform = sparsity.prune(params, masks, 0.5, selector="uniform")
  for leaf in jax.tree.leaves(uniform):
    assert int(np.sum(leaf)) == round(leaf.size * 0.5)
  a = sparsity.prune(params, masks, 0.5, selector="random", key=jax.random.key(0))
  b = sparsity.prune(params, masks, 0.5, selector="random", key=jax.random.key(1))
  assert sparsity.count_alive(a) == sparsity.count_alive(b)
  assert not sparsity.masks_equal(a, b)


def test_prune_rejects_bad_targets_and_selectors():
  params = _random_params(0)
  masks = sparsity.prune(params, sparsity.create_masks(params), 0.5)
  with pytest.raises(ValueError, match="target sparsity 0.2 is not allowed"):
    sparsity.prune(params, masks, 0.2)
  with pytest.raises(ValueError, match="unknown pruning selector 'l1'; allowed: global"):
    sparsity.prune(params, masks, 0.6, selector="l1")


def _full_chains(masks):
  """The optimizers the strategies train with: pretraining (Nesterov SGD on the config's
  schedule) and retraining (LLR), each wrapped by the fixed-mask updater."""
  train = default.get_config().train
  train.nesterov = True
  pretrain = retrain.pretrain_schedule(train, 10)
  for inner in (optimizers.make_optimizer(train, schedules.make_schedule(train, 10)),
                retrain.retrain_optimizer(train, "llr", pretrain, peak_learning_rate=0.1,
                                          total_steps=20, weight_decay=1e-2)):
    yield sparsity.FixedMasks().wrap(inner, masks)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_pruned_weights_stay_exactly_zero_under_the_full_chain(seed):
  params = _random_params(seed)
  masks = sparsity.prune(params, sparsity.create_masks(params), 0.7)
  params = sparsity.apply_masks(params, masks)
  for tx in _full_chains(masks):
    p, opt_state = params, tx.init(params)
    for step in range(5):
      grads = _random_params(100 * seed + step)  # Dense gradients, pruned entries included.
      updates, opt_state = tx.update(grads, opt_state, p)
      p = optax.apply_updates(p, updates)
    for leaf, mask in zip(jax.tree.leaves(p), jax.tree.leaves(masks, is_leaf=lambda x: x is None)):
      if mask is not None:
        assert np.all(np.asarray(leaf)[~np.asarray(mask)] == 0.0)
        assert np.all(np.asarray(leaf)[np.asarray(mask)] != 0.0)
  # Without the updater, the gradients would move the pruned weights.
  sgd = optax.chain(optax.add_decayed_weights(1e-2), optax.sgd(0.1, momentum=0.9))
  moved = optax.apply_updates(params, sgd.update(_random_params(7), sgd.init(params), params)[0])
  assert np.all(np.asarray(moved["dense"]["kernel"])[~np.asarray(masks["dense"]["kernel"])] != 0)


def test_layer_stats_follow_forward_order_and_count_nonzeros():
  model = models.create_model("cnn1d", 10)
  paths = models.param_paths(model, (40, 1))
  params = model.init(jax.random.key(0), jnp.zeros((1, 40, 1)))["params"]
  masks = sparsity.prune(params, sparsity.create_masks(params), 0.8)
  layers = sparsity.layer_stats(sparsity.apply_masks(params, masks), masks, paths)
  assert [l["name"] for l in layers] == ["conv0/kernel", "conv1/kernel", "conv2/kernel",
                                         "dense/kernel", "classifier/kernel"]
  alive = {sparsity.path_name(p): int(np.sum(m)) for p, m in
           jax.tree_util.tree_leaves_with_path(masks)}
  assert all(l["nonzero"] == alive[l["name"]] for l in layers)
  assert sum(l["nonzero"] for l in layers) == round(0.2 * sum(l["size"] for l in layers))


def test_path_names_drop_only_the_value_attribute_of_nnx_variables():
  dict_key, attr_key = jax.tree_util.DictKey, jax.tree_util.GetAttrKey
  for attr in ("value", "raw_value"):  # Where NNX Variables keep their arrays.
    assert sparsity.path_name((dict_key("fc"), dict_key("kernel"), attr_key(attr))) == "fc/kernel"
  assert sparsity.path_name((dict_key("value"), dict_key("kernel"))) == "value/kernel"
  assert sparsity.path_name((dict_key("fc"), dict_key("value"))) == "fc/value"  # A dict key.
