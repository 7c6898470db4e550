"""CIFAR-10-C's spatter corruption, with numpy stand-ins for the OpenCV calls it makes.

Severities 1-3 splash water: a thresholded blurry noise layer whose texture comes from the
distance to its Canny edges, histogram-equalised and embossed, added in pale turquoise.
Severities 4-5 splash mud: the layer's blobs, blurred, darken the image to mud brown.
The OpenCV operations (Canny, the 5x5 chamfer distance transform, equalizeHist, blur and
filter2D on 8-bit images) are computed here as OpenCV computes them, integer rounding
included; scipy's Gaussian filter stands in for scikit-image's.
"""

import numpy as np
from scipy import ndimage

from sms_jax.data import image_ops

WATER = np.array([175, 238, 238]) / 255.0  # Pale turquoise, added to the RGB channels.
MUD = np.array([63, 42, 20]) / 255.0  # Mud brown.
EMBOSS = np.array([[-2, -1, 0], [-1, 1, 1], [0, 1, 2]])  # The published filter2D kernel.
_SOBEL = np.array([[-1, 0, 1], [-2, 0, 2], [-1, 0, 1]])


def canny(pixels: np.ndarray, low: int, high: int) -> np.ndarray:
  """OpenCV's `Canny(pixels, low, high)` (3x3 Sobel, L1 gradient) of uint8 `pixels: [n, h, w]`:
  the edge map `[n, h, w]` bool.

  A pixel is a candidate if its gradient magnitude |dx| + |dy| exceeds `low` and is a maximum
  along the gradient's direction, quantised to 0, 45, 90 or 135 degrees with OpenCV's fixed
  point tan(22.5) (ties as OpenCV breaks them; magnitudes beyond the border are 0); the
  edges are the candidates 8-connected to one whose magnitude exceeds `high`.
  """
  src = pixels.astype(np.int64)
  dx = ndimage.correlate(src, _SOBEL[None], mode="nearest")
  dy = ndimage.correlate(src, _SOBEL.T[None], mode="nearest")
  mag = np.abs(dx) + np.abs(dy)
  padded = np.pad(mag, ((0, 0), (1, 1), (1, 1)))
  n, h, w = mag.shape
  at = lambda r, c: padded[:, 1 + r:1 + r + h, 1 + c:1 + c + w]  # Magnitude at offset (r, c).
  x, y = np.abs(dx), np.abs(dy) << 15
  tg22x = x * int(0.4142135623730950488016887242097 * (1 << 15) + 0.5)
  tg67x = tg22x + (x << 16)
  s = np.where((dx ^ dy) < 0, -1, 1)
  diagonal_prev = np.where(s < 0, at(-1, 1), at(-1, -1))  # Row above, column - s.
  diagonal_next = np.where(s < 0, at(1, -1), at(1, 1))  # Row below, column + s.
  maximum = np.where(
      y < tg22x, (mag > at(0, -1)) & (mag >= at(0, 1)),
      np.where(y > tg67x, (mag > at(-1, 0)) & (mag >= at(1, 0)),
               (mag > diagonal_prev) & (mag > diagonal_next)))
  candidate = (mag > low) & maximum
  labels, _ = ndimage.label(candidate, structure=np.pad(np.ones((1, 3, 3)), ((1, 1), (0, 0),
                                                                              (0, 0))))
  strong = np.unique(labels[candidate & (mag > high)])
  return np.isin(labels, strong[strong > 0])


def chamfer_distance(zero: np.ndarray, limit: float) -> np.ndarray:
  """OpenCV's `distanceTransform(src, DIST_L2, 5)` of `[n, h, w]`, where `zero` marks the
  source's 0 pixels, capped at `limit`: `[n, h, w]` float32.

  The distance is the cheapest path to a 0 pixel with steps of cost 1 (horizontal, vertical),
  1.4 (diagonal) and 2.1969 (knight's moves), in OpenCV's fixed point (16 fractional bits);
  it is computed by relaxation, exact up to `limit` (every step costs at least 1), and
  beyond it is only known to exceed it. Images without a 0 pixel get OpenCV's 8192 (capped).
  """
  costs = {1: round(1.0 * 65536), 2: round(1.4 * 65536), 5: round(2.1969 * 65536)}
  steps = [(dr, dc, costs[dr * dr + dc * dc]) for dr in range(-2, 3) for dc in range(-2, 3)
           if dr * dr + dc * dc in costs]
  far = (2 ** 31 - 1) >> 2
  dist = np.where(zero, 0, far).astype(np.int64)
  n, h, w = dist.shape
  for _ in range(int(np.ceil(limit)) + 1):
    padded = np.pad(dist, ((0, 0), (2, 2), (2, 2)), constant_values=far)
    best = dist
    for dr, dc, cost in steps:
      best = np.minimum(best, padded[:, 2 + dr:2 + dr + h, 2 + dc:2 + dc + w] + cost)
    dist = np.minimum(best, far)
  return np.minimum((dist / 65536).astype(np.float32), np.float32(limit))


