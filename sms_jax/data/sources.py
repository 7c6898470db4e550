"""The dataset registry: embedded datasets (no network, ever) and TFDS datasets.

Embedded: `mnist1d` (generated procedurally by the mnist1d package) and `digits`
(scikit-learn's 8x8 digits, shipped inside the package). TFDS: small image datasets
loaded once into memory; `imagenet2012` streams (see `sms_jax.data.tfds_source`): its
validation hold-out is the first `val_fraction` of the train split in TFDS's file order,
and its test split is the official 'validation' split.
TensorFlow is imported only when a TFDS dataset is asked for.
"""

import functools
from importlib import metadata
from typing import Callable, NamedTuple

import numpy as np

from sms_jax.data import cache, tfds_source
from sms_jax.data.arrays import (Split, hold_out_validation, standardization_stats,
                                 standardize_with)
from sms_jax.data.dataset import Dataset

RawSplits = tuple[Split, Split, int]  # (official train, official test, num_classes)


class Source(NamedTuple):
  """How to get a dataset: `load(data_dir) -> (train, test, num_classes)`, its augmentation,
  and the shape of one example and number of classes (known without loading it; streamed
  images at their default size).

  A streaming source has no `load`; its splits are read from TFDS batch by batch.
  """
  load: Callable[[str], RawSplits] | None
  augment: str
  input_shape: tuple[int, ...]
  num_classes: int


def _mnist1d(data_dir: str) -> RawSplits:
  """MNIST-1D, generated locally: 4000 train / 1000 test signals `[40, 1]`, 10 classes.

  Generated once per version of the `mnist1d` package (with its default arguments), then read
  from the disk cache (`sms_jax.data.cache`) without importing the package (1.5 s).
  """
  del data_dir

  def make():
    from mnist1d.data import get_dataset_args, make_dataset  # pylint: disable=g-import-not-at-top
    data = make_dataset(get_dataset_args())
    return {"x": np.asarray(data["x"], np.float32)[..., None],
            "y": np.asarray(data["y"], np.int32),
            "x_test": np.asarray(data["x_test"], np.float32)[..., None],
            "y_test": np.asarray(data["y_test"], np.int32)}

  arrays = cache.cached("mnist1d", {"arguments": "get_dataset_args()",
                                    "version": metadata.version("mnist1d")}, make)
  return Split(arrays["x"], arrays["y"]), Split(arrays["x_test"], arrays["y_test"]), 10


def _digits(data_dir: str, test_fraction: float = 0.2) -> RawSplits:
  """scikit-learn's digits: 1797 images `[8, 8, 1]`, 10 classes; a fixed 20% is the test split."""
  del data_dir
  from sklearn.datasets import load_digits  # pylint: disable=g-import-not-at-top
  digits = load_digits()
  x = (digits.images[..., None] / 16.0).astype(np.float32)
  y = digits.target.astype(np.int32)
  train, test = hold_out_validation(Split(x, y), test_fraction, seed=1797)
  return train, test, 10


def _tfds(name: str, data_dir: str) -> RawSplits:
  return tfds_source.load_arrays(name, data_dir or None)


DATASETS: dict[str, Source] = {
    "mnist1d": Source(_mnist1d, "none", (40, 1), 10),
    "digits": Source(_digits, "none", (8, 8, 1), 10),
    "mnist": Source(functools.partial(_tfds, "mnist"), "none", (28, 28, 1), 10),
    "fashion_mnist": Source(functools.partial(_tfds, "fashion_mnist"), "none", (28, 28, 1), 10),
    "cifar10": Source(functools.partial(_tfds, "cifar10"), "crop_flip", (32, 32, 3), 10),
    "cifar100": Source(functools.partial(_tfds, "cifar100"), "crop_flip", (32, 32, 3), 100),
    "svhn_cropped": Source(functools.partial(_tfds, "svhn_cropped"), "crop", (32, 32, 3), 10),
    # Streams; the test split is 'validation'.
    "imagenet2012": Source(None, "none", (224, 224, 3), 1000),
}


def _streams(dataset_config) -> Dataset:
  """TFDS streams: val = the first `val_fraction` of the (first `num_train`) train examples."""
  name, data_dir = dataset_config.name, dataset_config.data_dir
  builder = tfds_source.prepared_builder(name, data_dir or None)
  total = builder.info.splits["train"].num_examples
  total = min(total, dataset_config.num_train or total)
  n_val = int(round(dataset_config.val_fraction * total))
  stream = lambda split, n: tfds_source.Stream(name, split, data_dir, n, dataset_config.image_size)
  return Dataset(name=name, train=stream(f"train[{n_val}:{total}]", total - n_val),
                 val=stream(f"train[:{n_val}]", n_val),
                 test=stream("validation", builder.info.splits["validation"].num_examples),
                 num_classes=builder.info.features["label"].num_classes, augment="none",
                 standardization=(np.float32(tfds_source.IMAGENET_MEAN),
                                  np.float32(tfds_source.IMAGENET_STD)))


VAL_SEED = 0  # Fixes which examples form the validation hold-out, for every run.


def load(dataset_config) -> Dataset:
  """Loads `dataset_config.name` into memory as a standardised `Dataset`.

  Args:
    dataset_config: the config's `dataset` block (`name`, `data_dir`, `val_fraction`,
      `augment`, `num_train`, `image_size`).
  Returns:
    A `Dataset` of in-memory `Split`s, or of `Stream`s for datasets that stream (ImageNet).
  """
  source = DATASETS[dataset_config.name]
  if source.load is None:
    return _streams(dataset_config)
  train, test, num_classes = source.load(dataset_config.data_dir)
  if dataset_config.num_train:
    train = Split(train.x[: dataset_config.num_train], train.y[: dataset_config.num_train])
  train, val = hold_out_validation(train, dataset_config.val_fraction, VAL_SEED)
  stats = standardization_stats(train.x)
  train_x, val_x, test_x = standardize_with(stats, train.x, val.x, test.x)
  augment = source.augment if dataset_config.augment == "auto" else dataset_config.augment
  ood_loader = None
  if dataset_config.name == "cifar10":
    from sms_jax.data import corruptions  # pylint: disable=g-import-not-at-top
    raw_train_x, data_dir = train.x, dataset_config.data_dir or None
    ood_loader = lambda severity, names=corruptions.CORRUPTIONS: (
        corruptions.tfds_cifar10_corrupted(data_dir, raw_train_x, names, severity))
  # Images' pixel range, for the OOD sets' corruptions in pixel space: TFDS stores uint8
  # pixels, digits [0, 1] floats; 1-D signals have none.
  pixel_max = None if train.x.ndim != 4 else 255.0 if train.x.dtype == np.uint8 else 1.0
  return Dataset(name=dataset_config.name, train=Split(train_x, train.y),
                 val=Split(val_x, val.y), test=Split(test_x, test.y),
                 num_classes=num_classes, augment=augment, ood_loader=ood_loader,
                 standardization=stats, pixel_max=pixel_max)
