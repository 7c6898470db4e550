"""Datasets as in-memory arrays (train / val / test), or TFDS streams for ImageNet.

`load(config.dataset)` returns a `Dataset`: the validation split is 10% of the
official train split (configurable), held out deterministically; inputs are float32,
standardised with the train split's per-channel statistics; labels are int32.
"""

from sms_jax.data.arrays import (Dataset, Split, Stream, first_batches, hold_out_validation,
                                 standardize)
from sms_jax.data.sources import DATASETS, load

__all__ = [
    "DATASETS", "Dataset", "Split", "Stream", "hold_out_validation", "load", "standardize"]
