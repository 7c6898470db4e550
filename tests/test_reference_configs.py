"""The SMS reference's setup: its CIFAR-100 rotation augmentation and the sms_* configs."""

import functools
import types

import jax

jax.config.update("jax_disable_most_optimizations", True)

import chex  # pylint: disable=g-import-not-at-top
import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
import numpy as np  # pylint: disable=g-import-not-at-top
import pytest  # pylint: disable=g-import-not-at-top

from sms_jax import config as config_lib  # pylint: disable=g-import-not-at-top
from sms_jax import data, experiment  # pylint: disable=g-import-not-at-top
from sms_jax.configs import (  # pylint: disable=g-import-not-at-top
    sms_cifar10, sms_cifar100, sms_imagenet)
from sms_jax.data import device  # pylint: disable=g-import-not-at-top

_rotate = jax.jit(device.rotate)


def test_rotation_by_quarter_turns_is_rot90_and_by_zero_the_identity():
  """Counter-clockwise, as np.rot90 (and torchvision): exact, no interpolation."""
  image = np.random.default_rng(0).normal(size=(6, 6, 2)).astype(np.float32)
  out = np.asarray(_rotate(np.broadcast_to(image, (5, 6, 6, 2)),
                           jnp.array([0.0, 90.0, 180.0, -90.0, 270.0])))
  for got, k in zip(out, (0, 1, 2, -1, 3)):
    np.testing.assert_array_equal(got, np.rot90(image, k))
  wide = np.random.default_rng(1).normal(size=(1, 5, 9, 3)).astype(np.float32)
  np.testing.assert_array_equal(_rotate(wide, jnp.zeros(1)), wide)


@pytest.mark.parametrize("shape", [(32, 32), (9, 13)])
def test_rotation_matches_pillow_nearest_rotation(shape):
  """The reference's `transforms.RandomRotation(15)` rotates PIL images with
  `Image.rotate(angle, NEAREST)` (same size, black fill): the same pixels, angle by angle.
  (Angles chosen so that no source coordinate lies within 1e-3 of a rounding tie, where
  float32 and PIL's float64 could round differently.)"""
  image_lib = pytest.importorskip("PIL.Image")
  angles = (15.0, -11.0, 7.3, -13.7)
  images = np.random.default_rng(2).integers(1, 256, (len(angles), *shape, 3), dtype=np.uint8)
  out = np.asarray(_rotate(images.astype(np.float32), jnp.array(angles)))
  for image, angle, got in zip(images, angles, out):
    expected = np.asarray(image_lib.fromarray(image).rotate(angle, image_lib.NEAREST))
    np.testing.assert_array_equal(got, expected)
    assert (got == 0).all(axis=-1).any()  # Corners rotated in from outside: zero fill.


def _angle_of(rotated: np.ndarray) -> float:
  """The rotation (degrees, counter-clockwise) that moved each pixel of a coordinate image
  (channels: 1-based source row and column) to where it is: the least-squares angle between
  the pixels' source and destination offsets from the centre."""
  h, w, _ = rotated.shape
  rows, cols = np.nonzero(rotated[..., 0] > 0)
  src_rows, src_cols = rotated[rows, cols, 0] - 1, rotated[rows, cols, 1] - 1
  cy, cx = (h - 1) / 2, (w - 1) / 2
  src = np.stack([src_cols - cx, cy - src_rows], -1)  # x right, y up
  dst = np.stack([cols - cx, cy - rows], -1)
  cross = np.sum(src[:, 0] * dst[:, 1] - src[:, 1] * dst[:, 0])
  return float(np.degrees(np.arctan2(cross, np.sum(src * dst))))


def test_random_rotation_angles_are_uniform_within_15_degrees_and_follow_the_key():
  rows, cols = np.meshgrid(np.arange(33.0), np.arange(33.0), indexing="ij")
  coords = np.stack([rows + 1, cols + 1], -1).astype(np.float32)
  batch = np.broadcast_to(coords, (200, 33, 33, 2))
  random_rotate = jax.jit(device.random_rotate)
  out = np.asarray(random_rotate(jax.random.key(0), batch))
  angles = np.array([_angle_of(o) for o in out])
  assert np.abs(angles).max() < 15.5  # Estimated to within about 0.4 degrees.
  assert angles.min() < -13 and angles.max() > 13
  assert abs(angles.mean()) < 2.0  # Uniform on [-15, 15]: standard error 0.6.
  assert np.histogram(angles, bins=3, range=(-15.5, 15.5))[0].min() > 45  # About 67 each.
  np.testing.assert_array_equal(random_rotate(jax.random.key(0), batch), out)
  assert not np.array_equal(random_rotate(jax.random.key(1), batch), out)


