"""Sparsity as pytrees: masks, pruning, layerwise densities, masks at initialisation, and the
sparsity updaters (optax wrappers that hold the masks and decide when they change).

Works on any Flax parameter tree: a linen params dict or a Flax NNX state
(`nnx.state(model, nnx.Param)`). Typical use::

  masks = sparsity.create_masks(params)                 # all alive, None off the kernels
  masks = sparsity.prune(params, masks, 0.9)            # keep the 10% largest weights
  params = sparsity.apply_masks(params, masks)          # pruned weights exactly 0
  tx = sparsity.FixedMasks().wrap(optax.sgd(0.1), masks)  # and they stay 0 in training
"""

from sms_jax.sparsity.distributions import DISTRIBUTIONS, layer_counts, layer_densities
from sms_jax.sparsity.dpf import DPF, FixedFeedback
from sms_jax.sparsity.gmp import CubicSchedule, GradualMagnitude, cubic_schedule
from sms_jax.sparsity.masks import (apply_masks, count_alive, create_masks, is_kernel,
                                    layer_alive, layer_stats, masks_equal, masks_like, path_name,
                                    prunable_filter, sparsity, zero_outside)
from sms_jax.sparsity.pruning import SELECTORS, phase_sparsity, prune
from sms_jax.sparsity.registry import UPDATERS
from sms_jax.sparsity.rigl import GraNet, RigL
from sms_jax.sparsity.set_updater import SET
from sms_jax.sparsity.updater import (FixedMasks, SparsityState, Updater, masks_of,
                                      replace_masks)

__all__ = [
    # Masks.
    "create_masks", "is_kernel", "prunable_filter", "apply_masks", "masks_like", "sparsity",
    "count_alive", "layer_alive", "layer_stats", "zero_outside", "masks_equal", "path_name",
    # Pruning.
    "prune", "phase_sparsity", "SELECTORS",
    # Layerwise densities.
    "layer_densities", "layer_counts", "DISTRIBUTIONS",
    # Updaters: the masking optax wrapper and what changes the masks.
    "Updater", "FixedMasks", "GradualMagnitude", "CubicSchedule", "cubic_schedule", "SET",
    "DPF", "FixedFeedback", "RigL", "GraNet", "SparsityState", "masks_of", "replace_masks",
    "UPDATERS",
]
