"""Corruptions for the OOD sets: CIFAR-10-C's published parameters and operations (images, in
pixel space), the 1-D signals' analogues, the OOD sets built from them, and their config keys."""

import io

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sms_jax import config as config_lib
from sms_jax.configs import default
from sms_jax.data import corruptions, image_corruptions as ic, image_ops
from sms_jax.data import signal_corruptions, spatter
from sms_jax.data.arrays import Split, standardization_stats, standardize_with
from sms_jax.data.dataset import Dataset

KEY = jax.random.key(0)

# make_cifar_c.py (github.com/hendrycks/robustness, ImageNet-C/create_c/make_cifar_c.py), the
# `c` list of each corruption, severities 1..5, read off the published file.
PUBLISHED = {
    "gaussian_noise": [0.04, 0.06, .08, .09, .10],
    "shot_noise": [500, 250, 100, 75, 50],
    "impulse_noise": [.01, .02, .03, .05, .07],
    "speckle_noise": [.06, .1, .12, .16, .2],
    "gaussian_blur": [.4, .6, 0.7, .8, 1],
    "glass_blur": [(0.05, 1, 1), (0.25, 1, 1), (0.4, 1, 1), (0.25, 1, 2), (0.4, 1, 2)],
    "defocus_blur": [(0.3, 0.4), (0.4, 0.5), (0.5, 0.6), (1, 0.2), (1.5, 0.1)],
    "motion_blur": [(6, 1), (6, 1.5), (6, 2), (8, 2), (9, 2.5)],
    "zoom_blur": [1.06, 1.11, 1.16, 1.21, 1.26],  # np.arange(1, stop, 0.01)
    "fog": [(.2, 3), (.5, 3), (0.75, 2.5), (1, 2), (1.5, 1.75)],
    "snow": [(0.1, 0.2, 1, 0.6, 8, 3, 0.95), (0.1, 0.2, 1, 0.5, 10, 4, 0.9),
             (0.15, 0.3, 1.75, 0.55, 10, 4, 0.9), (0.25, 0.3, 2.25, 0.6, 12, 6, 0.85),
             (0.3, 0.3, 1.25, 0.65, 14, 12, 0.8)],
    "spatter": [(0.62, 0.1, 0.7, 0.7, 0.5, 0), (0.65, 0.1, 0.8, 0.7, 0.5, 0),
                (0.65, 0.3, 1, 0.69, 0.5, 0), (0.65, 0.1, 0.7, 0.69, 0.6, 1),
                (0.65, 0.1, 0.5, 0.68, 0.6, 1)],
    "contrast": [.75, .5, .4, .3, 0.15],
    "brightness": [.05, .1, .15, .2, .3],
    "saturate": [(0.3, 0), (0.1, 0), (1.5, 0), (2, 0.1), (2.5, 0.2)],
    "jpeg_compression": [80, 65, 58, 50, 40],
    "pixelate": [0.95, 0.9, 0.85, 0.75, 0.65],
    # IMSIZE * (alpha, sigma, affine), IMSIZE = 32.
    "elastic_transform": [(32 * 0, 32 * 0, 32 * 0.08), (32 * 0.05, 32 * 0.2, 32 * 0.07),
                          (32 * 0.08, 32 * 0.06, 32 * 0.06), (32 * 0.1, 32 * 0.04, 32 * 0.05),
                          (32 * 0.1, 32 * 0.03, 32 * 0.03)],
}
# The published order of the generated files: the 15 benchmark corruptions, then 4 extra ones.
PUBLISHED_ORDER = ("gaussian_noise", "shot_noise", "impulse_noise", "defocus_blur", "glass_blur",
                   "motion_blur", "zoom_blur", "snow", "frost", "fog", "brightness", "contrast",
                   "elastic_transform", "pixelate", "jpeg_compression", "speckle_noise",
                   "gaussian_blur", "spatter", "saturate")


def _images(n=3, h=32, w=32):
  """Smooth RGB test images `[n, h, w, 3]` float32 in [0, 1]: waves and a disc."""
  i, j = np.meshgrid(np.linspace(0, 1, h), np.linspace(0, 1, w), indexing="ij")
  out = []
  for k in range(n):
    red = 0.5 + 0.35 * np.sin(2 * np.pi * (i * (k + 1) + 0.3 * j))
    green = 0.5 + 0.35 * np.cos(2 * np.pi * j * (k + 2))
    blue = np.where((i - 0.5) ** 2 + (j - 0.4) ** 2 < 0.08, 0.9, 0.2)
    out.append(np.stack([red, green, blue], -1))
  return np.asarray(out, np.float32)


