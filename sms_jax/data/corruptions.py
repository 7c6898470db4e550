"""Out-of-distribution test sets: corrupted copies of a dataset's test split.

`ood_sets(dataset, severity, key, selection)` builds them once, before the phases:
- image datasets (`Dataset.pixel_max` set): the test split is un-standardised to pixels in
  [0, 1], corrupted as CIFAR-10-C's published code does (`image_corruptions.corrupt`, with its
  parameters), stored in 8 bits as CIFAR-10-C stores them (truncated) when the dataset's
  pixels are 8-bit, and standardised again;
- CIFAR-10: the real CIFAR-10-C from TFDS instead, when every set asked for is prepared;
- 1-D signals (MNIST-1D): the analogues of `signal_corruptions` on the standardised inputs.

Which corruptions (config `ood.corruptions`): 'default' = CORRUPTIONS, six that cost little to
make (the reference evaluates the first, gaussian_noise); 'all' = every one the data has (18
for images, frost is left out; 6 for signals); or names separated by commas. Each set costs
a forward pass over it per phase.

Severity (config `ood.severity`): 1..5, or 'all': a corruption's set then holds the test split
corrupted at severities 1, 2, 3, 4 and 5, one after the other, so that its accuracy is the
mean of the five severities' accuracies (the sets are equally large), as CIFAR-C papers
report. The sets' names, the keys of a phase record's `ood`, are the corruptions' names
(`<dataset>_corrupted/<name>` for real TFDS sets), whatever the severity. Corruption i (its
index in its module's CORRUPTIONS) draws from `fold_in(key, i)` at every severity.
"""

import hashlib
import importlib.util

import jax
import jax.numpy as jnp
import numpy as np

from sms_jax.data import cache, image_corruptions, signal_corruptions
from sms_jax.data.arrays import Split, standardize, standardize_with
from sms_jax.data.dataset import Dataset

SEVERITIES = (1, 2, 3, 4, 5)
# The default selection, for images and signals alike.
CORRUPTIONS = ("gaussian_noise", "shot_noise", "impulse_noise", "speckle_noise",
               "gaussian_blur", "contrast")
# TFDS's names in `cifar10_corrupted` where they differ from the published code's.
TFDS_NAMES = {"glass_blur": "frosted_glass_blur", "elastic_transform": "elastic"}


def available(images: bool) -> tuple[str, ...]:
  """The corruptions that can be generated for images (pixel space) or 1-D signals."""
  return image_corruptions.CORRUPTIONS if images else signal_corruptions.CORRUPTIONS


def allowed_text(images: bool) -> str:
  """What `ood.corruptions` allows, for a config error message."""
  return "default, all, or comma-separated names among " + ", ".join(available(images))


def selection(spec: str, images: bool) -> tuple[str, ...]:
  """The corruptions `spec` ('default', 'all' or 'name,name,...') selects for images or
  signals, in the given order.

  Raises:
    ValueError: an unknown or repeated name, or an empty `spec`.
  """
  if spec == "default":
    return CORRUPTIONS
  if spec == "all":
    return available(images)
  names = tuple(part.strip() for part in spec.split(","))
  if not all(name in available(images) for name in names) or len(set(names)) < len(names):
    raise ValueError(f"ood.corruptions = {spec!r}; allowed: {allowed_text(images)}")
  return names


def selection_ok(spec, images: bool = True) -> bool:
  """Whether `spec` is a valid `ood.corruptions` for images (or signals)."""
  try:
    return isinstance(spec, str) and bool(selection(spec, images))
  except ValueError:
    return False


def config_error(spec: str, input_shape: tuple[int, ...]) -> str | None:
  """The one-line config error of `ood.corruptions = spec` for a dataset of examples shaped
  `input_shape` (images `(h, w, c)`, signals `(length, c)`), or None: names that only images
  have, asked of signals; jpeg_compression without Pillow installed."""
  images = len(input_shape) == 3
  if not selection_ok(spec, images):
    return (f"config key ood.corruptions = {spec!r} is not allowed for data of shape "
            f"{tuple(input_shape)} ({'images' if images else '1-D signals'}); allowed: "
            f"{allowed_text(images)}")
  wanted = set(selection(spec, images)) & set(image_corruptions.NEEDS_PILLOW) if images else ()
  if wanted and importlib.util.find_spec("PIL") is None:
    return (f"config key ood.corruptions = {spec!r} is not allowed here: "
            f"{', '.join(sorted(wanted))} needs Pillow (pip install pillow); allowed: "
            "other corruptions, or install Pillow")
  return None


def _severities(severity: int | str) -> tuple[int, ...]:
  return SEVERITIES if severity == "all" else (severity,)


def _real_sets(dataset: Dataset, names: tuple[str, ...],
               severities: tuple[int, ...]) -> dict[str, Split] | None:
  """The dataset's own corrupted test sets (`Dataset.ood_loader`), if it has all of them."""
  if dataset.ood_loader is None:
    return None
  loaded = [dataset.ood_loader(s, names) for s in severities]
  if any(sets is None for sets in loaded):
    return None
  return {f"{dataset.name}_corrupted/{name}":
          Split(np.concatenate([sets[name].x for sets in loaded]),
                np.concatenate([sets[name].y for sets in loaded])) for name in names}


