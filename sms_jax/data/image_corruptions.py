"""CIFAR-10-C / CIFAR-100-C corruptions of pixel images, made as the published code makes them.

Hendrycks & Dietterich (ICLR 2019) generate CIFAR-10-C and CIFAR-100-C with `make_cifar_c.py`
(github.com/hendrycks/robustness, ImageNet-C/create_c/). `corrupt(key, images, name, severity)`
makes the same corruptions of images `[n, h, w, c]` in [0, 1] (pixel space, before any
standardisation) with the same per-severity parameters, `PARAMETERS` (ImageNet-C's are larger:
do not mix the two). numpy and scipy stand in for the libraries the published code calls
(`sms_jax.data.image_ops`); Pillow is needed for jpeg_compression only.

| corruption        | severity 1 .. 5 (the published code's `c`)                         |
| ----------------- | ------------------------------------------------------------------ |
| gaussian_noise    | x + N(0, s^2): s = .04, .06, .08, .09, .10                         |
| shot_noise        | Poisson(lam x) / lam: lam = 500, 250, 100, 75, 50                  |
| impulse_noise     | salt and pepper, fraction p of the values: p = .01, .02, .03, .05, .07 |
| defocus_blur      | disk (radius, alias blur): (.3,.4), (.4,.5), (.5,.6), (1,.2), (1.5,.1) |
| glass_blur        | (sigma, max delta, iterations): (.05,1,1), (.25,1,1), (.4,1,1),    |
|                   | (.25,1,2), (.4,1,2)                                                |
| motion_blur       | (radius, sigma): (6,1), (6,1.5), (6,2), (8,2), (9,2.5); angle      |
|                   | uniform in [-45, 45] degrees                                       |
| zoom_blur         | mean of x and its zooms 1, 1.01, .. up to 1.06, 1.11, 1.15, 1.20, 1.25 |
| snow              | 7-tuples, see PARAMETERS                                           |
| fog               | (strength, wibble decay): (.2,3), (.5,3), (.75,2.5), (1,2), (1.5,1.75) |
| brightness        | HSV value + b: b = .05, .1, .15, .2, .3                            |
| contrast          | (x - mean) c + mean per channel: c = .75, .5, .4, .3, .15          |
| elastic_transform | (alpha, sigma, affine) x 32 px: (0,0,.08), (.05,.2,.07),           |
|                   | (.08,.06,.06), (.1,.04,.05), (.1,.03,.03)                          |
| pixelate          | box down to int(32 f) px and back: f = .95, .9, .85, .75, .65      |
| jpeg_compression  | JPEG quality q = 80, 65, 58, 50, 40                                |
| speckle_noise     | x + x N(0, s^2): s = .06, .1, .12, .16, .2                         |
| gaussian_blur     | sigma = .4, .6, .7, .8, 1                                          |
| spatter           | 6-tuples, see PARAMETERS (water for 1-3, mud for 4-5)              |
| saturate          | HSV saturation s a + b: (a, b) = (.3,0), (.1,0), (1.5,0), (2,.1), (2.5,.2) |

Left out: frost, which blends in crops of six frost photographs that ship with the published
code (external image files). How this differs from the published code:
- randomness: numpy's PCG64 seeded from the JAX key (and a chunk counter), the same draws in
  the same order per image, not the published global NumPy state;
- the library calls are reimplemented (`image_ops`, `spatter`): ImageMagick's motion blur
  (motion_blur, snow), OpenCV's warpAffine with its 1/32-pixel fixed point (as OpenCV 3 and
  4 compute it; OpenCV 5 changed it), Canny, distance transform, equalizeHist, Pillow's box
  resampling, scikit-image's HSV conversions. Checked against scikit-image 0.26, OpenCV
  4.10, Pillow 13 and ImageMagick 6.9.11 on 12 photographs, every severity, the same draws:
  every 8-bit value agrees, except for snow, elastic_transform and spatter, which the
  published code computes partly in float32 (at most 4e-5 apart, 1 level in <= 0.3%);
- other image sizes than 32 x 32: lengths that the published code ties to CIFAR's 32-pixel
  side follow the image (glass_blur's loop, fog's fractal, elastic_transform's 32 and
  pixelate's sizes); sigmas and radii stay in pixels;
- grey images (c = 1): brightness, saturate and spatter act on the image repeated to RGB and
  return its luma (0.299 R + 0.587 G + 0.114 B); the others act on the channel as on each of
  RGB (snow's grey is the channel itself);
- the published code stores every image as uint8 (truncating); `corrupt` returns floats,
  quantised only where the published code quantises inside a corruption (glass_blur's first
  blur, snow's layer, the PNG and JPEG round trips of motion_blur, snow, pixelate and
  jpeg_compression). `sms_jax.data.corruptions` truncates its results for 8-bit datasets.
"""

