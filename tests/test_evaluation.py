"""Evaluation as pure functions, against hand-computed cases: calibration errors, the
candidates, the best candidate, the ensemble, OOD sets, FLOPs, distances, sparsity records."""

import json

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sms_jax import evaluation, models, sparsity


def _probs(confidences, num_classes=2):
  """Rows predicting class 0 with the given confidence."""
  c = np.asarray(confidences, np.float64)[:, None]
  return np.concatenate([c, np.repeat((1 - c) / (num_classes - 1), num_classes - 1, 1)], 1)


def test_overconfident_predictions():
  # Confidence 0.9 everywhere, half of them right: one bin, gap 0.4.
  probs = _probs([0.9] * 10)
  labels = np.array([0] * 5 + [1] * 5)
  ece, mce = evaluation.calibration_errors(probs, labels)
  assert ece == pytest.approx(0.4) and mce == pytest.approx(0.4)


def test_two_bins_weighted_by_their_share():
  # 4 examples at 0.95 (all right: gap 0.05), 6 at 0.55 (3 right: gap 0.05 -> |0.5-0.55|).
  probs = _probs([0.95] * 4 + [0.55] * 6)
  labels = np.array([0] * 4 + [0, 0, 0, 1, 1, 1])
  ece, mce = evaluation.calibration_errors(probs, labels)
  assert ece == pytest.approx(0.4 * 0.05 + 0.6 * 0.05)
  assert mce == pytest.approx(0.05)


def test_neighbouring_bins_are_kept_apart():
  # Confidences 10/15 and 11/15 fall into adjacent bins; pooled they would give ECE 0.2.
  probs = _probs([10 / 15] * 3 + [11 / 15] * 3)
  labels = np.array([0, 0, 0, 1, 1, 1])
  ece, mce = evaluation.calibration_errors(probs, labels)
  assert ece == pytest.approx(0.5 * (1 - 10 / 15) + 0.5 * (11 / 15))
  assert mce == pytest.approx(11 / 15)


def test_evaluate_logits_accuracy_and_loss():
  logits = np.log(np.array([[0.7, 0.2, 0.1], [0.1, 0.1, 0.8], [0.5, 0.25, 0.25]]))
  labels = np.array([0, 1, 0])
  out = evaluation.evaluate_logits(logits, labels)
  assert out["accuracy"] == pytest.approx(2 / 3)
  assert out["loss"] == pytest.approx(-(np.log(0.7) + np.log(0.1) + np.log(0.5)) / 3)


class _ConvDense(nn.Module):
  """Conv 3x3 (2 -> 4 channels, stride 2, SAME) on 8x6 images, then Dense(5)."""

  @nn.compact
  def __call__(self, x, train: bool = False):
    x = nn.Conv(4, (3, 3), strides=(2, 2), padding="SAME", name="conv")(x)
    x = nn.BatchNorm(use_running_average=not train, name="bn")(x)
    return nn.Dense(5, name="dense")(x.reshape((x.shape[0], -1)))


def _conv_dense_variables():
  model = _ConvDense()
  return model, model.init(jax.random.key(0), jnp.zeros((1, 8, 6, 2)), train=False)


def test_layer_flops_match_the_formulas():
  model, variables = _conv_dense_variables()
  records = evaluation.layer_flops(model, variables, (8, 6, 2))
  # Stride 2, SAME: output 4x3. Conv: C_in*C_out*k_h*k_w*H_out*W_out; dense: in*out.
  conv, dense = 2 * 4 * 3 * 3 * 4 * 3, (4 * 3 * 4) * 5
  assert records == [{"name": "conv/kernel", "dense_flops": conv, "nonzero_flops": conv},
                     {"name": "dense/kernel", "dense_flops": dense, "nonzero_flops": dense}]
  assert evaluation.flops_summary(records) == {
      "dense": conv + dense, "nonzero": conv + dense, "theoretical_speedup": 1.0}


class _Conv1D(nn.Module):
  """Conv k=5 (2 -> 3 channels, stride 2, SAME) on signals of length 40."""

  @nn.compact
  def __call__(self, x, train: bool = False):
    return nn.Conv(3, (5,), strides=(2,), padding="SAME", name="conv")(x)


def test_layer_flops_of_a_1d_conv():
  variables = _Conv1D().init(jax.random.key(0), jnp.zeros((1, 40, 2)))
  records = evaluation.layer_flops(_Conv1D(), variables, (40, 2))
  assert records[0]["dense_flops"] == 2 * 3 * 5 * 20  # C_in * C_out * k * L_out


def test_zeroing_half_a_kernel_halves_its_nonzero_flops():
  model, variables = _conv_dense_variables()
  params = jax.tree.map(np.array, variables["params"])
  params["conv"]["kernel"][:, :, :, :2] = 0.0  # Half of the output channels.
  records = evaluation.layer_flops(model, {**variables, "params": params}, (8, 6, 2))
  conv, dense = records
  assert conv["nonzero_flops"] * 2 == conv["dense_flops"]
  assert dense["nonzero_flops"] == dense["dense_flops"]
  total = conv["dense_flops"] + dense["dense_flops"]
  assert evaluation.flops_summary(records)["theoretical_speedup"] == pytest.approx(
      total / (conv["dense_flops"] / 2 + dense["dense_flops"]))


def test_flops_summary_without_nonzero_flops_is_json_safe():
  summary = evaluation.flops_summary([{"name": "k", "dense_flops": 10, "nonzero_flops": 0}])
  assert summary == {"dense": 10, "nonzero": 0, "theoretical_speedup": None}
  json.dumps(summary, allow_nan=False)


