"""Analogues of common corruptions for standardised 1-D signals (MNIST-1D), in JAX.

In the spirit of CIFAR-10-C (Hendrycks & Dietterich, 2019), for data that has no pixel space:
`x: [n, length, c]` float32, standardised per channel (mean 0, std 1) (images `[n, h, w, c]`
work too, but image datasets use `sms_jax.data.image_corruptions`, the published CIFAR-10-C
corruptions in pixel space). The scales below are in units of the data's standard deviation
(noise), of the batch's per-channel range (shot, speckle, impulse), or of samples along each
spatial axis (blur):

| corruption     | what                                             | severity 1 .. 5              |
| -------------- | ------------------------------------------------ | ---------------------------- |
| gaussian_noise | x + N(0, s^2)                                    | s = 0.2, 0.4, 0.6, 0.8, 1.0  |
| shot_noise     | Poisson(lam * u) / lam on the intensities u      | lam = 250, 100, 50, 25, 12   |
| impulse_noise  | a fraction p of the entries set to lo or hi      | p = .01, .03, .05, .1, .2    |
| speckle_noise  | u + u * N(0, s^2) on the intensities u           | s = 0.1, 0.2, 0.3, 0.4, 0.6  |
| gaussian_blur  | Gaussian filter along each spatial axis in turn  | sigma = 0.5, 1, 1.5, 2, 3    |
| contrast       | mean + c * (x - mean), per example and channel   | c = 0.75, 0.5, 0.4, 0.3, 0.2 |

The intensities u = (x - lo) / (hi - lo) use the batch's per-channel minimum `lo` and maximum
`hi`, the stand-ins for a pixel range [0, 1]. Noisy values are clipped to [lo, hi], as
CIFAR-10-C clips to [0, 1]; impulse noise writes `lo` (pepper) or `hi` (salt). Because of that
range, corrupt a whole split at once, not batch by batch. Blur pads with the edge values, so
constant inputs stay constant.
"""

import functools
import math
from typing import Callable

import jax
import jax.numpy as jnp


CORRUPTIONS = ("gaussian_noise", "shot_noise", "impulse_noise", "speckle_noise",
               "gaussian_blur", "contrast")
SEVERITIES = (1, 2, 3, 4, 5)
# The severity's scale of each corruption, see the table above.
SCALES = {
    "gaussian_noise": (0.2, 0.4, 0.6, 0.8, 1.0),
    "shot_noise": (250.0, 100.0, 50.0, 25.0, 12.0),
    "impulse_noise": (0.01, 0.03, 0.05, 0.1, 0.2),
    "speckle_noise": (0.1, 0.2, 0.3, 0.4, 0.6),
    "gaussian_blur": (0.5, 1.0, 1.5, 2.0, 3.0),
    "contrast": (0.75, 0.5, 0.4, 0.3, 0.2),
}
BLUR_RADIUS = math.ceil(3 * max(SCALES["gaussian_blur"]))  # Taps on each side of the centre.


def _channel_range(x: jax.Array) -> tuple[jax.Array, jax.Array]:
  """The batch's per-channel minimum and maximum of `x: [n, ..., c]`, each `[c]`."""
  axes = tuple(range(x.ndim - 1))
  return x.min(axes), x.max(axes)


def _on_intensities(x: jax.Array, noise: Callable[[jax.Array], jax.Array]) -> jax.Array:
  """Applies `noise` to the intensities u = (x - lo) / (hi - lo) in [0, 1], maps back, clips."""
  lo, hi = _channel_range(x)
  width = jnp.where(hi > lo, hi - lo, 1.0)
  return jnp.clip(lo + noise((x - lo) / width) * width, lo, hi)


def gaussian_noise(key: jax.Array, x: jax.Array, std: float) -> jax.Array:
  """`x + N(0, std^2)`, clipped to the batch's per-channel range."""
  lo, hi = _channel_range(x)
  return jnp.clip(x + std * jax.random.normal(key, x.shape, x.dtype), lo, hi)


def shot_noise(key: jax.Array, x: jax.Array, rate: float) -> jax.Array:
  """Poisson noise: intensities u in [0, 1] become Poisson(rate * u) / rate."""
  return _on_intensities(x, lambda u: jax.random.poisson(key, rate * u).astype(x.dtype) / rate)