import functools
from typing import Any, Callable

import numpy as np
from scipy import ndimage

from sms_jax.data import image_ops, spatter as spatter_lib

SEVERITIES = (1, 2, 3, 4, 5)
CIFAR_SIDE = 32  # The published code's image side, in pixels.
CHUNK = 1000  # Images corrupted at a time (bounds the memory of float64 temporaries).

# make_cifar_c.py's `c` of each corruption at severities 1 .. 5 (zoom_blur: the stop of
# np.arange(1, stop, 0.01); elastic_transform: fractions of the 32-pixel side).
PARAMETERS: dict[str, tuple[Any, ...]] = {
    "gaussian_noise": (0.04, 0.06, 0.08, 0.09, 0.10),
    "shot_noise": (500, 250, 100, 75, 50),
    "impulse_noise": (0.01, 0.02, 0.03, 0.05, 0.07),
    "defocus_blur": ((0.3, 0.4), (0.4, 0.5), (0.5, 0.6), (1, 0.2), (1.5, 0.1)),
    "glass_blur": ((0.05, 1, 1), (0.25, 1, 1), (0.4, 1, 1), (0.25, 1, 2), (0.4, 1, 2)),
    "motion_blur": ((6, 1), (6, 1.5), (6, 2), (8, 2), (9, 2.5)),
    "zoom_blur": (1.06, 1.11, 1.16, 1.21, 1.26),
    "snow": ((0.1, 0.2, 1, 0.6, 8, 3, 0.95), (0.1, 0.2, 1, 0.5, 10, 4, 0.9),
             (0.15, 0.3, 1.75, 0.55, 10, 4, 0.9), (0.25, 0.3, 2.25, 0.6, 12, 6, 0.85),
             (0.3, 0.3, 1.25, 0.65, 14, 12, 0.8)),
    "fog": ((0.2, 3), (0.5, 3), (0.75, 2.5), (1, 2), (1.5, 1.75)),
    "brightness": (0.05, 0.1, 0.15, 0.2, 0.3),
    "contrast": (0.75, 0.5, 0.4, 0.3, 0.15),
    "elastic_transform": ((0, 0, 0.08), (0.05, 0.2, 0.07), (0.08, 0.06, 0.06),
                          (0.1, 0.04, 0.05), (0.1, 0.03, 0.03)),
    "pixelate": (0.95, 0.9, 0.85, 0.75, 0.65),
    "jpeg_compression": (80, 65, 58, 50, 40),
    "speckle_noise": (0.06, 0.1, 0.12, 0.16, 0.2),
    "gaussian_blur": (0.4, 0.6, 0.7, 0.8, 1),
    "spatter": ((0.62, 0.1, 0.7, 0.7, 0.5, 0), (0.65, 0.1, 0.8, 0.7, 0.5, 0),
                (0.65, 0.3, 1, 0.69, 0.5, 0), (0.65, 0.1, 0.7, 0.69, 0.6, 1),
                (0.65, 0.1, 0.5, 0.68, 0.6, 1)),
    "saturate": ((0.3, 0), (0.1, 0), (1.5, 0), (2, 0.1), (2.5, 0.2)),
}
CORRUPTIONS = tuple(PARAMETERS)  # The published order: the 15, then the 4 extra ones.
LEFT_OUT = {"frost": "blends in the published frost photographs (external image files)"}
NEEDS_PILLOW = ("jpeg_compression",)


def _gaussian_noise(rng, x, sigma):
  return np.clip(x + rng.normal(0, sigma, x.shape), 0, 1)


