"""Flax (linen) models: MLP, small CNNs, CIFAR ResNets, WideResNets, VGG, ImageNet ResNets.

`create_model(name, num_classes)` returns a module applied as `model.apply(variables, x,
train=bool)`; see `sms_jax.models.registry` for the conventions shared by every model.
"""

from sms_jax.models.registry import (COMPUTE_DTYPES, MODEL_NAMES_HELP, compute_dtype, create_model,
                                     input_ndim, is_known_model, param_paths)

__all__ = ["COMPUTE_DTYPES", "MODEL_NAMES_HELP", "compute_dtype", "create_model", "input_ndim",
           "is_known_model", "param_paths"]
