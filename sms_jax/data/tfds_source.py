"""TensorFlow-Datasets sources: small image datasets as arrays, large ones as a stream.

Nothing here downloads. Datasets are read from a TFDS data directory prepared beforehand:
`data_dir` if given, else `$TFDS_DATA_DIR`, else `~/tensorflow_datasets`. To prepare one
(needs network, once, on any machine; then copy the folder `<data_dir>/<name>/`):

    tfds build cifar10 --data_dir=/path/to/tensorflow_datasets
    # or, equivalently:
    python -c "import tensorflow_datasets as tfds; \
        tfds.builder('cifar10', data_dir='/path/to/tensorflow_datasets').download_and_prepare()"

Supported in memory (`load_arrays`): mnist, fashion_mnist, cifar10, cifar100, svhn_cropped.

ImageNet (`imagenet2012`) is too large for memory and streams through `stream_batches`.
Its data cannot be downloaded by TFDS: register at https://image-net.org, put
`ILSVRC2012_img_train.tar` and `ILSVRC2012_img_val.tar` in a folder, then run

    tfds build imagenet2012 --data_dir=/path/to/tensorflow_datasets --manual_dir=/path/to/tars

(about 150 GB of disk, hours of CPU). ImageNet's official `validation` split serves as the
test split; the validation hold-out is a TFDS slice of the train split, e.g.

    train = stream_batches('imagenet2012', 'train[10%:]', train=True, ...)   # one epoch
    val = stream_batches('imagenet2012', 'train[:10%]', train=False, ...)
    test = stream_batches('imagenet2012', 'validation', train=False, ...)
    steps_per_epoch = num_examples('imagenet2012', 'train[10%:]', data_dir) // batch_size

TFDS slices are deterministic (a fixed range of the split's examples in file order), so
the hold-out is the same on every machine.

TensorFlow is imported lazily, only when a TFDS dataset is asked for, and is never
given a GPU, so that JAX keeps all accelerator memory.
"""

import logging
import os
import re
from typing import Any, Iterator, NamedTuple

import numpy as np

from sms_jax.data.arrays import Split

# ImageNet statistics of RGB pixels in [0, 255].
IMAGENET_MEAN = (0.485 * 255, 0.456 * 255, 0.406 * 255)
IMAGENET_STD = (0.229 * 255, 0.224 * 255, 0.225 * 255)
SHUFFLE_BUFFER = 10_000  # encoded examples (~110 kB each for ImageNet)
CROP_SCALE = (0.08, 1.0)  # random resized crop: fraction of the image area
CROP_RATIO = (3 / 4, 4 / 3)  # random resized crop: aspect ratio range


class DatasetNotPreparedError(ValueError):
  """The dataset is not in the TFDS data directory; the message says how to prepare it."""


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
    """`(x: [b, s, s, 3] float32, y: [b] int32)` batches; see `stream_batches`."""
    return stream_batches(self.name, self.split, batch_size=batch_size, seed=seed, epoch=epoch,
                          train=train, data_dir=self.data_dir or None,
                          image_size=self.image_size, shard=shard)


def _import_tf():
  """Imports TensorFlow quietly and hides the accelerators from it."""
  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
  # Input-pipeline ops gain nothing from oneDNN; turning it off also silences its banner.
  os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  try:
    tf.config.set_visible_devices([], "GPU")
  except (RuntimeError, ValueError):  # TF's runtime is already initialised.
    pass
  return tf


def _drop_tfds_noise(record: logging.LogRecord) -> bool:
  """Logging filter: drops TFDS's warning about its own use of a deprecated field."""
  return "FeatureConnector.dtype` is deprecated" not in record.getMessage()


def _import_tfds():
  _import_tf()
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  absl_logger = logging.getLogger("absl")
  if _drop_tfds_noise not in absl_logger.filters:
    absl_logger.addFilter(_drop_tfds_noise)
  return tfds


def _is_array_record(builder: Any) -> bool:
  """Whether the dataset was prepared as ArrayRecord (random access, no tf.data reader)."""
  return getattr(builder.info.file_format, "value", None) == "array_record"


def _one_line(text: str) -> str:
  return re.sub(r"\s+", " ", text).strip()


def _not_prepared_message(builder: Any, data_dir: str | None) -> str:
  """One line: what is missing, where it was searched, and the command that prepares it."""
  name, root = builder.name, os.fspath(builder.data_dir_root)
  where = root if data_dir else f"{root} (default: $TFDS_DATA_DIR or ~/tensorflow_datasets)"
  manual = getattr(builder, "MANUAL_DOWNLOAD_INSTRUCTIONS", None)
  if manual:
    return (f"TFDS dataset {name!r} is not prepared in {where}; it needs a manual download: "
            f"{_one_line(manual)} Then run: tfds build {name} --data_dir={root} "
            f"--manual_dir=/path/to/downloaded/files")
  return (f"TFDS dataset {name!r} is not prepared in {where}; prepare it (needs network) with: "
          f"tfds build {name} --data_dir={root} (or: python -c \"import tensorflow_datasets as "
          f"tfds; tfds.builder('{name}', data_dir='{root}').download_and_prepare()\")")