def corrupt_standardized(key: jax.Array, x: np.ndarray, name: str, severity: int,
                         standardization: tuple[np.ndarray, np.ndarray],
                         pixel_max: float) -> np.ndarray:
  """Corrupts standardised images `x: [n, h, w, c]` in pixel space and standardises them again.

  Pixels are `raw / pixel_max` with `raw = x * std + mean` (`standardization = (mean, std)`);
  8-bit data (`pixel_max` 255) is rounded to its integer levels first and, corrupted, truncated
  to them again, as CIFAR-10-C stores its images (`np.uint8`).

  Returns:
    float32 `[n, h, w, c]`, standardised with `standardization`.
  """
  mean, std = standardization
  raw = np.asarray(x, np.float64) * std + mean
  eight_bit = pixel_max == 255
  if eight_bit:
    raw = np.round(raw)
  pixels = np.clip(raw / pixel_max, 0, 1)
  out = image_corruptions.corrupt(key, pixels, name, severity) * pixel_max
  if eight_bit:
    out = np.floor(out + 1e-6)  # Truncated; the guard keeps exact levels through float error.
  return standardize_with(standardization, out)[0]


def ood_sets(dataset: Dataset, severity: int | str, key: jax.Array,
             corruptions: str = "default") -> dict[str, Split]:
  """The corrupted test sets of `dataset` (see the module docstring): `{name: Split}`.

  Args:
    dataset: in-memory data (streamed data gets none).
    severity: 1..5, 'all' (each set holds the five severities in turn), or 0 (none).
    key: PRNG key; corruption i of its module's CORRUPTIONS uses `fold_in(key, i)`.
    corruptions: 'default', 'all' or a comma-separated list of names (`selection`).
  Returns:
    `{name: Split(x [k * n_test, ...] float32 standardised, y [k * n_test] int32)}` with k = 5
    for severity 'all', else 1; {} for severity 0 or streamed data.
  """
  if not severity or dataset.streaming:
    return {}
  images = dataset.pixel_max is not None and dataset.standardization is not None
  names, severities = selection(corruptions, images), _severities(severity)
  real = _real_sets(dataset, names, severities)
  if real is not None:
    return real
  test = dataset.test
  labels = np.tile(test.y, len(severities))
  if images:
    index = image_corruptions.CORRUPTIONS.index
    make = lambda name, s: corrupt_standardized(
        jax.random.fold_in(key, index(name)), test.x, name, s, dataset.standardization,
        dataset.pixel_max)
  else:
    index = signal_corruptions.CORRUPTIONS.index
    make = lambda name, s: signal_corruptions.corrupt(
        jax.random.fold_in(key, index(name)), jnp.asarray(test.x), name, s)
  generate = lambda: {name: np.concatenate([np.asarray(make(name, s)) for s in severities])
                      for name in names}
  generated = generate() if images else _cached_signal_sets(test.x, names, severities, key,
                                                             generate)
  return {name: Split(np.asarray(generated[name]), labels) for name in names}


def _cached_signal_sets(test_x: np.ndarray, names: tuple[str, ...], severities: list[int],
                        key: jax.Array, generate) -> dict[str, np.ndarray]:
  """`generate()`'s corrupted 1-D test sets, kept in the data cache (`sms_jax.data.cache`) by
  everything they depend on: the test signals, names, severities, key, the corruptions' code
  and the JAX version (about 1 s of every run of the embedded default; 1 MB).  Image sets are
  not cached: hundreds of MB each, and generated in a small part of a run's time."""
  with open(signal_corruptions.__file__, "rb") as f:
    code = hashlib.sha256(f.read()).hexdigest()
  key_data = jax.random.key_data(key) if jax.dtypes.issubdtype(
      key.dtype, jax.dtypes.prng_key) else key
  return cache.cached("ood_signals", {
      "test": cache.checksum({"x": test_x}), "names": list(names),
      "severities": [int(s) for s in severities], "key": np.asarray(key_data).tolist(),
      "code": code, "jax": jax.__version__}, generate)


def tfds_cifar10_corrupted(data_dir: str | None, reference_x: np.ndarray,
                           corruptions: tuple[str, ...] = CORRUPTIONS,
                           severity: int = 3) -> dict[str, Split] | None:
  """CIFAR-10-C's test images from TFDS (`cifar10_corrupted/{name}_{severity}`), if prepared.

  Nothing is downloaded; prepare each config beforehand (needs network), e.g.
  `tfds build cifar10_corrupted/gaussian_noise_3 --data_dir=...`. TensorFlow is imported here only.

  Args:
    data_dir: the TFDS data directory; None for TFDS's default.
    reference_x: the raw CIFAR-10 training inputs `[n, 32, 32, 3]` uint8 whose per-channel
      statistics standardised the model's data (`sms_jax.data.standardize`).
    corruptions: names of `image_corruptions.CORRUPTIONS` (TFDS's own names where they differ,
      `TFDS_NAMES`, are used to read them), or TFDS's extra ones, e.g. 'frost'.
    severity: 1 .. 5.
  Returns:
    `{name: Split(x [10000, 32, 32, 3] float32 standardised, y [10000] int32)}`, or None if
    any of the configs is not prepared in `data_dir`.
  """
  from sms_jax.data import tfds_source  # pylint: disable=g-import-not-at-top
  if isinstance(severity, bool) or severity not in SEVERITIES:
    raise ValueError(f"corruption severity must be an int in 1..5, got {severity!r}")
  names = {name: f"cifar10_corrupted/{TFDS_NAMES.get(name, name)}_{severity}"
           for name in corruptions}
  try:
    for tfds_name in names.values():  # Check them all before reading any.
      tfds_source.prepared_builder(tfds_name, data_dir)
  except tfds_source.DatasetNotPreparedError:
    return None
  splits = {name: tfds_source.load_split(tfds_name, "test", data_dir)
            for name, tfds_name in names.items()}
  xs = standardize(reference_x, *(split.x for split in splits.values()))
  return {name: Split(x, split.y) for (name, split), x in zip(splits.items(), xs)}
