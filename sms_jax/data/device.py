"""On-device batching and augmentation: pure JAX functions of a PRNG key.

Because the batch order and the augmentation of an epoch depend only on a key, a whole
epoch runs inside one jitted `lax.scan`, and a run's data order is a function of its seed.
"""

import jax
import jax.numpy as jnp

# crop_flip_rotate: the SMS reference's CIFAR-100 training augmentation (crop, flip, then a
# random rotation of up to MAX_DEGREES, in that order).
AUGMENTATIONS = ("none", "crop", "crop_flip", "flip", "crop_flip_rotate")
PAD = 4
MAX_DEGREES = 15.0


def epoch_batches(key: jax.Array, num_examples: int, batch_size: int) -> jax.Array:
  """A random permutation of the examples cut into full batches.

  Returns `[num_examples // batch_size, batch_size]` int32 indices; the remainder of the
  permutation (fewer than `batch_size` examples) is dropped for this epoch.
  """
  steps = num_examples // batch_size
  perm = jax.random.permutation(key, num_examples)
  return perm[: steps * batch_size].reshape(steps, batch_size)


def random_crop(key: jax.Array, images: jax.Array, pad: int = PAD) -> jax.Array:
  """Zero-pads `images: [b, h, w, c]` by `pad` pixels and crops each back at a random offset."""
  b, h, w, _ = images.shape
  padded = jnp.pad(images, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
  offsets = jax.random.randint(key, (b, 2), 0, 2 * pad + 1)
  crop = lambda img, off: jax.lax.dynamic_slice(img, (off[0], off[1], 0), (h, w, img.shape[-1]))
  return jax.vmap(crop)(padded, offsets)


def random_flip(key: jax.Array, images: jax.Array) -> jax.Array:
  """Flips each of `images: [b, h, w, c]` left-right with probability 1/2."""
  flip = jax.random.bernoulli(key, 0.5, (images.shape[0], 1, 1, 1))
  return jnp.where(flip, images[:, :, ::-1, :], images)


def rotate(images: jax.Array, degrees: jax.Array) -> jax.Array:
  """Rotates each of `images: [b, h, w, c]` counter-clockwise by its `degrees: [b]` about the
  image centre, keeping the size: nearest neighbour, zero fill.

  As torchvision's `RandomRotation` with its defaults (nearest, `expand=False`, fill 0) on a
  PIL image: output pixel (i, j) takes the input pixel nearest (half-way rounded up) to its
  inverse-rotated centre, or 0 where that falls outside the image. 90 degrees is `np.rot90`.
  """
  b, h, w, _ = images.shape
  theta = jnp.deg2rad(jnp.asarray(degrees, jnp.float32))[:, None, None]
  cos, sin = jnp.cos(theta), jnp.sin(theta)
  cy, cx = (h - 1) / 2.0, (w - 1) / 2.0
  rows, cols = jnp.meshgrid(jnp.arange(h, dtype=jnp.float32) - cy,
                            jnp.arange(w, dtype=jnp.float32) - cx, indexing="ij")
  # Inverse rotation of each output pixel's centre (rows point down, hence the signs).
  src_r = jnp.floor(cy + cols * sin + rows * cos + 0.5).astype(jnp.int32)  # [b, h, w]
  src_c = jnp.floor(cx + cols * cos - rows * sin + 0.5).astype(jnp.int32)
  inside = (src_r >= 0) & (src_r < h) & (src_c >= 0) & (src_c < w)
  flat = jnp.clip(src_r, 0, h - 1) * w + jnp.clip(src_c, 0, w - 1)
  gathered = jnp.take_along_axis(images.reshape(b, h * w, -1), flat.reshape(b, h * w, 1), axis=1)
  return jnp.where(inside[..., None], gathered.reshape(images.shape), 0).astype(images.dtype)


def random_rotate(key: jax.Array, images: jax.Array,
                  max_degrees: float = MAX_DEGREES) -> jax.Array:
  """Rotates each of `images: [b, h, w, c]` by its own angle drawn uniformly from
  [-max_degrees, max_degrees] (see `rotate`; torchvision's `RandomRotation(max_degrees)`).

  The reference rotates raw pixels, so its fill is black; here the images are standardised,
  so the fill 0 is the training set's mean colour, as for `random_crop`'s padding.
  """
  degrees = jax.random.uniform(key, (images.shape[0],), jnp.float32, -max_degrees, max_degrees)
  return rotate(images, degrees)


def augment(key: jax.Array, inputs: jax.Array, kind: str) -> jax.Array:
  """Applies the training augmentation `kind` (one of AUGMENTATIONS) to a batch.

  crop: `random_crop`; flip: `random_flip`; crop_flip: crop then flip; crop_flip_rotate:
  crop, flip, then `random_rotate` (up to MAX_DEGREES). Each step has its own key from `key`
  (crop and flip draw the same in every kind that has them).
  """
  if kind not in AUGMENTATIONS:
    raise ValueError(f"unknown augmentation {kind!r}; allowed: {', '.join(AUGMENTATIONS)}")
  crop_key, flip_key = jax.random.split(key)
  if kind in ("crop", "crop_flip", "crop_flip_rotate"):
    inputs = random_crop(crop_key, inputs)
  if kind in ("flip", "crop_flip", "crop_flip_rotate"):
    inputs = random_flip(flip_key, inputs)
  if kind == "crop_flip_rotate":
    inputs = random_rotate(jax.random.fold_in(key, 2), inputs)
  return inputs