def _shot_noise(rng, x, rate):
  return np.clip(rng.poisson(x * rate) / rate, 0, 1)


def _impulse_noise(rng, x, amount):
  """scikit-image's random_noise(mode='s&p'): each value, with probability `amount`, becomes
  1 (salt) or 0 (pepper), either with probability 1/2."""
  flipped = rng.random(x.shape) <= amount
  salted = rng.random(x.shape) <= 0.5
  return np.where(flipped, salted.astype(x.dtype), x)


def _speckle_noise(rng, x, sigma):
  return np.clip(x + x * rng.normal(0, sigma, x.shape), 0, 1)


def _gaussian_blur(rng, x, sigma):
  del rng
  return np.clip(image_ops.gaussian(x, sigma), 0, 1)


def glass_shuffle(x: np.ndarray, offsets: np.ndarray) -> np.ndarray:
  """The published glass blur's pixel "swaps" of `x: [n, h, w, c]`, for the pixels of rows
  h - 1 .. 2 and columns w - 1 .. 2 in that (descending) order, pixel (i, j) with the offset
  `offsets[:, h - 1 - i, w - 1 - j] = (dx, dy)` in {-1, 0} (`offsets: [n, h - 2, w - 2, 2]`).

  The published `x[h, w], x[h', w'] = x[h', w'], x[h, w]` swaps numpy views, so it copies the
  pixel (h + dy, w + dx) into (h, w) and leaves that pixel as it was; with offsets in {-1, 0}
  and the descending order, each copied pixel is one not yet written, i.e. of the input.
  """
  n, h, w = x.shape[:3]
  rows, cols = np.arange(h - 1, 1, -1), np.arange(w - 1, 1, -1)
  out = x.copy()
  out[:, rows[:, None], cols[None, :]] = x[np.arange(n)[:, None, None],
                                           rows[None, :, None] + offsets[..., 1],
                                           cols[None, None, :] + offsets[..., 0]]
  return out


def _glass_blur(rng, x, params):
  sigma, max_delta, iterations = params
  x = np.floor(image_ops.gaussian(x, sigma) * 255) / 255  # The published np.uint8(... * 255).
  n, h, w = x.shape[:3]
  for _ in range(iterations):  # max_delta is 1 at every CIFAR severity (see glass_shuffle).
    x = glass_shuffle(x, rng.integers(-max_delta, max_delta, size=(n, h - 2, w - 2, 2)))
  return np.clip(image_ops.gaussian(x, sigma), 0, 1)


def _defocus_blur(rng, x, params):
  del rng
  return np.clip(image_ops.correlate(x, image_ops.disk_kernel(*params)), 0, 1)


def _motion_blur(rng, x, params):
  radius, sigma = params
  angles = rng.uniform(-45, 45, x.shape[0])
  return np.clip(image_ops.motion_blur(x, radius, sigma, angles), 0, 1)


def zoom_factors(stop: float) -> np.ndarray:
  """zoom_blur's factors, as the published np.arange(1, stop, 0.01) makes them (7, 12, 16, 21
  and 26 factors for the five stops: float rounding keeps 1.06 and 1.11, not 1.16 ...)."""
  return np.arange(1, stop, 0.01)


def _zoom_blur(rng, x, stop):
  """The mean of x and its zooms, summed in float32 as the published code sums them."""
  del rng
  factors = zoom_factors(stop)
  x = x.astype(np.float32)
  total = np.zeros_like(x)
  for factor in factors:
    total += image_ops.clipped_zoom(x, factor).astype(np.float32)
  return np.clip((x + total) / np.float32(len(factors) + 1), 0, 1)


def _grey(x):
  """OpenCV's RGB -> grey of `x: [n, h, w, 3]` (a grey image: itself), `[n, h, w, 1]`."""
  return x if x.shape[-1] == 1 else (x @ image_ops.LUMA)[..., None]


