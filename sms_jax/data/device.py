"""On-device batching and augmentation: pure JAX functions of a PRNG key.

Because the batch order and the augmentation of an epoch depend only on a key, a whole
epoch runs inside one jitted `lax.scan`, and a run's data order is a function of its seed.
"""

import jax
import jax.numpy as jnp

AUGMENTATIONS = ("none", "crop", "crop_flip", "flip")
PAD = 4


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


def augment(key: jax.Array, inputs: jax.Array, kind: str) -> jax.Array:
  """Applies the training augmentation `kind` (one of AUGMENTATIONS) to a batch."""
  if kind not in AUGMENTATIONS:
    raise ValueError(f"unknown augmentation {kind!r}; allowed: {', '.join(AUGMENTATIONS)}")
  crop_key, flip_key = jax.random.split(key)
  if kind in ("crop", "crop_flip"):
    inputs = random_crop(crop_key, inputs)
  if kind in ("flip", "crop_flip"):
    inputs = random_flip(flip_key, inputs)
  return inputs