IMAGES = _images()


@pytest.fixture(scope="module")
def corrupted():
  """Every image corruption of IMAGES at every severity, one key: {(name, severity): array}."""
  return {(name, s): ic.corrupt(KEY, IMAGES, name, s)
          for name in ic.CORRUPTIONS for s in ic.SEVERITIES}


def test_parameters_are_the_published_ones():
  assert ic.CORRUPTIONS + tuple(ic.LEFT_OUT) == tuple(
      n for n in PUBLISHED_ORDER if n != "frost") + ("frost",)
  assert set(ic.PARAMETERS) == set(PUBLISHED)
  for name, published in PUBLISHED.items():
    ours = ic.PARAMETERS[name]
    if name == "elastic_transform":
      ours = [tuple(ic.CIFAR_SIDE * p for p in params) for params in ours]
    assert [tuple(np.atleast_1d(p)) for p in ours] == [tuple(np.atleast_1d(p))
                                                       for p in published], name
  # zoom_blur's factors: np.arange's float rounding keeps the stop for 1.06 and 1.11 only.
  factors = [ic.zoom_factors(stop) for stop in ic.PARAMETERS["zoom_blur"]]
  assert [len(f) for f in factors] == [7, 12, 16, 21, 26]
  np.testing.assert_allclose([f[-1] for f in factors], [1.06, 1.11, 1.15, 1.20, 1.25])


def test_every_corruption_keeps_shape_dtype_and_range(corrupted):
  for (name, s), out in corrupted.items():
    assert out.shape == IMAGES.shape and out.dtype == np.float32, (name, s)
    assert 0 <= out.min() and out.max() <= 1, (name, s)
    assert np.abs(out - IMAGES).mean() > 1e-3, (name, s)  # Really corrupted.


@pytest.mark.parametrize("shape", [(2, 8, 8, 1), (2, 28, 20, 3)], ids=["grey8", "rgb28x20"])
def test_other_sizes_and_grey_images(shape):
  x = np.random.default_rng(1).random(shape)  # float64 in, float64 out.
  for name in ic.CORRUPTIONS:
    out = ic.corrupt(KEY, x, name, 3)
    assert out.shape == shape and out.dtype == np.float64, name
    assert 0 <= out.min() and out.max() <= 1, name


def test_deterministic_given_the_key(corrupted):
  for name in ("gaussian_noise", "glass_blur", "spatter"):
    np.testing.assert_array_equal(ic.corrupt(KEY, IMAGES, name, 3), corrupted[name, 3])
    assert not np.array_equal(ic.corrupt(jax.random.key(1), IMAGES, name, 3), corrupted[name, 3])


# Mean absolute change grows with the severity label, except where the published parameters
# do not order it: elastic_transform's affine part shrinks as its elastic part grows, spatter
# turns from water (1-3) to mud (4-5), saturate desaturates (1-2) then saturates (3-5).
# glass_blur 1 ~ 2 and motion_blur 3 ~ 4 (8 vs 6 taps of a sigma-2 Gaussian) nearly tie.
NOT_ORDERED = ("elastic_transform", "spatter", "saturate")
NEARLY_TIED = ("glass_blur", "motion_blur")


@pytest.mark.parametrize("name", [n for n in ic.CORRUPTIONS if n not in NOT_ORDERED])
def test_stronger_severity_changes_more(corrupted, name):
  change = [np.abs(corrupted[name, s] - IMAGES).mean() for s in ic.SEVERITIES]
  slack = 1e-3 if name in NEARLY_TIED else 0.0
  assert all(a < b + slack for a, b in zip(change, change[1:])), change


def test_gaussian_noise_statistics():
  grey = np.full((8, 32, 32, 3), 0.5, np.float32)
  for s, sigma in zip(ic.SEVERITIES, PUBLISHED["gaussian_noise"]):
    noise = ic.corrupt(KEY, grey, "gaussian_noise", s) - 0.5  # 5 sigma < 0.5: never clipped.
    assert abs(noise.mean()) < 0.003 and noise.std() == pytest.approx(sigma, rel=0.02)


