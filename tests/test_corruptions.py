"""Corruptions of standardised inputs: shapes, determinism, severity order, invariants."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sms_jax.data import corruptions


KEY = jax.random.key(0)


def _inputs(shape, seed=0):
  return jnp.asarray(np.random.default_rng(seed).normal(size=shape), jnp.float32)


IMAGES = _inputs((4, 12, 10, 3))
SIGNALS = _inputs((4, 40, 1), seed=1)


@pytest.fixture(scope="module")
def image_splits():
  """Every corruption of IMAGES at every severity: {(name, severity): array}."""
  return {(name, s): corruptions.corrupt(KEY, IMAGES, name, s)
          for name in corruptions.CORRUPTIONS for s in corruptions.SEVERITIES}


def test_shapes_and_dtypes_are_kept(image_splits):
  for out in image_splits.values():
    assert out.shape == IMAGES.shape and out.dtype == jnp.float32
  for name, out in corruptions.corrupted_splits(KEY, SIGNALS).items():
    assert out.shape == SIGNALS.shape and out.dtype == jnp.float32, name


def test_deterministic_given_the_key(image_splits):
  again = corruptions.corrupted_splits(KEY, IMAGES)
  assert list(again) == list(corruptions.CORRUPTIONS)
  for i, name in enumerate(corruptions.CORRUPTIONS):
    expected = corruptions.corrupt(jax.random.fold_in(KEY, i), IMAGES, name)
    np.testing.assert_allclose(again[name], expected, atol=1e-6)
  other = corruptions.corrupt(jax.random.key(1), IMAGES, "gaussian_noise")
  assert not np.allclose(other, image_splits["gaussian_noise", 3])


@pytest.mark.parametrize("name", corruptions.CORRUPTIONS)
def test_stronger_severity_moves_the_data_further(image_splits, name):
  distances = [float(jnp.mean((image_splits[name, s] - IMAGES) ** 2))
               for s in corruptions.SEVERITIES]
  assert 0 < distances[0] and all(a < b for a, b in zip(distances, distances[1:])), distances


def test_signals_are_corrupted_along_their_length():
  blurred = corruptions.corrupt(KEY, SIGNALS, "gaussian_blur", 3)
  # Smoothing lowers the differences between neighbours.
  assert jnp.abs(jnp.diff(blurred, axis=1)).mean() < 0.5 * jnp.abs(jnp.diff(SIGNALS, axis=1)).mean()


@pytest.mark.parametrize("x", [IMAGES, SIGNALS], ids=["images", "signals"])
def test_blur_keeps_constants_up_to_the_borders(x):
  constant = jnp.broadcast_to(jnp.arange(x.shape[-1], dtype=jnp.float32) - 0.5, x.shape)
  blurred = corruptions.corrupt(KEY, constant, "gaussian_blur", 5)
  np.testing.assert_allclose(blurred, constant, atol=1e-5)


def test_blur_of_an_impulse_is_the_separable_kernel():
  x = jnp.zeros(IMAGES.shape).at[1, 6, 5, 2].set(1.0)  # IMAGES' shape: compiled already.
  sigma, r = 1.0, corruptions.BLUR_RADIUS  # sigma of severity 2
  taps = np.exp(-0.5 * (np.arange(-r, r + 1) / sigma) ** 2)
  taps /= taps.sum()
  # Pixel (i, j) gets the taps at offsets (i - 6, j - 5): the edges are 0, as is the padding.
  expected = np.outer(taps[r - 6:r + 6], taps[r - 5:r + 5])
  blurred = corruptions.corrupt(KEY, x, "gaussian_blur", 2)
  np.testing.assert_allclose(blurred[1, :, :, 2], expected, atol=1e-6)
  assert not jnp.any(blurred.at[1, :, :, 2].set(0.0))  # Nothing leaks across examples/channels.


def test_contrast_keeps_each_examples_mean(image_splits):
  for s in corruptions.SEVERITIES:
    out = image_splits["contrast", s]
    np.testing.assert_allclose(out.mean((1, 2)), IMAGES.mean((1, 2)), atol=1e-5)
    assert out.std() < IMAGES.std()


def test_impulse_noise_writes_the_channel_extremes(image_splits):
  out, x = image_splits["impulse_noise", 5], IMAGES
  changed = out != x
  lo, hi = x.min((0, 1, 2)), x.max((0, 1, 2))
  assert jnp.all((out == lo) | (out == hi) | ~changed)
  assert 0.1 < changed.mean() < 0.3  # About 20%.


def test_noise_stays_in_the_channel_range(image_splits):
  lo, hi = IMAGES.min((0, 1, 2)), IMAGES.max((0, 1, 2))
  for name in ("gaussian_noise", "shot_noise", "speckle_noise"):
    out = image_splits[name, 5]
    assert jnp.all((out >= lo) & (out <= hi)), name


def test_jit_with_static_name_and_severity():
  jitted = jax.jit(corruptions.corrupt, static_argnames=("name", "severity"))
  np.testing.assert_allclose(jitted(KEY, SIGNALS, name="speckle_noise", severity=2),
                             corruptions.corrupt(KEY, SIGNALS, "speckle_noise", 2), atol=1e-6)


@pytest.mark.parametrize("name,severity,message", [
    ("fog", 3, "unknown corruption 'fog'; allowed: gaussian_noise, "),
    ("contrast", 0, "severity must be an int in 1..5, got 0"),
    ("contrast", 6, "got 6"),
    ("contrast", True, "got True"),
])
def test_bad_names_and_severities(name, severity, message):
  with pytest.raises(ValueError, match=message):
    corruptions.corrupt(KEY, IMAGES, name, severity)
