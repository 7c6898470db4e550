"""Edge-Popup: scores trained through a straight-through top-k choose a subnetwork of frozen
random weights (`sms_jax.sparsity.edge_popup`, strategy `edge_popup`)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import edge_popup_mnist1d
from conftest import make_tiny_config
from sms_jax import checkpoints, config as config_lib, data, experiment, export, models
from sms_jax.sparsity import distributions, edge_popup
from sms_jax.strategies import edge_popup as strategy
from sms_jax.training import optimizers, schedules
from sms_jax.training.evaluator import Evaluator

without_times = lambda h: [{k: v for k, v in r.items() if k != "time_s"} for r in h]


def _numpy_top_k(scores: np.ndarray, k: int) -> np.ndarray:
  """The mask of the k largest scores, ties to the lower index (independent of the library)."""
  order = sorted(range(scores.size), key=lambda i: (-scores.ravel()[i], i))
  mask = np.zeros(scores.size, bool)
  mask[order[:k]] = True
  return mask.reshape(scores.shape)


def test_popup_keeps_the_top_scores_and_passes_the_gradient_straight_through():
  key_w, key_s, key_x = jax.random.split(jax.random.key(0), 3)
  w = jax.random.normal(key_w, (6, 4))
  s = jax.random.normal(key_s, (6, 4)).at[0, :2].set(0.5).at[1, 3].set(0.5)  # Ties.
  x = jax.random.normal(key_x, (3, 6))
  k = 9
  mask = _numpy_top_k(np.asarray(s), k)
  assert mask.sum() == k
  np.testing.assert_array_equal(edge_popup.popup(w, s, k), np.asarray(w) * mask)
  loss = lambda effective: jnp.sum(jnp.tanh(x @ effective) ** 2)
  # dL/ds = dL/d(w * m) * w, for every weight (pruned ones too).
  expected = jax.grad(loss)(jnp.asarray(np.asarray(w) * mask)) * w
  got = jax.grad(lambda scores: loss(edge_popup.popup(w, scores, k)))(s)
  np.testing.assert_allclose(got, expected, rtol=1e-6)
  assert np.count_nonzero(np.asarray(got)[~mask]) > 0


def test_frozen_weights_are_scaled_signed_constants_or_kaiming_normal():
  params = {"conv": {"kernel": jnp.zeros((5, 8, 400)), "bias": jnp.full((400,), 0.25)},
            "bn": {"scale": jnp.ones((400,))}}
  signed = edge_popup.frozen_weights(jax.random.key(1), params, "signed_constant")
  kernel, c = np.asarray(signed["conv"]["kernel"]), np.sqrt(2 / 40)
  np.testing.assert_allclose(np.abs(kernel), c, rtol=1e-6)
  assert 0.45 < (kernel > 0).mean() < 0.55
  np.testing.assert_array_equal(signed["conv"]["bias"], params["conv"]["bias"])
  np.testing.assert_array_equal(signed["bn"]["scale"], params["bn"]["scale"])
  normal = np.asarray(edge_popup.frozen_weights(jax.random.key(1), params,
                                                "kaiming_normal")["conv"]["kernel"])
  assert normal.std() == pytest.approx(c, rel=0.02) and abs(normal.mean()) < 0.01 * c
  scores = edge_popup.init_scores(jax.random.key(2), params, {"conv/kernel": 0.5})
  assert list(scores) == ["conv"] and list(scores["conv"]) == ["kernel"]  # Kernels only.
  assert np.abs(scores["conv"]["kernel"]).max() <= 1 / np.sqrt(40)
  assert np.abs(scores["conv"]["kernel"]).max() > 0.95 / np.sqrt(40)


def _config():
  config = make_tiny_config()
  config.strategy = "edge_popup"
  config.train.epochs = 2
  config.train.learning_rate = 0.1
  config.init_mask.distribution = "erk"
  config.init_mask.density = 0.5
  config.checkpoint.every_epochs = 1
  config.checkpoint.min_interval_s = 0.0
  return config


def _start(config, dataset):
  """The run's initial state (weights, scores, BatchNorm statistics), its counts, the model."""
  inner = models.create_model(config.model.name, dataset.num_classes)
  tx = edge_popup.scores_optimizer(optimizers.make_optimizer(
      config.train, schedules.make_schedule(config.train, 1)))
  state, counts, densities = strategy.initial_state(config, inner, tx, dataset)
  return state, counts, densities, inner


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
  workdir = tmp_path_factory.mktemp("edge_popup")
  return experiment.run(_config(), str(workdir)), workdir