def test_crop_flip_rotate_rotates_last_and_scans():
  """crop, flip, then rotation, as the reference's transforms; the crop and flip draw as in
  crop_flip; the augmentation runs inside lax.scan as the epoch engine runs it."""

  @jax.jit
  def run(key, x):
    augment = functools.partial(device.augment, inputs=x, kind="crop_flip_rotate")
    composed = device.random_rotate(jax.random.fold_in(key, 2),
                                    device.augment(key, x, "crop_flip"))
    step = lambda _, i: (None, augment(jax.random.fold_in(key, i)))
    scanned = jax.lax.scan(step, None, jnp.arange(2))[1]
    return augment(key), composed, scanned, augment(jax.random.fold_in(key, 1))

  direct, composed, scanned, second = run(jax.random.key(3),
                                          jax.random.normal(jax.random.key(0), (4, 12, 12, 3)))
  chex.assert_trees_all_equal(direct, composed)
  chex.assert_trees_all_equal(scanned[1], second)
  assert not np.array_equal(scanned[0], scanned[1])


def test_augmentations_need_images():
  """A 1-D dataset with an image augmentation is refused before any work (every kind but
  'none' is for images)."""
  config = sms_cifar100.get_config("quick")
  config.dataset.name = "mnist1d"
  config.model.name = "cnn1d"
  dataset = types.SimpleNamespace(input_shape=(40, 1), augment="crop_flip_rotate",
                                  num_classes=10)
  with pytest.raises(config_lib.ConfigError, match="dataset.augment = 'crop_flip_rotate'"):
    experiment.check_model_fits_data(config, dataset)


def _pretraining(config):
  t = config.train
  return (t.optimizer, t.learning_rate, t.schedule, t.warmup_epochs, t.momentum, t.nesterov,
          t.weight_decay, t.epochs, t.batch_size)


REFERENCE_CIFAR = ("sgd", 0.1, "linear", 0.0, 0.9, True, 1e-4, 200, 128)


def test_sms_cifar10_is_the_reference_resnet56_setting():
  config = sms_cifar10.get_config()
  assert (config.dataset.name, config.model.name, config.strategy) == (
      "cifar10", "resnet56", "sms")
  assert config.dataset.augment == "auto" and data.DATASETS["cifar10"].augment == "crop_flip"
  assert _pretraining(config) == REFERENCE_CIFAR
  assert (config.prune.selector, config.retrain.schedule, config.soup.vary) == (
      "global", "llr", "seed")
  for arg in ("resnet18", "vgg16", "resnet20"):
    assert sms_cifar10.get_config(arg).model.name == arg


def test_sms_cifar100_is_the_reference_wide_resnet_setting():
  config = sms_cifar100.get_config()
  assert (config.dataset.name, config.model.name) == ("cifar100", "wrn22_10_d0.3")
  assert config.dataset.augment == "crop_flip_rotate"
  assert data.DATASETS["cifar100"].augment == "crop_flip"  # 'auto' keeps its meaning.
  assert _pretraining(config) == REFERENCE_CIFAR
  assert sms_cifar100.get_config("wrn22_2_d0.3").model.name == "wrn22_2_d0.3"


def test_sms_imagenet_is_the_reference_resnet50_setting():
  config = sms_imagenet.get_config()
  assert (config.dataset.name, config.model.name, config.strategy) == (
      "imagenet2012", "resnet50", "sms")
  assert _pretraining(config) == ("sgd", 0.1, "linear", 0.0, 0.9, True, 1e-4, 90, 256)
  assert config.train.label_smoothing == 0.0


@pytest.mark.parametrize("module", [sms_cifar10, sms_cifar100, sms_imagenet])
def test_quick_variants_are_small_valid_sms_runs(module):
  full, quick = module.get_config(), module.get_config("quick")
  config_lib.validate(quick)
  assert quick.strategy == "sms" and quick.dataset.name == full.dataset.name
  assert quick.dataset.augment == full.dataset.augment
  assert 0 < quick.dataset.num_train <= 4096 and quick.train.epochs <= 2
  assert quick.prune.n_phases == 2 and quick.soup.m == 2 and quick.retrain.epochs_per_phase == 1
  assert quick.train.schedule == full.train.schedule == "linear"


@pytest.mark.parametrize("module,arg", [
    (sms_cifar10, "wrn22_2"), (sms_cifar10, "fast"), (sms_cifar100, "resnet56"),
    (sms_imagenet, "resnet18")])
def test_unknown_config_arguments_are_refused(module, arg):
  with pytest.raises(ValueError, match=f"unknown config argument '{arg}'; allowed: "):
    module.get_config(arg)


@pytest.mark.parametrize("module,arg", [(sms_cifar10, "resnet57"), (sms_cifar100, "wrn22_2_d1")])
def test_bad_model_arguments_fail_validation_naming_the_key(module, arg):
  with pytest.raises(config_lib.ConfigError, match=f"model.name = '{arg}'"):
    config_lib.validate(module.get_config(arg))