def _snow(rng, x, params):
  loc, scale, zoom, threshold, radius, sigma, blend = params
  n, h, w = x.shape[:3]
  layer = rng.normal(loc, scale, (n, h, w))[..., None]
  layer = image_ops.clipped_zoom(layer, zoom)
  layer[layer < threshold] = 0
  layer = np.floor(np.clip(layer, 0, 1) * 255) / 255  # The published astype(np.uint8).
  layer = image_ops.motion_blur(layer, radius, sigma, rng.uniform(-135, -45, n))
  x = blend * x + (1 - blend) * np.maximum(x, _grey(x) * 1.5 + 0.5)
  return np.clip(x + layer + layer[:, ::-1, ::-1], 0, 1)


def _fog(rng, x, params):
  strength, decay = params
  n, h, w = x.shape[:3]
  size = 1 << (max(h, w, 2) - 1).bit_length()  # The fractal's side: a power of two >= h, w.
  top = x.max((1, 2, 3), keepdims=True)
  fog = image_ops.plasma_fractal(rng, n, size, decay)[:, :h, :w, None]
  return np.clip((x + strength * fog) * top / (top + strength), 0, 1)


def _brightness(rng, x, shift):
  del rng
  hsv = image_ops.rgb_to_hsv(x)
  hsv[..., 2] = np.clip(hsv[..., 2] + shift, 0, 1)
  return np.clip(image_ops.hsv_to_rgb(hsv), 0, 1)


def _saturate(rng, x, params):
  del rng
  scale, shift = params
  hsv = image_ops.rgb_to_hsv(x)
  hsv[..., 1] = np.clip(hsv[..., 1] * scale + shift, 0, 1)
  return np.clip(image_ops.hsv_to_rgb(hsv), 0, 1)


def _contrast(rng, x, factor):
  del rng
  means = x.mean((1, 2), keepdims=True)
  return np.clip((x - means) * factor + means, 0, 1)


def _elastic_transform(rng, x, params):
  n, h, w, c = x.shape
  side = CIFAR_SIDE if (h, w) == (CIFAR_SIDE, CIFAR_SIDE) else min(h, w)
  alpha, sigma, affine = (side * p for p in params)
  centre, half = np.float32([w, h]) // 2, min(h, w) // 3
  source = np.float32([centre + half, [centre[0] + half, centre[1] - half], centre - half])
  moved = source + rng.uniform(-affine, affine, size=(n, 3, 2)).astype(np.float32)
  x = image_ops.warp_affine(x, np.stack([image_ops.affine_from_points(source, m) for m in moved]))
  shifts = []
  for _ in range(2):  # dx, then dy, as drawn by the published code.
    field = rng.uniform(-1, 1, size=(n, h, w))
    shifts.append((image_ops.gaussian(field, sigma, mode="reflect", truncate=3)
                   * alpha).astype(np.float32))
  dx, dy = shifts
  rows, cols = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")
  out = np.empty_like(x)
  for i in range(n):  # The published map_coordinates call, one image at a time.
    coords = np.broadcast_arrays((rows + dy[i])[..., None], (cols + dx[i])[..., None],
                                 np.arange(c)[None, None, :])
    out[i] = ndimage.map_coordinates(x[i], [a.ravel() for a in coords], order=1,
                                     mode="reflect").reshape(h, w, c)
  return np.clip(out, 0, 1)


def _pixels(x):
  """The uint8 image the published code hands to Pillow: round(255 x)."""
  return np.round(x * 255).astype(np.uint8)


def _pixelate(rng, x, factor):
  del rng
  h, w = x.shape[1:3]
  small = image_ops.box_resize(_pixels(x), int(h * factor), int(w * factor))
  return image_ops.box_resize(small, h, w) / 255.0


def _jpeg_compression(rng, x, quality):
  del rng
  import io  # pylint: disable=g-import-not-at-top
  try:
    from PIL import Image  # pylint: disable=g-import-not-at-top
  except ImportError as error:
    raise ImportError("jpeg_compression needs Pillow: pip install pillow") from error
  out = np.empty_like(x)
  for i, image in enumerate(_pixels(x)):
    buffer = io.BytesIO()
    Image.fromarray(image[..., 0] if image.shape[-1] == 1 else image).save(
        buffer, "JPEG", quality=quality)
    decoded = np.asarray(Image.open(buffer))
    out[i] = (decoded[..., None] if decoded.ndim == 2 else decoded) / 255.0
  return out