def test_only_the_scores_train_and_each_layer_keeps_its_density(tiny_run):
  results, workdir = tiny_run
  config = _config()
  dataset = data.load(config.dataset)
  start, counts, densities, inner = _start(config, dataset)
  _, trained, _ = checkpoints.read_verified(str(workdir / "checkpoints" / "edge_popup"))
  # Every weight, bias and BatchNorm scale bit-identical to its init; the scores changed.
  jax.tree.map(np.testing.assert_array_equal, trained["params"]["weights"],
               jax.tree.map(np.asarray, start.params["weights"]))
  for before, after in zip(jax.tree.leaves(start.params["scores"]),
                           jax.tree.leaves(trained["params"]["scores"])):
    assert np.mean(np.asarray(before) != after) > 0.5
  # BatchNorm statistics still update in training.
  assert any(not np.array_equal(a, b) for a, b in zip(jax.tree.leaves(start.batch_stats),
                                                      jax.tree.leaves(trained["batch_stats"])))
  # Each layer keeps round(d_l * n_l) weights: the top scores, w * m in the saved model.
  _, model, _ = checkpoints.read_verified(str(workdir / "checkpoints" / "pretrain"))
  layers = {layer["name"]: layer for layer in results["layers"]}
  assert set(layers) == set(densities) == {n for n, _ in counts}
  flat = lambda tree: {"/".join(k): v for k, v in _flatten(tree)}
  scores, weights = flat(trained["params"]["scores"]), flat(trained["params"]["weights"])
  masks, effective = flat(model["masks"]), flat(model["params"])
  for name, density in densities.items():
    k = distributions.layer_counts([weights[name].shape], [density])[0]
    mask = _numpy_top_k(scores[name], k)
    assert layers[name]["alive"] == mask.sum() == k
    np.testing.assert_array_equal(masks[name], mask)
    np.testing.assert_array_equal(effective[name], weights[name] * mask)
  kept = sum(layers[n]["alive"] for n in layers)
  assert results["final"]["sparsity"] == 1 - kept / sum(layers[n]["size"] for n in layers)
  assert results["edge_popup"]["layer_densities"] == densities
  # The loss falls; the saved model, run by the plain network, is the one evaluated.
  losses = [r["train_loss"] for r in results["history"]]
  assert losses[-1] < losses[0] < 2.5
  plain = start.replace(params=model["params"], batch_stats=model["batch_stats"])
  test = Evaluator(inner, dataset, config.train.eval_batch_size).evaluate(plain, "test")
  assert test["accuracy"] == results["final"]["test_accuracy"]
  summary = export.export_run(str(workdir), str(workdir / "model.sms"))
  assert summary["sparsity"] == results["final"]["sparsity"]


def _flatten(tree, prefix=()):
  for key, value in tree.items():
    if isinstance(value, dict):
      yield from _flatten(value, prefix + (key,))
    else:
      yield prefix + (key,), value


def test_killed_edge_popup_run_resumes_identically(tiny_run, tmp_path, die_after_save):
  reference, _ = tiny_run
  die_after_save(lambda directory, step: directory == "edge_popup" and step == 1)
  with pytest.raises(KeyboardInterrupt):
    experiment.run(_config(), str(tmp_path))
  die_after_save.restore()
  resumed = experiment.run(_config(), str(tmp_path))
  assert without_times(resumed["history"]) == without_times(reference["history"])
  assert resumed["final"] == reference["final"]


def test_bad_edge_popup_configs_are_refused_in_one_line():
  for key, value, words in (("init_mask.distribution", "none", "allowed: uniform"),
                            ("init_mask.method", "snip", "allowed: random"),
                            ("edge_popup.init", "xavier", "signed_constant")):
    config = _config()
    config[key.split(".")[0]][key.split(".")[1]] = value
    with pytest.raises(config_lib.ConfigError) as error:
      config_lib.validate(config)
    message = str(error.value)
    assert "\n" not in message and key in message and words in message
  quick, full = edge_popup_mnist1d.get_config("quick"), edge_popup_mnist1d.get_config()
  config_lib.validate(quick)
  assert quick.strategy == full.strategy == "edge_popup" and quick.train.epochs <= 3
  assert full.init_mask.density == 0.5