def test_shot_and_impulse_noise_statistics():
  grey = np.full((8, 32, 32, 3), 0.5, np.float32)
  shot = ic.corrupt(KEY, grey, "shot_noise", 3)  # Poisson(50) / 100: variance 0.5 / 100.
  assert shot.mean() == pytest.approx(0.5, abs=0.003)
  assert shot.var() == pytest.approx(0.5 / 100, rel=0.05)
  impulse = ic.corrupt(KEY, grey, "impulse_noise", 5)
  assert set(np.unique(impulse)) == {0.0, 0.5, 1.0}
  assert (impulse != 0.5).mean() == pytest.approx(0.07, abs=0.008)
  assert (impulse == 1).mean() == pytest.approx(0.035, abs=0.006)


def test_contrast_formula(corrupted):
  for s, factor in zip(ic.SEVERITIES, PUBLISHED["contrast"]):
    means = IMAGES.astype(np.float64).mean((1, 2), keepdims=True)
    expected = np.clip((IMAGES - means) * factor + means, 0, 1)
    np.testing.assert_allclose(corrupted["contrast", s], expected, atol=1e-6)


def test_hsv_corruptions_match_matplotlibs_hsv(corrupted):
  colors = pytest.importorskip("matplotlib.colors")
  hsv = colors.rgb_to_hsv(IMAGES.astype(np.float64))
  for s in ic.SEVERITIES:
    bright = hsv.copy()
    bright[..., 2] = np.clip(bright[..., 2] + PUBLISHED["brightness"][s - 1], 0, 1)
    np.testing.assert_allclose(corrupted["brightness", s], colors.hsv_to_rgb(bright), atol=1e-6)
    scale, shift = PUBLISHED["saturate"][s - 1]
    saturated = hsv.copy()
    saturated[..., 1] = np.clip(saturated[..., 1] * scale + shift, 0, 1)
    np.testing.assert_allclose(corrupted["saturate", s], colors.hsv_to_rgb(saturated), atol=1e-6)


def test_pixelate_is_pillows_box_down_and_up_sampling():
  image_module = pytest.importorskip("PIL.Image")
  pixels = np.round(IMAGES.astype(np.float64) * 255).astype(np.uint8)
  for s, factor in zip(ic.SEVERITIES, PUBLISHED["pixelate"]):
    side = int(32 * factor)
    out = ic.corrupt(KEY, pixels / 255.0, "pixelate", s)
    for i, image in enumerate(pixels):
      small = image_module.fromarray(image).resize((side, side), image_module.BOX)
      expected = np.asarray(small.resize((32, 32), image_module.BOX))
      np.testing.assert_array_equal(np.round(out[i] * 255), expected)
  # Independently of Pillow: halving a checkerboard of 2x2 blocks gives the blocks' values,
  # doubling it back the board.
  cells = (np.indices((4, 4)).sum(0) % 2 * 255).astype(np.uint8)[None, :, :, None]
  board = np.kron(cells, np.ones((1, 2, 2, 1), np.uint8))
  np.testing.assert_array_equal(image_ops.box_resize(board, 4, 4), cells)
  np.testing.assert_array_equal(image_ops.box_resize(cells, 8, 8), board)


def test_gaussian_blur_of_an_impulse_is_the_sampled_gaussian():
  x = np.zeros((1, 32, 32, 3))
  x[0, 16, 16, 1] = 1.0
  out = ic.corrupt(KEY, x, "gaussian_blur", 5)  # sigma 1, truncated at 4 sigma.
  taps = np.exp(-np.arange(-4, 5) ** 2 / 2.0)
  taps /= taps.sum()
  np.testing.assert_allclose(out[0, 12:21, 12:21, 1], np.outer(taps, taps), atol=1e-12)
  assert out[0, ..., 0].max() == 0 and out[0, ..., 2].max() == 0


def test_defocus_kernel_at_severity_1_is_a_3x3_gaussian():
  taps = np.exp(-np.arange(-1, 2) ** 2 / (2 * 0.4 ** 2))  # radius 0.3: the disk is 1 pixel.
  taps /= taps.sum()
  np.testing.assert_allclose(image_ops.disk_kernel(0.3, 0.4), np.outer(taps, taps), atol=1e-7)
  for radius, blur in PUBLISHED["defocus_blur"]:
    kernel = image_ops.disk_kernel(radius, blur)
    assert kernel.sum() == pytest.approx(1, abs=1e-6) and np.allclose(kernel, kernel.T)