def test_candidate_distances_against_numpy():
  rng = np.random.default_rng(0)
  stack = {"a": rng.normal(size=(3, 4, 5)), "b": {"c": rng.normal(size=(3, 7))}}
  soup = jax.tree.map(lambda w: w.mean(0), stack)
  flat = np.concatenate([stack["a"].reshape(3, -1), stack["b"]["c"]], 1)
  out = evaluation.candidate_distances(stack, soup)
  json.dumps(out, allow_nan=False)
  for i in range(3):
    assert out["to_soup_l2"][i] == pytest.approx(np.linalg.norm(flat[i] - flat.mean(0)))
    for j in range(3):
      assert out["pairwise_l2"][i][j] == pytest.approx(np.linalg.norm(flat[i] - flat[j]))
      cosine = flat[i] @ flat[j] / np.linalg.norm(flat[i]) / np.linalg.norm(flat[j])
      expected = 0.0 if i == j else np.degrees(np.arccos(cosine))
      assert out["pairwise_angle_deg"][i][j] == pytest.approx(expected, abs=1e-9)


def test_candidate_angles_of_known_vectors():
  # Split over two leaves: e1, e2 (orthogonal), -e1 (opposite), 2*e1 + 2*e2 (45 degrees).
  stack = {"x": np.array([[1.0], [0.0], [-1.0], [2.0]]),
           "y": jnp.array([[0.0, 0.0], [1.0, 0.0], [0.0, 0.0], [2.0, 0.0]])}
  soup = {"x": np.zeros(1), "y": np.zeros(2)}
  out = evaluation.candidate_distances(stack, soup)
  angles = np.array(out["pairwise_angle_deg"])
  np.testing.assert_allclose(angles[0], [0, 90, 180, 45], atol=1e-6)
  np.testing.assert_allclose(angles[1], [90, 0, 90, 45], atol=1e-6)
  np.testing.assert_allclose(out["to_soup_l2"], [1, 1, 1, np.sqrt(8)])
  assert out["pairwise_l2"][0][2] == pytest.approx(2.0)


def test_candidate_angles_of_nearly_equal_vectors_are_finite():
  w = np.random.default_rng(1).normal(size=1000)
  stack = {"w": np.stack([w, w * (1 + 1e-12)])}  # Cosine rounds above 1 without clipping.
  out = evaluation.candidate_distances(stack, {"w": w})
  assert out["pairwise_angle_deg"][0][1] == pytest.approx(0.0, abs=1e-4)


def test_candidates_best_ensemble_and_ood_of_scripted_logits():
  labels = np.array([0, 1, 2, 0])
  # Three candidates; the second alone gets everything right, the first half, the last one.
  logits = np.array([[[5, 0, 0], [5, 0, 0], [0, 0, 5], [0, 5, 0]],
                     [[2, 0, 0], [0, 2, 0], [0, 0, 2], [2, 0, 0]],
                     [[0, 0, 9], [0, 9, 0], [9, 0, 0], [0, 0, 9]]], np.float32)
  assert evaluation.candidate_accuracies(logits, labels) == [0.5, 1.0, 0.25]
  assert evaluation.best_candidate([0.3, 0.8, 0.8]) == 1  # The first of equals.
  # Mean probabilities: example 0 -> class 0 (0.67 + 0.78 + 0.0) vs class 2 (1.0 + ...).
  probs = np.mean([np.exp(l) / np.exp(l).sum(-1, keepdims=True) for l in logits.astype(float)], 0)
  np.testing.assert_allclose(evaluation.ensemble_probabilities(logits), probs, rtol=1e-12)
  expected = float((probs.argmax(-1) == labels).mean())
  assert evaluation.ensemble_accuracy(logits, labels) == expected
  assert expected not in (0.5, 1.0, 0.25)  # A single candidate standing in would show.
  assert evaluation.ood_accuracies({"a": logits[0], "b": logits[1]},
                                   {"a": labels, "b": labels}) == {"a": 0.5, "b": 1.0}


def test_sparsity_record_counts_the_masks_and_the_values():
  model = models.create_model("cnn1d", 10)
  paths = models.param_paths(model, (40, 1))
  params = model.init(jax.random.key(0), jnp.zeros((1, 40, 1)))["params"]
  masks = sparsity.prune(params, sparsity.create_masks(params), 0.8)
  params = sparsity.apply_masks(params, masks)
  alive_entry = tuple(np.argwhere(np.asarray(masks["dense"]["kernel"]))[0])
  params["dense"]["kernel"] = params["dense"]["kernel"].at[alive_entry].set(0.0)  # Alive, 0.
  record = evaluation.sparsity_record(params, masks, paths)
  layers = {l["name"]: l for l in record["layers"]}
  assert list(layers) == ["conv0/kernel", "conv1/kernel", "conv2/kernel", "dense/kernel",
                          "classifier/kernel"]
  size = sum(l["size"] for l in layers.values())
  assert sum(l["alive"] for l in layers.values()) == round(0.2 * size)
  assert record["sparsity"] == 1 - round(0.2 * size) / size  # From the masks.
  dense = layers["dense/kernel"]
  assert dense["nonzero"] <= dense["alive"] - 1
  total = sum(x.size for x in jax.tree.leaves(params))
  assert record["sparsity_all"] == pytest.approx((size - round(0.2 * size)) / total)
