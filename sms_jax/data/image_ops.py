"""Pixel-space image operations that CIFAR-10-C's generation code takes from other libraries.

`make_cifar_c.py` (Hendrycks & Dietterich) calls scikit-image, OpenCV, Pillow and ImageMagick;
this module computes the same operations on batches `x: [n, h, w, c]` float64 with numpy and
scipy (a JAX dependency) only, so that `sms_jax.data.image_corruptions` needs nothing else
(except Pillow for JPEG). Each function names the operation it stands for and any difference.
"""

import math

import numpy as np
from scipy import ndimage

LUMA = np.array([0.299, 0.587, 0.114])  # RGB -> grey weights of OpenCV's COLOR_RGB2GRAY.


def gaussian(x: np.ndarray, sigma: float, mode: str = "nearest",
             truncate: float = 4.0) -> np.ndarray:
  """scikit-image's `filters.gaussian` over the two spatial axes of `x: [n, h, w, c]` (or of
  `x: [n, h, w]`): scipy's Gaussian filter, each channel and example on its own."""
  sigmas = (0, sigma, sigma) + (0,) * (x.ndim - 3)
  return ndimage.gaussian_filter(x, sigmas, mode=mode, truncate=truncate)


def correlate(x: np.ndarray, kernel: np.ndarray, mode: str = "mirror") -> np.ndarray:
  """OpenCV's `filter2D` (a correlation anchored at the kernel's centre; its default border
  BORDER_REFLECT_101 is scipy's 'mirror') of each channel of `x: [n, h, w, c]` with
  `kernel: [k, k]`, k odd."""
  return ndimage.correlate(x, kernel[None, :, :, None], mode=mode)


def disk_kernel(radius: float, alias_blur: float) -> np.ndarray:
  """The defocus kernel of make_cifar_c's `disk` for radius <= 8: the disk x^2 + y^2 <= r^2 on
  the grid -8..8, normalised, blurred by a 3x3 Gaussian of `alias_blur` (OpenCV's
  `GaussianBlur`), in float32 as OpenCV computes it; returned cropped to its nonzero support
  (the zeros add nothing), `[k, k]` with k odd."""
  grid = np.arange(-8, 9)
  xx, yy = np.meshgrid(grid, grid)
  disk = (xx ** 2 + yy ** 2 <= radius ** 2).astype(np.float32)
  disk /= disk.sum()
  taps = np.exp(-np.arange(-1, 2) ** 2 / (2 * alias_blur ** 2))
  taps = (taps / taps.sum()).astype(np.float32)
  kernel = ndimage.correlate1d(ndimage.correlate1d(disk, taps, 0, mode="mirror"), taps, 1,
                               mode="mirror").astype(np.float32)
  reach = int(np.max(np.abs(grid[np.any(kernel != 0, axis=0)])))
  return kernel[8 - reach:9 + reach, 8 - reach:9 + reach]


def motion_blur(x: np.ndarray, radius: float, sigma: float, angles: np.ndarray) -> np.ndarray:
  """ImageMagick's `MotionBlurImage(radius, sigma, angle)` of each example of
  `x: [n, h, w, c]`, example i at `angles[i]` degrees, rounded to 8 bits as the PNG it is read
  back from.

  ImageMagick sums `2 * ceil(radius) + 1` taps of a one-sided Gaussian exp(-k^2 / 2 sigma^2)
  (normalised), tap k at the offset (ceil(k cos a - 1/2), ceil(k sin a - 1/2)) (x, y) from the
  pixel; pixels beyond the border repeat the edge (its default virtual pixels). The sum is
  rounded to 16-bit quanta (1/65535) and truncated to 8 bits, as ImageMagick 6 (Q16) writes
  the PNG (matched bit for bit in our checks against ImageMagick 6.9.11).
  """
  n, h, w = x.shape[:3]
  width = 2 * math.ceil(radius) + 1
  k = np.arange(width)
  taps = np.exp(-k ** 2 / (2 * sigma ** 2))
  taps /= taps.sum()
  radians = np.deg2rad(np.asarray(angles, np.float64))[:, None]
  dx = np.ceil(k * np.cos(radians) - 0.5).astype(int)  # [n, width]
  dy = np.ceil(k * np.sin(radians) - 0.5).astype(int)
  examples = np.arange(n)[:, None, None]
  out = np.zeros_like(x)
  for j in range(width):
    rows = np.clip(np.arange(h)[None, :, None] + dy[:, j, None, None], 0, h - 1)
    cols = np.clip(np.arange(w)[None, None, :] + dx[:, j, None, None], 0, w - 1)
    out += taps[j] * x[examples, rows, cols]
  return np.floor(np.round(out * 65535) / 257) / 255