def test_clipped_zoom_matches_scipys_zoom():
  from scipy import ndimage  # pylint: disable=g-import-not-at-top
  x = IMAGES[:1].astype(np.float64)
  for factor in list(ic.zoom_factors(1.26)[1:]) + [1.75, 2.25]:
    crop = int(np.ceil(32 / factor))
    top = (32 - crop) // 2
    zoomed = ndimage.zoom(x[0, top:top + crop, top:top + crop], (factor, factor, 1), order=1)
    trim = (zoomed.shape[0] - 32) // 2
    np.testing.assert_allclose(image_ops.clipped_zoom(x, factor)[0],
                               zoomed[trim:trim + 32, trim:trim + 32], atol=1e-12)


def test_motion_blur_of_an_impulse_matches_imagemagick():
  x = np.zeros((1, 32, 32, 1))
  x[0, 16, 16] = 1.0
  out = np.round(image_ops.motion_blur(x, 6, 2, np.array([0.0]))[0, ..., 0] * 255)
  # ImageMagick 6.9.11 (Q16), MotionBlurImage(radius 6, sigma 2, angle 0) of this image read
  # back from PNG, as make_cifar_c calls it through Wand: the taps trail to the left.
  np.testing.assert_array_equal(out[16, 10:17], [0, 3, 11, 27, 51, 74, 84])
  out[16, 10:17] = 0
  assert not out.any()


def test_glass_shuffle_is_the_published_loop():
  """The published loop "swaps" with numpy views, i.e. copies the neighbour; replayed here
  pixel by pixel with the same offsets."""
  rng = np.random.default_rng(0)
  x = rng.random((2, 8, 8, 3))
  offsets = rng.integers(-1, 1, size=(2, 6, 6, 2))
  expected = x.copy()
  for n in range(2):
    image = expected[n]
    for a, h in enumerate(range(7, 1, -1)):
      for b, w in enumerate(range(7, 1, -1)):
        dx, dy = offsets[n, a, b]
        image[h, w], image[h + dy, w + dx] = image[h + dy, w + dx], image[h, w]
  np.testing.assert_array_equal(ic.glass_shuffle(x, offsets), expected)


def test_warp_affine_translation_and_identity():
  x = IMAGES[:1].astype(np.float64)
  identity = np.array([[[1.0, 0, 0], [0, 1.0, 0]]])
  np.testing.assert_allclose(image_ops.warp_affine(x, identity), x, atol=1e-12)
  shift = np.array([[[1.0, 0, -1.5], [0, 1.0, 0]]])  # Destination x samples source x + 1.5.
  out = image_ops.warp_affine(x, shift)
  np.testing.assert_allclose(out[0, :, :29], (x[0, :, 1:30] + x[0, :, 2:31]) / 2, atol=1e-12)
  # Beyond the border, mirrored (OpenCV's BORDER_REFLECT_101): columns 32, 33 are 30, 29.
  np.testing.assert_allclose(out[0, :, 30], (x[0, :, 31] + x[0, :, 30]) / 2, atol=1e-12)
  np.testing.assert_allclose(out[0, :, 31], (x[0, :, 30] + x[0, :, 29]) / 2, atol=1e-12)
  source = np.float32([[26, 26], [26, 6], [6, 6]])
  np.testing.assert_allclose(image_ops.affine_from_points(source, source + [2, -1]),
                             [[1, 0, 2], [0, 1, -1]], atol=1e-12)


def test_spatters_opencv_stand_ins():
  step = np.zeros((1, 12, 12), np.uint8)
  step[:, :, 6:] = 200
  edges = spatter.canny(step, 50, 150)
  assert edges[0, :, 5:7].any(axis=1).all() and not edges[0, :, :4].any()
  zero = np.zeros((1, 9, 9), bool)
  zero[0, 4, 4] = True
  dist = spatter.chamfer_distance(zero, 20)[0]
  assert dist[4, 5] == 1 and dist[5, 5] == np.float32(91750 / 65536)  # round(1.4 * 2**16)
  assert dist[5, 6] == np.float32(round(2.1969 * 65536) / 65536)  # A knight's move.
  assert dist[4, 8] == 4
  assert (spatter.chamfer_distance(np.zeros((1, 5, 5), bool), 20) == 20).all()
  two_levels = np.array([[[3, 3, 9, 9]]], np.uint8)
  np.testing.assert_array_equal(spatter.equalize_hist(two_levels), [[[0, 0, 255, 255]]])


