"""Experiment strategies: each turns a validated config and a dataset into results.

  dense            train one model (dense, or inside a start mask)
  imp, imp_mx, sms prune-retrain phases: IMP, IMP with m times the retraining, Sparse Model
                   Soups (`prune_retrain`)
  sms_gmp          SMS between the mask updates of gradual magnitude pruning (`sms_gmp`)
  gmp, set, ...    one model trained with a standalone sparsity updater
                   (`sparse_training`: every such updater of `sparsity.registry`)
"""

from sms_jax.strategies import dense, prune_retrain, sms_gmp, sparse_training  # Register.
from sms_jax.strategies.registry import STRATEGIES, Strategy, candidates_per_phase, register

__all__ = ["STRATEGIES", "Strategy", "candidates_per_phase", "register"]
