"""Host-side dataset containers: splits, validation hold-out, standardisation."""

from typing import Callable, Iterator, NamedTuple

import numpy as np


class Split(NamedTuple):
  """One in-memory split: `x: [n, ...] float32` (NHWC images or NLC signals), `y: [n] int32`."""
  x: np.ndarray
  y: np.ndarray

  @property
  def num_examples(self) -> int:
    return len(self.y)


class Stream(NamedTuple):
  """One split too large for memory, read from TFDS batch by batch (e.g. ImageNet).

  Attributes:
    name: the TFDS dataset.
    split: a TFDS split string, e.g. 'train[50000:]'.
    data_dir: the TFDS data directory ('' for TFDS's default).
    num_examples: examples in `split`.
    image_size: side of the square images the stream yields.
  """
  name: str
  split: str
  data_dir: str
  num_examples: int
  image_size: int

  def batches(self, batch_size: int, *, train: bool, seed: int = 0, epoch: int = 0,
              shard: tuple[int, int] = (0, 1)) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """`(x: [b, s, s, 3] float32, y: [b] int32)` batches; see `tfds_source.stream_batches`."""
    from sms_jax.data import tfds_source  # pylint: disable=g-import-not-at-top
    return tfds_source.stream_batches(self.name, self.split, batch_size=batch_size, seed=seed,
                                      epoch=epoch, train=train, data_dir=self.data_dir or None,
                                      image_size=self.image_size, shard=shard)


class Dataset(NamedTuple):
  """A dataset with its validation hold-out: in-memory `Split`s, or TFDS `Stream`s.

  Attributes:
    name: the config's `dataset.name`.
    train: the official train split minus the validation hold-out.
    val: `val_fraction` of the official train split, never augmented.
    test: the official test split.
    num_classes: number of labels.
    augment: the on-device training augmentation, one of `sms_jax.data.device.AUGMENTATIONS`
      ('none' for streams, which augment in their input pipeline).
    ood_loader: `severity -> {corruption: Split} or None`: a real corrupted test set
      standardised like `train` (CIFAR-10-C when prepared), read only when called.
  """
  name: str
  train: Split | Stream
  val: Split | Stream
  test: Split | Stream
  num_classes: int
  augment: str
  ood_loader: Callable[[int], dict[str, "Split"] | None] | None = None

  @property
  def streaming(self) -> bool:
    return isinstance(self.train, Stream)

  def steps_per_epoch(self, batch_size: int) -> int:
    """Full training batches per epoch; the remainder is dropped (a different one each epoch)."""
    return self.train.num_examples // batch_size

  @property
  def input_shape(self) -> tuple[int, ...]:
    """Shape of one example, e.g. (32, 32, 3) or (40, 1)."""
    if self.streaming:
      return (self.train.image_size, self.train.image_size, 3)
    return tuple(self.train.x.shape[1:])


def first_batches(split: Split | Stream, num_examples: int,
                  batch_size: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
  """The first `num_examples` examples of `split` in stored order, unaugmented, as `(x, y)`
  batches of `batch_size` (the last one may be smaller)."""
  num_examples = min(num_examples, split.num_examples)
  if isinstance(split, Split):
    for start in range(0, num_examples, batch_size):
      end = min(num_examples, start + batch_size)
      yield split.x[start:end], split.y[start:end]
    return
  seen = 0
  for x, y in split.batches(batch_size, train=False):
    if seen >= num_examples:
      return
    yield x[:num_examples - seen], y[:num_examples - seen]
    seen += x.shape[0]


def hold_out_validation(train: Split, fraction: float, seed: int) -> tuple[Split, Split]:
  """Splits `train` into (train, val) with `round(fraction * n)` validation examples.

  The hold-out is a fixed permutation of `seed` (numpy's PCG64), so it is the same on
  every machine and every run; both parts keep the original order of their examples.
  """
  n = len(train.y)
  n_val = int(round(fraction * n))
  if n_val == 0:
    return train, Split(train.x[:0], train.y[:0])
  val_idx = np.sort(np.random.default_rng(seed).permutation(n)[:n_val])
  is_val = np.zeros(n, bool)
  is_val[val_idx] = True
  return (Split(train.x[~is_val], train.y[~is_val]), Split(train.x[is_val], train.y[is_val]))


def standardize(reference: np.ndarray, *arrays: np.ndarray) -> list[np.ndarray]:
  """Standardises `arrays` per channel (last axis) with `reference`'s mean and std.

  Returns float32 arrays. The statistics come from the training inputs only, so that the
  validation and test splits are transformed the same way without leaking into them.
  """
  reduce_axes = tuple(range(reference.ndim - 1))
  mean = reference.mean(axis=reduce_axes, dtype=np.float64)
  std = reference.std(axis=reduce_axes, dtype=np.float64)
  mean = mean.astype(np.float32)
  std = np.where(std > 0, std, 1.0).astype(np.float32)
  return [(a.astype(np.float32) - mean) / std for a in arrays]
