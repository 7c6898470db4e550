"""Calibration errors against hand-computed cases."""

import numpy as np
import pytest

from sms_jax import metrics


def _probs(confidences, num_classes=2):
  """Rows predicting class 0 with the given confidence."""
  c = np.asarray(confidences, np.float64)[:, None]
  return np.concatenate([c, np.repeat((1 - c) / (num_classes - 1), num_classes - 1, 1)], 1)


def test_overconfident_predictions():
  # Confidence 0.9 everywhere, half of them right: one bin, gap 0.4.
  probs = _probs([0.9] * 10)
  labels = np.array([0] * 5 + [1] * 5)
  ece, mce = metrics.calibration_errors(probs, labels)
  assert ece == pytest.approx(0.4) and mce == pytest.approx(0.4)


def test_two_bins_weighted_by_their_share():
  # 4 examples at 0.95 (all right: gap 0.05), 6 at 0.55 (3 right: gap 0.05 -> |0.5-0.55|).
  probs = _probs([0.95] * 4 + [0.55] * 6)
  labels = np.array([0] * 4 + [0, 0, 0, 1, 1, 1])
  ece, mce = metrics.calibration_errors(probs, labels)
  assert ece == pytest.approx(0.4 * 0.05 + 0.6 * 0.05)
  assert mce == pytest.approx(0.05)


def test_neighbouring_bins_are_kept_apart():
  # Confidences 10/15 and 11/15 fall into adjacent bins; pooled they would give ECE 0.2.
  probs = _probs([10 / 15] * 3 + [11 / 15] * 3)
  labels = np.array([0, 0, 0, 1, 1, 1])
  ece, mce = metrics.calibration_errors(probs, labels)
  assert ece == pytest.approx(0.5 * (1 - 10 / 15) + 0.5 * (11 / 15))
  assert mce == pytest.approx(11 / 15)


def test_evaluate_logits_accuracy_and_loss():
  logits = np.log(np.array([[0.7, 0.2, 0.1], [0.1, 0.1, 0.8], [0.5, 0.25, 0.25]]))
  labels = np.array([0, 1, 0])
  out = metrics.evaluate_logits(logits, labels)
  assert out["accuracy"] == pytest.approx(2 / 3)
  assert out["loss"] == pytest.approx(-(np.log(0.7) + np.log(0.1) + np.log(0.5)) / 3)