def _spatter(rng, x, params):
  return np.clip(spatter_lib.spatter(rng, x, params), 0, 1)


CorruptionFn = Callable[[np.random.Generator, np.ndarray, Any], np.ndarray]
_FUNCTIONS: dict[str, CorruptionFn] = {
    "gaussian_noise": _gaussian_noise, "shot_noise": _shot_noise,
    "impulse_noise": _impulse_noise, "defocus_blur": _defocus_blur, "glass_blur": _glass_blur,
    "motion_blur": _motion_blur, "zoom_blur": _zoom_blur, "snow": _snow, "fog": _fog,
    "brightness": _brightness, "contrast": _contrast, "elastic_transform": _elastic_transform,
    "pixelate": _pixelate, "jpeg_compression": _jpeg_compression,
    "speckle_noise": _speckle_noise, "gaussian_blur": _gaussian_blur, "spatter": _spatter,
    "saturate": _saturate,
}
_COLOUR = ("brightness", "saturate", "spatter")  # Defined on RGB: grey images go through RGB.


def _on_rgb(fn: CorruptionFn) -> CorruptionFn:
  """`fn` of a grey image `[n, h, w, 1]` repeated to RGB, as luma `[n, h, w, 1]`."""
  @functools.wraps(fn)
  def grey(rng, x, params):
    return np.clip(fn(rng, np.repeat(x, 3, axis=-1), params) @ image_ops.LUMA, 0, 1)[..., None]
  return grey


def generator(key, chunk: int) -> np.random.Generator:
  """numpy's PCG64 seeded from the JAX PRNG `key` and the index of a chunk of images: the
  same draws on every machine."""
  import jax  # pylint: disable=g-import-not-at-top
  words = np.asarray(jax.random.key_data(key), np.uint32).ravel().tolist()
  return np.random.default_rng([*words, chunk])


def check(name: str, severity: int) -> None:
  """Raises ValueError unless `name` is one of CORRUPTIONS and `severity` an int in 1..5."""
  if name not in PARAMETERS:
    left_out = f" ({name} is left out: {LEFT_OUT[name]})" if name in LEFT_OUT else ""
    raise ValueError(f"unknown image corruption {name!r}{left_out}; allowed: "
                     f"{', '.join(CORRUPTIONS)}")
  if isinstance(severity, bool) or severity not in SEVERITIES:
    raise ValueError(f"corruption severity must be an int in 1..5, got {severity!r}")


def corrupt(key, images: np.ndarray, name: str, severity: int) -> np.ndarray:
  """Corrupts pixel images with `name` at `severity`, as make_cifar_c.py does (see the table).

  Runs on the host (numpy and scipy), `CHUNK` images at a time; chunk j draws from
  `generator(key, j)`, so the result is a fixed function of `key`.

  Args:
    key: a JAX PRNG key.
    images: `[n, h, w, c]` floats in [0, 1] (c = 3, RGB, or 1, grey), before any
      standardisation (CIFAR's pixels / 255).
    name: one of CORRUPTIONS.
    severity: 1 (mild) .. 5 (strong).
  Returns:
    The corrupted images, `[n, h, w, c]` in [0, 1], of `images`' dtype (float32 if it is not a
    float type).
  Raises:
    ValueError: unknown `name`, `severity` not in 1..5, or `images` not `[n, h, w, 1 or 3]`.
    ImportError: jpeg_compression without Pillow.
  """
  check(name, severity)
  images = np.asarray(images)
  if images.ndim != 4 or images.shape[-1] not in (1, 3):
    raise ValueError(f"images must be [n, h, w, c] with c = 1 or 3, got shape {images.shape}")
  dtype = images.dtype if np.issubdtype(images.dtype, np.floating) else np.float32
  fn = _FUNCTIONS[name]
  if name in _COLOUR and images.shape[-1] == 1:
    fn = _on_rgb(fn)
  params = PARAMETERS[name][severity - 1]
  out = np.empty(images.shape, dtype)
  for chunk, start in enumerate(range(0, len(images), CHUNK)):
    x = images[start:start + CHUNK].astype(np.float64)
    out[start:start + CHUNK] = fn(generator(key, chunk), x, params)
  return out