def _round_half_even_u8(values: np.ndarray) -> np.ndarray:
  """OpenCV's saturate_cast<uchar> of floats: rounded half to even, clipped to [0, 255]."""
  return np.clip(np.rint(values), 0, 255).astype(np.uint8)


def equalize_hist(pixels: np.ndarray) -> np.ndarray:
  """OpenCV's `equalizeHist` of each uint8 image of `pixels: [n, h, w]`: the lookup table
  sends the lowest level present to 0 and level l to round(cumulative count above the lowest
  * 255 / (pixels - count of the lowest)), in float32; a one-level image stays as it is."""
  out = np.empty_like(pixels)
  for i, image in enumerate(pixels):
    hist = np.bincount(image.ravel(), minlength=256)
    lowest = int(np.argmax(hist > 0))
    if hist[lowest] == image.size:
      out[i] = lowest
      continue
    scale = np.float32(255.0) / np.float32(image.size - hist[lowest])
    table = np.zeros(256, np.uint8)
    cumulative = np.cumsum(hist[lowest + 1:]).astype(np.float32)
    table[lowest + 1:] = _round_half_even_u8(cumulative * scale)
    out[i] = table[image]
  return out


def _box3(x: np.ndarray) -> np.ndarray:
  """OpenCV's `blur(x, (3, 3))` of `[n, h, w]` (BORDER_REFLECT_101): the 3x3 mean."""
  return ndimage.uniform_filter(x.astype(np.float64), (1, 3, 3), mode="mirror")


def water_texture(layer_u8: np.ndarray) -> np.ndarray:
  """The published water's texture of the 8-bit liquid layer `[n, h, w]`: the distance to
  its Canny edges (50, 150) capped at 20, blurred, equalised, embossed, blurred;
  `[n, h, w]` float32 as the published code has it."""
  dist = chamfer_distance(canny(layer_u8, 50, 150), 20)
  dist = _box3(dist.astype(np.float32)).astype(np.float32).astype(np.uint8)  # Truncated.
  dist = equalize_hist(dist)
  dist = _round_half_even_u8(ndimage.correlate(dist.astype(np.float64), EMBOSS[None],
                                               mode="mirror"))
  return _round_half_even_u8(_box3(dist)).astype(np.float32)


def spatter(rng: np.random.Generator, x: np.ndarray, params) -> np.ndarray:
  """make_cifar_c's spatter of RGB `x: [n, h, w, 3]` in [0, 1] with the severity's
  `params = (loc, scale, sigma, threshold, intensity, mud)`; unclipped `[n, h, w, 3]`.

  An image whose water texture is 0 wherever the layer is (the published code divides
  by 0 there) is left without water.
  """
  loc, scale, sigma, threshold, intensity, mud = params
  n, h, w = x.shape[:3]
  layer = image_ops.gaussian(rng.normal(loc, scale, (n, h, w)), sigma)
  layer[layer < threshold] = 0
  if mud:
    blobs = image_ops.gaussian((layer > threshold).astype(np.float32), intensity)
    blobs[blobs < 0.8] = 0
    return x * (1 - blobs[..., None]) + MUD * blobs[..., None]
  layer_u8 = (layer * 255).astype(np.uint8)
  amount = layer_u8 * water_texture(layer_u8)
  top = amount.max((1, 2), keepdims=True)
  amount = np.where(top > 0, amount / np.where(top > 0, top, 1), 0) * intensity
  return x + amount[..., None] * WATER
