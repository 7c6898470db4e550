"""Data: validation hold-out, standardisation, on-device batching and augmentation."""

import pathlib
import subprocess
import sys

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import default
from conftest import ROOT
from sms_jax import data
from sms_jax.data import device


def _split(n, shape=(4,)):
  x = np.arange(n * int(np.prod(shape)), dtype=np.float32).reshape(n, *shape)
  return data.Split(x, np.arange(n, dtype=np.int32) % 10)


def test_hold_out_is_disjoint_complete_and_deterministic():
  full = _split(1000)
  train, val = data.hold_out_validation(full, 0.1, seed=0)
  assert len(val.y) == 100 and len(train.y) == 900
  ids_train, ids_val = set(train.x[:, 0]), set(val.x[:, 0])
  assert not ids_train & ids_val
  assert ids_train | ids_val == set(full.x[:, 0])
  again_train, again_val = data.hold_out_validation(full, 0.1, seed=0)
  np.testing.assert_array_equal(again_val.x, val.x)
  np.testing.assert_array_equal(again_train.x, train.x)
  _, other_val = data.hold_out_validation(full, 0.1, seed=1)
  assert set(other_val.x[:, 0]) != ids_val


def test_standardize_uses_reference_statistics_per_channel():
  rng = np.random.default_rng(0)
  ref = rng.normal([1.0, -2.0, 5.0], [2.0, 0.5, 3.0], size=(500, 6, 6, 3))
  other = rng.normal(size=(10, 6, 6, 3))
  ref_z, other_z = data.standardize(ref, ref, other)
  assert ref_z.dtype == np.float32
  np.testing.assert_allclose(ref_z.mean((0, 1, 2)), 0.0, atol=1e-5)
  np.testing.assert_allclose(ref_z.std((0, 1, 2)), 1.0, atol=1e-5)
  expected = (other - ref.mean((0, 1, 2))) / ref.std((0, 1, 2))
  np.testing.assert_allclose(other_z, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name, shape", [("mnist1d", (40, 1)), ("digits", (8, 8, 1))])
def test_embedded_datasets(name, shape):
  config = default.get_config().dataset
  config.name = name
  ds = data.load(config)
  assert ds.input_shape == shape and ds.num_classes == 10 and ds.augment == "none"
  source = data.DATASETS[name]  # What the registry says without loading the data.
  assert (source.input_shape, source.num_classes) == (ds.input_shape, ds.num_classes)
  n_train_official = len(ds.train.y) + len(ds.val.y)
  assert len(ds.val.y) == round(0.1 * n_train_official)
  for split in (ds.train, ds.val, ds.test):
    assert split.x.dtype == np.float32 and split.y.dtype == np.int32
    assert set(np.unique(split.y)) <= set(range(10))
  # Train rows and val rows never coincide.
  train_rows = {r.tobytes() for r in ds.train.x}
  assert not any(r.tobytes() in train_rows for r in ds.val.x)
  again = data.load(config)
  np.testing.assert_array_equal(again.val.x, ds.val.x)


def test_epoch_batches_is_a_permutation_prefix():
  batches = device.epoch_batches(jax.random.key(0), 103, 10)
  chex.assert_shape(batches, (10, 10))
  flat = np.asarray(batches).ravel()
  assert len(set(flat)) == 100 and flat.max() < 103
  np.testing.assert_array_equal(batches, device.epoch_batches(jax.random.key(0), 103, 10))
  assert not np.array_equal(batches, device.epoch_batches(jax.random.key(1), 103, 10))


def test_random_crop_is_a_shifted_window_of_the_padded_image():
  images = jax.random.normal(jax.random.key(0), (16, 32, 32, 3))
  cropped = device.random_crop(jax.random.key(1), images)
  padded = np.pad(np.asarray(images), ((0, 0), (4, 4), (4, 4), (0, 0)))
  for img, out in zip(padded, np.asarray(cropped)):
    matches = [(i, j) for i in range(9) for j in range(9)
               if np.array_equal(img[i:i + 32, j:j + 32], out)]
    assert matches, "crop is not a 32x32 window of the padded image"
  unshifted = sum(np.array_equal(i, c) for i, c in zip(np.asarray(images), np.asarray(cropped)))
  assert unshifted < 4  # The offset is random: 1 in 81 crops is expected to be unshifted.


def test_random_flip_flips_about_half():
  images = jax.random.normal(jax.random.key(0), (400, 8, 8, 1))
  flipped = np.asarray(device.random_flip(jax.random.key(1), images))
  same = np.all(flipped == np.asarray(images), axis=(1, 2, 3))
  mirrored = np.all(flipped == np.asarray(images)[:, :, ::-1], axis=(1, 2, 3))
  assert np.all(same ^ mirrored)
  assert 150 < mirrored.sum() < 250


def test_augment_none_is_identity_and_unknown_kind_is_refused():
  x = jnp.ones((2, 40, 1))
  chex.assert_trees_all_equal(device.augment(jax.random.key(0), x, "none"), x)
  with pytest.raises(ValueError, match="unknown augmentation 'rotate'"):
    device.augment(jax.random.key(0), x, "rotate")


def test_cached_mnist1d_is_read_without_importing_its_generator():
  """Importing the generator package costs 1.5 s of every run: once cached, MNIST-1D is read
  without it (the same arrays as here)."""
  from sms_jax.data import sources  # pylint: disable=g-import-not-at-top
  train, test, _ = sources.DATASETS["mnist1d"].load("")  # Generates it if not yet cached.
  code = ("import sys; from sms_jax.data import sources; train, test, _ = "
          "sources.DATASETS['mnist1d'].load(''); import numpy as np; "
          "print('mnist1d' in sys.modules, float(np.sum(train.x)), int(np.sum(test.y)))")
  out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                       check=True, timeout=120).stdout.split()
  assert out == ["False", repr(float(np.sum(train.x))), str(int(np.sum(test.y)))]


def test_generated_data_is_cached_by_its_arguments_and_checked(tmp_path, monkeypatch):
  from sms_jax.data import cache  # pylint: disable=g-import-not-at-top
  monkeypatch.setenv("SMS_JAX_CACHE_DIR", str(tmp_path))
  calls = []

  def make(seed):
    calls.append(seed)
    return {"x": np.random.default_rng(seed).normal(size=(5, 3)).astype(np.float32),
            "y": np.arange(5, dtype=np.int32)}

  first = cache.cached("toy", {"seed": 1}, lambda: make(1))
  again = cache.cached("toy", {"seed": 1}, lambda: make(1))
  other = cache.cached("toy", {"seed": 2}, lambda: make(2))
  assert calls == [1, 2]  # The second call read the file.
  for name in first:
    np.testing.assert_array_equal(again[name], first[name])
    assert again[name].dtype == first[name].dtype
  assert not np.array_equal(other["x"], first["x"])
  path = pathlib.Path(cache.cache_path("toy", {"seed": 1}))
  assert path.parent == tmp_path and path.exists()
  path.write_bytes(path.read_bytes()[:100])  # Truncated: regenerated and replaced.
  np.testing.assert_array_equal(cache.cached("toy", {"seed": 1}, lambda: make(1))["x"],
                                first["x"])
  assert calls == [1, 2, 1]
  assert sorted(p.suffix for p in tmp_path.iterdir()) == [".npz", ".npz"]  # No temporaries.