def zoom_matrix(size: int, factor: float) -> np.ndarray:
  """make_cifar_c's `clipped_zoom` along one axis as a `[size, size]` matrix: the central
  ceil(size / factor) pixels, enlarged by scipy's `ndimage.zoom(order=1)` (linear, the end
  pixels' centres kept in place) to round(crop * factor) pixels, of which the central `size`."""
  crop = math.ceil(size / factor)
  top = (size - crop) // 2
  zoomed = int(round(crop * factor))
  trim = (zoomed - size) // 2
  coords = np.arange(zoomed)[trim:trim + size] * ((crop - 1) / (zoomed - 1))
  low = np.minimum(np.floor(coords).astype(int), crop - 1)
  frac = coords - low
  matrix = np.zeros((size, size))
  rows = np.arange(size)
  np.add.at(matrix, (rows, top + low), 1 - frac)
  high = np.minimum(low + 1, crop - 1)
  np.add.at(matrix, (rows, top + high), frac)
  return matrix


def clipped_zoom(x: np.ndarray, factor: float) -> np.ndarray:
  """make_cifar_c's `clipped_zoom` of `x: [n, h, w, c]`: the centre enlarged by `factor`,
  cropped back to `[h, w]` (see `zoom_matrix`)."""
  rows, cols = zoom_matrix(x.shape[1], factor), zoom_matrix(x.shape[2], factor)
  return np.moveaxis(rows @ np.moveaxis(x, 3, 1) @ cols.T, 1, 3)


def _box_weights(in_size: int, out_size: int) -> np.ndarray:
  """Pillow's BOX resampling weights `[out_size, in_size]` in its 8-bit fixed point (22
  fractional bits): output pixel j averages the input pixels whose centres lie within
  half its footprint, (j + 1/2) * scale -+ scale / 2 (at least the one nearest pixel)."""
  scale = in_size / out_size
  filterscale = max(scale, 1.0)
  support = 0.5 * filterscale
  weights = np.zeros((out_size, in_size))
  for j in range(out_size):
    center = (j + 0.5) * scale
    lo, hi = max(int(center - support + 0.5), 0), min(int(center + support + 0.5), in_size)
    t = (np.arange(lo, hi) - center + 0.5) / filterscale
    row = ((t > -0.5) & (t <= 0.5)).astype(np.float64)
    weights[j, lo:hi] = row / row.sum() if row.sum() else row
  return np.floor(0.5 + weights * (1 << 22)).astype(np.int64)


def _box_pass(pixels: np.ndarray, weights: np.ndarray, axis: int) -> np.ndarray:
  """One Pillow resampling pass of uint8 `pixels` along `axis`, rounded to uint8."""
  moved = np.moveaxis(pixels.astype(np.int64), axis, -1)
  total = moved @ weights.T + (1 << 21)
  return np.moveaxis(np.clip(total >> 22, 0, 255), -1, axis)


def box_resize(pixels: np.ndarray, height: int, width: int) -> np.ndarray:
  """Pillow's `Image.resize((width, height), BOX)` of uint8 `pixels: [n, h, w, c]`: a
  horizontal pass then a vertical one, each rounded to 8 bits as Pillow's integer code does."""
  out = pixels
  if width != pixels.shape[2]:
    out = _box_pass(out, _box_weights(pixels.shape[2], width), axis=2)
  if height != pixels.shape[1]:
    out = _box_pass(out, _box_weights(pixels.shape[1], height), axis=1)
  return out.astype(np.uint8)


def rgb_to_hsv(rgb: np.ndarray) -> np.ndarray:
  """scikit-image's `color.rgb2hsv` of `rgb: [..., 3]` in [0, 1]: hue in [0, 1) (0 for greys),
  saturation (max - min) / max (0 for greys), value max; where channels tie for the maximum,
  blue's formula wins over green's over red's, as there."""
  r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
  value = rgb.max(-1)
  delta = value - rgb.min(-1)
  grey = delta == 0
  safe = np.where(grey, 1.0, delta)
  hue = np.where(b == value, 4 + (r - g) / safe,
                 np.where(g == value, 2 + (b - r) / safe, (g - b) / safe))
  hue = np.where(grey, 0.0, (hue / 6) % 1)
  saturation = np.where(grey, 0.0, delta / np.where(value == 0, 1.0, value))
  return np.stack([hue, saturation, value], -1)


def hsv_to_rgb(hsv: np.ndarray) -> np.ndarray:
  """scikit-image's `color.hsv2rgb`: the inverse of `rgb_to_hsv`, `[..., 3]`."""
  h, s, v = hsv[..., 0], hsv[..., 1], hsv[..., 2]
  sector = np.floor(h * 6)
  f = h * 6 - sector
  p, q, t = v * (1 - s), v * (1 - f * s), v * (1 - (1 - f) * s)
  sector = sector.astype(int) % 6
  choices = [(v, t, p), (q, v, p), (p, v, t), (p, q, v), (t, p, v), (v, p, q)]
  return np.stack([np.choose(sector, [c[i] for c in choices]) for i in range(3)], -1)


