"""The `Dataset`: train / val / test splits held in memory (`Split`) or streamed (`Stream`)."""

from typing import Any, Callable, Iterator, NamedTuple

import numpy as np

from sms_jax.data.arrays import Split
from sms_jax.data.tfds_source import Stream


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
    ood_loader: `(severity, names) -> {name: Split} or None`: real corrupted test sets
      standardised like `train` (CIFAR-10-C when prepared), read only when called.
    standardization: `(mean, std)`, float32 `[channels]`: the model's inputs are
      `(raw - mean) / std` of the dataset's stored inputs (MNIST-1D signals, pixels 0-255 of
      TFDS images), per channel; None if unknown.
    pixel_max: the stored inputs are images `[h, w, c]` with pixels in [0, pixel_max] (255 for
      TFDS images, 1 for digits): OOD sets are corrupted in that pixel space
      (`sms_jax.data.corruptions`); None for other data (1-D signals).
  """
  name: str
  train: Split | Stream
  val: Split | Stream
  test: Split | Stream
  num_classes: int
  augment: str
  ood_loader: Callable[..., dict[str, "Split"] | None] | None = None
  standardization: tuple[np.ndarray, np.ndarray] | None = None
  pixel_max: float | None = None

  @property
  def streaming(self) -> bool:
    return isinstance(self.train, Stream)

  def steps_per_epoch(self, batch_size: int) -> int:
    """Full training batches per epoch; the remainder is dropped (a different one each epoch)."""
    return self.train.num_examples // batch_size

  def describe(self) -> dict[str, Any]:
    """What a model trained on this dataset needs to know of its inputs (the workdir's
    data.json): `name`, `input_shape`, `num_classes` and the `standardization`'s
    `mean` and `std` lists (None if unknown)."""
    stats = None if self.standardization is None else {
        "mean": np.asarray(self.standardization[0], np.float32).tolist(),
        "std": np.asarray(self.standardization[1], np.float32).tolist()}
    return {"name": self.name, "input_shape": list(self.input_shape),
            "num_classes": self.num_classes, "standardization": stats}

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