@pytest.mark.parametrize("name,severity,message", [
    ("frost", 3, "frost is left out: blends in the published frost photographs"),
    ("fog", 0, "severity must be an int in 1..5, got 0"),
    ("fog", True, "got True"),
])
def test_bad_names_and_severities(name, severity, message):
  with pytest.raises(ValueError, match=message):
    ic.corrupt(KEY, IMAGES, name, severity)
  with pytest.raises(ValueError, match=r"images must be \[n, h, w, c\] with c = 1 or 3"):
    ic.corrupt(KEY, IMAGES[..., :2], "fog", 3)


# --- The OOD sets --------------------------------------------------------------------------


def _image_dataset(n=6):
  """A dataset of 8-bit RGB images standardised as TFDS images are (`pixel_max` 255)."""
  raw = np.round(_images(n) * 255).astype(np.uint8)
  labels = np.arange(n, dtype=np.int32) % 3
  stats = standardization_stats(raw)
  split = Split(standardize_with(stats, raw)[0], labels)
  return Dataset("images", split, split, split, 3, "none", standardization=stats,
                 pixel_max=255.0), raw


def test_image_ood_sets_are_corrupted_in_pixel_space():
  dataset, raw = _image_dataset()
  sets = corruptions.ood_sets(dataset, 3, KEY, "contrast,gaussian_noise")
  assert list(sets) == ["contrast", "gaussian_noise"]
  for name, split in sets.items():
    key = jax.random.fold_in(KEY, ic.CORRUPTIONS.index(name))
    pixels = np.floor(ic.corrupt(key, raw / 255.0, name, 3) * 255 + 1e-6)  # CIFAR-C's uint8.
    expected = standardize_with(dataset.standardization, pixels)[0]
    np.testing.assert_allclose(split.x, expected, atol=1e-5)
    assert split.x.dtype == np.float32
    np.testing.assert_array_equal(split.y, dataset.test.y)


def test_severity_all_holds_the_five_severities_in_turn():
  dataset, _ = _image_dataset()
  every = corruptions.ood_sets(dataset, "all", KEY, "impulse_noise")["impulse_noise"]
  n = dataset.test.num_examples
  assert every.x.shape == (5 * n, 32, 32, 3)
  np.testing.assert_array_equal(every.y, np.tile(dataset.test.y, 5))
  for s in ic.SEVERITIES:  # One key per corruption at every severity.
    one = corruptions.ood_sets(dataset, s, KEY, "impulse_noise")["impulse_noise"]
    np.testing.assert_array_equal(every.x[(s - 1) * n:s * n], one.x)


def test_loaded_datasets_know_their_pixel_range():
  import ml_collections  # pylint: disable=g-import-not-at-top
  from sms_jax import data  # pylint: disable=g-import-not-at-top
  digits = data.load(ml_collections.ConfigDict(dict(
      name="digits", data_dir="", val_fraction=0.1, augment="auto", num_train=0)))
  assert digits.pixel_max == 1.0  # Stored in [0, 1]: 16 grey levels / 16.
  raw = digits.test.x * digits.standardization[1] + digits.standardization[0]
  assert -1e-5 < raw.min() and raw.max() < 1 + 1e-5 and raw.max() > 0.9
  sets = corruptions.ood_sets(digits, 5, KEY, "contrast")
  expected = corruptions.corrupt_standardized(
      jax.random.fold_in(KEY, ic.CORRUPTIONS.index("contrast")), digits.test.x, "contrast", 5,
      digits.standardization, 1.0)
  np.testing.assert_array_equal(sets["contrast"].x, expected)
  # Contrast 0.15 in pixel space: each image's spread shrinks to 0.15 of itself.
  np.testing.assert_allclose(sets["contrast"].x.std((1, 2)), 0.15 * digits.test.x.std((1, 2)),
                             rtol=1e-4, atol=1e-5)


