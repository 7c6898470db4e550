"""Sparsity as pytrees: masks, pruning, layerwise densities, masks at initialisation, and the
sparsity updaters (optax wrappers that hold the masks and decide when they change)."""

from sms_jax.sparsity.distributions import DISTRIBUTIONS, layer_counts, layer_densities
from sms_jax.sparsity.gmp import CubicSchedule, GradualMagnitude, cubic_schedule
from sms_jax.sparsity.masks import (apply_masks, count_alive, create_masks, layer_alive,
                                    layer_stats, masks_equal, path_name, prunable_filter,
                                    sparsity, zero_outside)
from sms_jax.sparsity.pruning import SELECTORS, phase_sparsity, prune
from sms_jax.sparsity.registry import UPDATERS
from sms_jax.sparsity.set_updater import SET
from sms_jax.sparsity.updater import (FixedMasks, SparsityState, Updater, masks_of,
                                      replace_masks)