def prepared_builder(name: str, data_dir: str | None) -> Any:
  """Returns the `tfds.core.DatasetBuilder` of `name`, read from `data_dir`; never downloads.

  Raises:
    DatasetNotPreparedError: `name` is not prepared in `data_dir`.
  """
  tfds = _import_tfds()
  builder = tfds.builder(name, data_dir=data_dir, try_gcs=False)
  if not (builder.data_path.exists() and builder.is_prepared()):  # No warning if absent.
    raise DatasetNotPreparedError(_not_prepared_message(builder, data_dir))
  return builder


def _read_split(builder: Any, split: str) -> Split:
  """Reads a whole split: `x: [n, h, w, c] uint8`, `y: [n] int32`.

  TFRecord files (TFDS's default) are decoded by tf.data in one batch, the fastest way
  (about 2.5x faster than random access); ArrayRecord files through a TFDS data source.
  """
  tfds = _import_tfds()
  if _is_array_record(builder):
    source = builder.as_data_source(split=split)
    examples = source.__getitems__(list(range(len(source))))
    images = np.stack([ex["image"] for ex in examples])
    labels = np.array([ex["label"] for ex in examples])
  else:
    decoders = tfds.decode.PartialDecoding({"image": True, "label": True})
    batch = tfds.as_numpy(builder.as_dataset(split=split, batch_size=-1, decoders=decoders))
    images, labels = batch["image"], batch["label"]
  return Split(np.asarray(images, np.uint8), np.asarray(labels, np.int32))


def load_arrays(name: str, data_dir: str | None) -> tuple[Split, Split, int]:
  """Loads a TFDS image classification dataset into memory.

  Args:
    name: a TFDS name with 'image' and 'label' features and 'train' / 'test' splits, e.g.
      mnist, fashion_mnist, cifar10, cifar100 or svhn_cropped.
    data_dir: the TFDS data directory; None for TFDS's default.

  Returns:
    (official train split, official test split, num_classes), with `x: [n, h, w, c] uint8`
    (e.g. [n, 28, 28, 1] or [n, 32, 32, 3]) and `y: [n] int32`.

  Raises:
    DatasetNotPreparedError: the dataset is not prepared in `data_dir`.
  """
  builder = prepared_builder(name, data_dir)
  num_classes = builder.info.features["label"].num_classes
  return _read_split(builder, "train"), _read_split(builder, "test"), num_classes


def load_split(name: str, split: str, data_dir: str | None) -> Split:
  """Loads one split of a TFDS image classification dataset into memory.

  Args:
    name: a TFDS name (with config, e.g. 'cifar10_corrupted/fog_3') with 'image' and 'label'.
    split: a TFDS split string, e.g. 'test'.
    data_dir: the TFDS data directory; None for TFDS's default.
  Returns:
    `Split(x: [n, h, w, c] uint8, y: [n] int32)`.
  Raises:
    DatasetNotPreparedError: the dataset is not prepared in `data_dir`.
  """
  return _read_split(prepared_builder(name, data_dir), split)


def num_examples(name: str, split: str, data_dir: str | None) -> int:
  """Number of examples of a TFDS split string, e.g. 'train[10%:]'."""
  return prepared_builder(name, data_dir).info.splits[split].num_examples


def epoch_seed(seed: int, epoch: int) -> int:
  """A 31-bit seed that is a fixed function of (seed, epoch) on every platform."""
  return int(np.random.SeedSequence([seed, epoch]).generate_state(1)[0] >> 1)


def _random_crop_window(tf, shape, seed):
  """A random crop (offset [2], size [2]) of an image of `shape` [3], Inception-style."""
  whole = tf.constant([[[0.0, 0.0, 1.0, 1.0]]])
  begin, size, _ = tf.image.stateless_sample_distorted_bounding_box(
      shape, whole, seed=seed, min_object_covered=0.0, aspect_ratio_range=CROP_RATIO,
      area_range=CROP_SCALE, max_attempts=10, use_image_if_no_bounding_boxes=True)
  return begin[:2], size[:2]


def _train_image(tf, encoded, is_jpeg: bool, image_size: int, seed):
  """Random resized crop + horizontal flip of an encoded image: `[s, s, 3] float32`."""
  crop_seed, flip_seed = tf.unstack(tf.random.experimental.stateless_split(seed, 2))
  if is_jpeg:  # Decode only the crop window.
    offset, size = _random_crop_window(tf, tf.image.extract_jpeg_shape(encoded), crop_seed)
    window = tf.concat([offset, size], axis=0)
    image = tf.image.decode_and_crop_jpeg(encoded, window, channels=3)
  else:
    image = tf.io.decode_image(encoded, channels=3, expand_animations=False)
    offset, size = _random_crop_window(tf, tf.shape(image), crop_seed)
    image = tf.slice(image, tf.concat([offset, [0]], 0), tf.concat([size, [3]], 0))
  image = tf.image.resize(image, [image_size, image_size], antialias=True)
  return tf.image.stateless_random_flip_left_right(image, flip_seed)


