"""Datasets as in-memory arrays (train / val / test), or TFDS streams for ImageNet.

`load(config.dataset)` returns a `Dataset`: the validation split is 10% of the
official train split (configurable), held out deterministically; inputs are float32,
standardised with the train split's per-channel statistics; labels are int32.
Modules: `arrays` (in-memory splits), `tfds_source` (TFDS arrays and the `Stream`),
`dataset` (the `Dataset`), `sources` (the registry), `device` (on-device batching and
augmentation), `corruptions` (OOD test sets). TensorFlow is imported only when a TFDS
dataset is read.
"""

from sms_jax.data.arrays import Split, hold_out_validation, standardize
from sms_jax.data.dataset import Dataset, first_batches
from sms_jax.data.sources import DATASETS, load
from sms_jax.data.tfds_source import Stream

__all__ = ["DATASETS", "Dataset", "Split", "Stream", "first_batches", "hold_out_validation",
           "load", "standardize"]
