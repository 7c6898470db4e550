"""Sparsity as pytrees: masks, the optax masking transforms (fixed and gradual), pruning,
layerwise densities."""

from sms_jax.sparsity.distributions import DISTRIBUTIONS, layer_counts, layer_densities
from sms_jax.sparsity.gradual import (GRADUAL_SELECTORS, CubicSchedule, cubic_schedule,
                                      gradual_pruning, gradual_sparsity)
from sms_jax.sparsity.masks import (apply_masks, count_alive, create_masks, layer_alive,
                                    layer_stats, masks_equal, path_name, prunable_filter,
                                    sparsity, zero_outside)
from sms_jax.sparsity.pruning import SELECTORS, phase_sparsity, prune
from sms_jax.sparsity.transform import (GradualPruningState, MaskedUpdatesState, held_masks,
                                        masked_updates, prune_opt_state)