def test_signal_ood_sets_keep_their_analogues():
  x = np.random.default_rng(0).normal(size=(16, 40, 1)).astype(np.float32)
  split = Split(x, np.zeros(16, np.int32))
  dataset = Dataset("signals", split, split, split, 10, "none")
  sets = corruptions.ood_sets(dataset, 2, KEY)
  assert list(sets) == list(corruptions.CORRUPTIONS)
  for name, out in sets.items():
    i = signal_corruptions.CORRUPTIONS.index(name)
    expected = signal_corruptions.corrupt(jax.random.fold_in(KEY, i), x, name, 2)
    np.testing.assert_allclose(out.x, expected, atol=1e-6)
  assert corruptions.ood_sets(dataset, 0, KEY) == {}


def test_signal_ood_sets_are_cached_by_all_they_depend_on(tmp_path, monkeypatch):
  """The second call reads the sets (the corruptions are not run again); another key, another
  test set or changed corruption code generates them anew."""
  monkeypatch.setenv("SMS_JAX_CACHE_DIR", str(tmp_path))
  x = np.random.default_rng(1).normal(size=(8, 40, 1)).astype(np.float32)
  dataset = lambda x: Dataset("signals", Split(x, np.zeros(8, np.int32)),
                              Split(x, np.zeros(8, np.int32)),
                              Split(x, np.zeros(8, np.int32)), 10, "none")
  first = corruptions.ood_sets(dataset(x), 2, KEY, "gaussian_noise,contrast")
  assert len(list(tmp_path.iterdir())) == 1
  real_corrupt, calls = signal_corruptions.corrupt, []

  def counted(*args):
    calls.append(args[2])
    return real_corrupt(*args)

  monkeypatch.setattr(signal_corruptions, "corrupt", counted)
  again = corruptions.ood_sets(dataset(x), 2, KEY, "gaussian_noise,contrast")
  assert calls == [] and list(again) == ["gaussian_noise", "contrast"]
  for name in first:
    np.testing.assert_array_equal(again[name].x, first[name].x)
  other_key = corruptions.ood_sets(dataset(x), 2, jax.random.key(7), "gaussian_noise")
  assert calls == ["gaussian_noise"]
  assert not np.array_equal(other_key["gaussian_noise"].x, first["gaussian_noise"].x)
  corruptions.ood_sets(dataset(x + 1.0), 2, KEY, "gaussian_noise")
  assert calls == ["gaussian_noise"] * 2
  edited = tmp_path / "edited_signal_corruptions.py"
  edited.write_text(open(signal_corruptions.__file__).read() + "\n# edited\n")
  monkeypatch.setattr(signal_corruptions, "__file__", str(edited))
  corruptions.ood_sets(dataset(x), 2, KEY, "gaussian_noise,contrast")
  assert calls == ["gaussian_noise"] * 3 + ["contrast"]


def test_selection():
  assert corruptions.selection("default", True) == corruptions.CORRUPTIONS
  assert corruptions.selection("all", True) == ic.CORRUPTIONS
  assert corruptions.selection("all", False) == signal_corruptions.CORRUPTIONS
  assert corruptions.selection(" fog, snow", True) == ("fog", "snow")
  for bad in ("fog,fog", "", "frost", "gaussian_noise,"):
    assert not corruptions.selection_ok(bad)
  assert not corruptions.selection_ok("fog", images=False)


def test_config_severity_all_and_bad_values():
  config = default.get_config()
  config.ood.severity = "all"  # The untyped field takes a string.
  config_lib.validate(config)
  for bad, shown in ((6, "6"), ("some", "'some'"), (2.5, "2.5"), (True, "True")):
    config.ood.severity = bad
    with pytest.raises(config_lib.ConfigError) as error:
      config_lib.validate(config)
    assert str(error.value) == (
        f"config key ood.severity = {shown} is not allowed; allowed: an integer in 0..5 "
        "(0: no OOD evaluation) or 'all' (the mean over 1..5)")