def affine_from_points(source: np.ndarray, target: np.ndarray) -> np.ndarray:
  """OpenCV's `getAffineTransform`: the `[2, 3]` matrix M with M @ (x, y, 1) = target point
  for each of the three `source: [3, 2]` (x, y) points."""
  system = np.concatenate([source.astype(np.float64), np.ones((3, 1))], axis=1)
  return np.linalg.solve(system, target.astype(np.float64)).T


def _mirror_index(index: np.ndarray, size: int) -> np.ndarray:
  """OpenCV's BORDER_REFLECT_101 (scipy's 'mirror') of integer pixel indices."""
  period = 2 * size - 2 if size > 1 else 1
  index = np.abs(index) % period
  return np.where(index >= size, period - index, index)


def warp_affine(x: np.ndarray, matrices: np.ndarray) -> np.ndarray:
  """OpenCV's `warpAffine(x_i, M_i, (w, h), borderMode=BORDER_REFLECT_101)` (bilinear) of each
  example of `x: [n, h, w, c]` with `matrices: [n, 2, 3]` (source -> destination).

  Destination pixel (x, y) samples the source at M^-1 (x, y, 1), rounded to 1/32 pixel in
  OpenCV's fixed point (10 fractional bits per term, then 5), between the four nearest
  pixels, indices beyond the border mirrored.
  """
  n, h, w = x.shape[:3]
  linear = matrices[:, :, :2]
  inverse = np.linalg.inv(linear)  # OpenCV's invertAffineTransform, in double.
  shift = -np.einsum("nij,nj->ni", inverse, matrices[:, :, 2])
  cols, rows = np.arange(w, dtype=np.float64), np.arange(h, dtype=np.float64)

  def fixed(axis):  # Source coordinate along `axis` (0: x, 1: y) in 1/32 pixels, [n, h, w].
    per_col = np.rint(inverse[:, axis, 0, None] * cols * 1024).astype(np.int64)
    per_row = np.rint((inverse[:, axis, 1, None] * rows + shift[:, axis, None]) * 1024)
    return (per_row.astype(np.int64)[:, :, None] + 16 + per_col[:, None, :]) >> 5

  sx, sy = fixed(0), fixed(1)
  x0, y0 = sx >> 5, sy >> 5
  fx, fy = ((sx & 31) / 32.0)[..., None], ((sy & 31) / 32.0)[..., None]
  examples = np.arange(n)[:, None, None]
  pick = lambda yi, xi: x[examples, _mirror_index(yi, h), _mirror_index(xi, w)]
  return ((1 - fy) * ((1 - fx) * pick(y0, x0) + fx * pick(y0, x0 + 1))
          + fy * ((1 - fx) * pick(y0 + 1, x0) + fx * pick(y0 + 1, x0 + 1)))


def plasma_fractal(rng: np.random.Generator, n: int, size: int, decay: float) -> np.ndarray:
  """make_cifar_c's `plasma_fractal` (diamond-square) for `n` maps `[n, size, size]` in [0, 1],
  `size` a power of two: each new point is the mean of its four neighbours (wrapping around)
  plus uniform noise of half-width wibble^2 (wibble = 100, divided by `decay` per level), the
  map then scaled to [0, 1]. Draws as the published code does, one level at a time."""
  if size & (size - 1):
    raise ValueError(f"plasma_fractal needs a power of two, got {size}")
  heights = np.zeros((n, size, size))
  step, wibble = size, 100.0

  def wibbled_mean(total):
    return total / 4 + wibble * rng.uniform(-wibble, wibble, total.shape)

  while step >= 2:
    half = step // 2
    corners = heights[:, ::step, ::step]
    total = corners + np.roll(corners, -1, axis=1)
    heights[:, half::step, half::step] = wibbled_mean(total + np.roll(total, -1, axis=2))
    centres, corners = heights[:, half::step, half::step], heights[:, ::step, ::step]
    heights[:, ::step, half::step] = wibbled_mean(
        centres + np.roll(centres, 1, axis=1) + corners + np.roll(corners, -1, axis=2))
    heights[:, half::step, ::step] = wibbled_mean(
        centres + np.roll(centres, 1, axis=2) + corners + np.roll(corners, -1, axis=1))
    step, wibble = half, wibble / decay
  heights -= heights.min((1, 2), keepdims=True)
  return heights / heights.max((1, 2), keepdims=True)