def speckle_noise(key: jax.Array, x: jax.Array, std: float) -> jax.Array:
  """Multiplicative noise: intensities u in [0, 1] become u + u * N(0, std^2)."""
  return _on_intensities(x, lambda u: u * (1 + std * jax.random.normal(key, x.shape, x.dtype)))


def impulse_noise(key: jax.Array, x: jax.Array, fraction: float) -> jax.Array:
  """Salt and pepper: each entry becomes, with probability `fraction`, the batch's per-channel
  minimum or maximum (either with probability 1/2)."""
  hit_key, salt_key = jax.random.split(key)
  lo, hi = _channel_range(x)
  hit = jax.random.bernoulli(hit_key, fraction, x.shape)
  salt = jax.random.bernoulli(salt_key, 0.5, x.shape)
  return jnp.where(hit, jnp.where(salt, hi, lo), x)


def gaussian_kernel(sigma: float | jax.Array, radius: int = BLUR_RADIUS) -> jax.Array:
  """Normalised 1-D Gaussian filter `[2 * radius + 1]` of standard deviation `sigma`."""
  taps = jnp.exp(-0.5 * (jnp.arange(-radius, radius + 1) / sigma) ** 2)
  return taps / taps.sum()


def gaussian_blur(x: jax.Array, sigma: float | jax.Array) -> jax.Array:
  """Blurs `x: [n, *spatial, c]` along each spatial axis in turn, padding with edge values.

  The filter has the radius of the largest sigma, whatever `sigma` (one compilation for all
  severities; the far taps of a small sigma are ~0).
  """
  taps = gaussian_kernel(sigma).astype(x.dtype)
  for axis in range(1, x.ndim - 1):
    size = x.shape[axis]
    pad = [(0, 0)] * x.ndim
    pad[axis] = (BLUR_RADIUS, BLUR_RADIUS)
    padded = jnp.pad(x, pad, mode="edge")
    x = sum(taps[i] * jax.lax.slice_in_dim(padded, i, i + size, axis=axis)
            for i in range(len(taps)))
  return x


def contrast(x: jax.Array, factor: float) -> jax.Array:
  """Pulls each example toward its per-channel mean: `mean + factor * (x - mean)`."""
  mean = x.mean(tuple(range(1, x.ndim - 1)), keepdims=True)
  return mean + factor * (x - mean)


def _check_severity(severity: int) -> None:
  if isinstance(severity, bool) or severity not in SEVERITIES:
    raise ValueError(f"corruption severity must be an int in 1..5, got {severity!r}")


@functools.partial(jax.jit, static_argnames="name")
def _apply(key: jax.Array, x: jax.Array, name: str, scale: float) -> jax.Array:
  """Corruption `name` at `scale`, compiled once per name and shape for all severities."""
  if name == "gaussian_blur":
    out = gaussian_blur(x, scale)
  elif name == "contrast":
    out = contrast(x, scale)
  else:
    noise = {"gaussian_noise": gaussian_noise, "shot_noise": shot_noise,
             "impulse_noise": impulse_noise, "speckle_noise": speckle_noise}[name]
    out = noise(key, x, scale)
  return out.astype(x.dtype)


def corrupt(key: jax.Array, x: jax.Array, name: str, severity: int = 3) -> jax.Array:
  """Corrupts `x: [n, *spatial, c]` with corruption `name` at `severity` (see the table above).

  Pure JAX and compiled (once per name and input shape); inside a jit, pass `name` and
  `severity` as static arguments. Deterministic given `key` (contrast and gaussian_blur
  ignore it).

  Args:
    key: PRNG key of the noise.
    x: standardised inputs `[n, *spatial, c]` (images `[n, h, w, c]` or signals `[n, l, c]`).
    name: one of CORRUPTIONS.
    severity: 1 (mild) .. 5 (strong).
  Returns:
    The corrupted inputs, of `x`'s shape and dtype.
  Raises:
    ValueError: unknown `name`, or `severity` not in 1..5.
  """
  if name not in CORRUPTIONS:
    raise ValueError(f"unknown corruption {name!r}; allowed: {', '.join(CORRUPTIONS)}")
  _check_severity(severity)
  return _apply(key, jnp.asarray(x), name, SCALES[name][severity - 1])