def test_config_corruptions():
  config = default.get_config()  # MNIST-1D: 1-D signals.
  config.ood.corruptions = "all"
  config_lib.validate(config)
  config.ood.corruptions = "fog"  # An image corruption.
  with pytest.raises(config_lib.ConfigError, match=r"^config key ood.corruptions = 'fog' is "
                     r"not allowed for data of shape \(40, 1\) \(1-D signals\); allowed: "
                     "default, all, or comma-separated names among gaussian_noise, "):
    config_lib.validate(config)
  config.ood.corruptions = "fog,blur"
  with pytest.raises(config_lib.ConfigError, match="^config key ood.corruptions = 'fog,blur' "
                     "is not allowed; allowed: default, all, or comma-separated names among "):
    config_lib.validate(config)
  config.dataset.name, config.ood.corruptions = "cifar10", "all"  # Images: all 18.
  config_lib.validate(config)


def test_jpeg_without_pillow_is_refused_with_one_line(monkeypatch):
  assert corruptions.config_error("fog,jpeg_compression", (32, 32, 3)) is None  # Pillow here.
  real = corruptions.importlib.util.find_spec
  monkeypatch.setattr(corruptions.importlib.util, "find_spec",
                      lambda name: None if name == "PIL" else real(name))
  assert corruptions.config_error("fog,jpeg_compression", (32, 32, 3)) == (
      "config key ood.corruptions = 'fog,jpeg_compression' is not allowed here: "
      "jpeg_compression needs Pillow (pip install pillow); allowed: other corruptions, or "
      "install Pillow")
  assert corruptions.config_error("default", (32, 32, 3)) is None


# --- 1-D signals: the analogues ------------------------------------------------------------

SIGNALS = jnp.asarray(np.random.default_rng(1).normal(size=(4, 40, 1)), jnp.float32)


@pytest.mark.parametrize("name", signal_corruptions.CORRUPTIONS)
def test_signal_severities_order_and_shapes(name):
  outs = [signal_corruptions.corrupt(KEY, SIGNALS, name, s) for s in signal_corruptions.SEVERITIES]
  distances = [float(jnp.mean((out - SIGNALS) ** 2)) for out in outs]
  assert 0 < distances[0] and all(a < b for a, b in zip(distances, distances[1:])), distances
  assert all(out.shape == SIGNALS.shape and out.dtype == jnp.float32 for out in outs)


def test_signal_blur_and_contrast_invariants():
  constant = jnp.full(SIGNALS.shape, 0.7, jnp.float32)
  np.testing.assert_allclose(signal_corruptions.corrupt(KEY, constant, "gaussian_blur", 5),
                             constant, atol=1e-5)
  out = signal_corruptions.corrupt(KEY, SIGNALS, "contrast", 4)
  np.testing.assert_allclose(out.mean(1), SIGNALS.mean(1), atol=1e-5)
  lo, hi = SIGNALS.min(), SIGNALS.max()
  noisy = signal_corruptions.corrupt(KEY, SIGNALS, "impulse_noise", 5)
  assert jnp.all((noisy == lo) | (noisy == hi) | (noisy == SIGNALS))
  with pytest.raises(ValueError, match="unknown corruption 'fog'"):
    signal_corruptions.corrupt(KEY, SIGNALS, "fog", 3)


def test_signal_blur_of_an_impulse_is_the_gaussian_kernel():
  x = jnp.zeros(SIGNALS.shape).at[1, 20, 0].set(1.0)
  sigma, r = 1.0, signal_corruptions.BLUR_RADIUS  # sigma of severity 2
  taps = np.exp(-0.5 * (np.arange(-r, r + 1) / sigma) ** 2)
  taps /= taps.sum()
  blurred = signal_corruptions.corrupt(KEY, x, "gaussian_blur", 2)
  np.testing.assert_allclose(blurred[1, 20 - r:21 + r, 0], taps, atol=1e-6)
  assert float(jnp.abs(blurred).sum()) == pytest.approx(1.0, abs=1e-5)  # Nothing elsewhere.


def test_jpeg_round_trip_uses_pillow():
  image_module = pytest.importorskip("PIL.Image")
  pixels = np.round(IMAGES[0].astype(np.float64) * 255).astype(np.uint8)
  out = ic.corrupt(KEY, pixels[None] / 255.0, "jpeg_compression", 5)
  buffer = io.BytesIO()
  image_module.fromarray(pixels).save(buffer, "JPEG", quality=40)
  np.testing.assert_array_equal(np.round(out[0] * 255), np.asarray(image_module.open(buffer)))