def _eval_image(tf, encoded, image_size: int):
  """Resize of the shorter side to `image_size * 256 / 224`, center crop: `[s, s, 3] float32`."""
  image = tf.io.decode_image(encoded, channels=3, expand_animations=False)
  hw = tf.cast(tf.shape(image)[:2], tf.float32)
  short = round(image_size * 256 / 224)
  new_hw = tf.cast(tf.round(hw * short / tf.reduce_min(hw)), tf.int32)
  new_hw = tf.maximum(new_hw, image_size)
  image = tf.image.resize(image, new_hw, antialias=True)
  top, left = (new_hw[0] - image_size) // 2, (new_hw[1] - image_size) // 2
  image = image[top:top + image_size, left:left + image_size]
  return tf.ensure_shape(image, [image_size, image_size, 3])


def stream_batches(name: str, split: str, *, batch_size: int, seed: int, epoch: int,
                   train: bool, data_dir: str | None, image_size: int = 224,
                   shard: tuple[int, int] = (0, 1)) -> Iterator[tuple[np.ndarray, np.ndarray]]:
  """One epoch of `split` as preprocessed batches, through a tf.data pipeline.

  With `train`, the examples are shuffled and augmented (random resized crop, horizontal
  flip) as a fixed function of (seed, epoch), and the last incomplete batch is dropped.
  Otherwise the order is the split's and the last batch may be smaller. Images are
  normalised with ImageNet's per-channel mean and std (grayscale is expanded to RGB).

  Args:
    name: a TFDS image classification dataset with 'image' and 'label' features.
    split: a TFDS split string, e.g. 'train[10%:]' (training), 'train[:10%]' (hold-out).
    batch_size: examples per batch.
    seed: the run's data seed.
    epoch: the epoch number; each epoch gets its own order and augmentation.
    train: shuffle + augment + drop the remainder, or evaluation preprocessing.
    data_dir: the TFDS data directory; None for TFDS's default.
    image_size: side of the output images.
    shard: `(index, count)`: read only part `index` of `count` equal parts of `split` (one
      per process of a multi-host run; the remainder of the division is dropped, so every
      process takes the same number of steps).

  Yields:
    (images `[b, image_size, image_size, 3] float32`, labels `[b] int32`).

  Raises:
    DatasetNotPreparedError: the dataset is not prepared in `data_dir`.
  """
  tfds = _import_tfds()
  tf = _import_tf()
  builder = prepared_builder(name, data_dir)
  if _is_array_record(builder):
    raise DatasetNotPreparedError(
        f"TFDS dataset {name!r} is prepared as ArrayRecord, which tf.data cannot stream; "
        f"prepare it with: tfds build {name} --file_format=tfrecord")
  is_jpeg = builder.info.features["image"].encoding_format == "jpeg"
  if shard[1] > 1:
    split = tfds.even_splits(split, n=shard[1], drop_remainder=True)[shard[0]]
  ds_seed = epoch_seed(seed, epoch)
  read_config = tfds.ReadConfig(shuffle_seed=ds_seed, try_autocache=False)
  decoders = {"image": tfds.decode.SkipDecoding()}
  shuffle_files = train and not builder.info.disable_shuffling  # TFDS refuses for ordered ones.
  ds = builder.as_dataset(split=split, shuffle_files=shuffle_files, read_config=read_config,
                          decoders=decoders)
  ds = ds.map(lambda ex: (ex["image"], tf.cast(ex["label"], tf.int32)))
  if train:
    ds = ds.shuffle(SHUFFLE_BUFFER, seed=ds_seed, reshuffle_each_iteration=False)
    ds = ds.enumerate()  # The example's position seeds its augmentation.
    preprocess = lambda i, ex: (_train_image(tf, ex[0], is_jpeg, image_size,
                                             tf.stack([tf.cast(ds_seed, tf.int64), i])), ex[1])
  else:
    preprocess = lambda encoded, label: (_eval_image(tf, encoded, image_size), label)
  ds = ds.map(preprocess, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
  mean, std = tf.constant(IMAGENET_MEAN), tf.constant(IMAGENET_STD)
  ds = ds.batch(batch_size, drop_remainder=train)
  ds = ds.map(lambda x, y: ((x - mean) / std, y), num_parallel_calls=tf.data.AUTOTUNE,
              deterministic=True)
  return iter(tfds.as_numpy(ds.prefetch(tf.data.AUTOTUNE)))
