"""Experiment strategies: each turns a validated config and a dataset into results.

  dense            train one model (dense, or inside a start mask)
  imp, imp_mx, sms prune-retrain phases: IMP, IMP with m times the retraining, Sparse Model
                   Soups (`prune_retrain`)
  sms_gmp, gmp_mx  SMS between the mask updates of gradual magnitude pruning, and one model
                   trained soup.m times longer there: its equal compute (`sms_gmp`)
  sms_dpf          SMS between the mask updates of dynamic pruning with feedback (`sms_dpf`)
  sms_rigl,        SMS between RigL's / GraNet's drop-and-regrow updates at the phase starts
  sms_granet       (`sms_rigl`)
  bimp, sms_bimp   budgeted IMP: a shortened dense run, ALLR phases, the same total epochs;
                   with soups (`bimp`)
  imp_avg_reprune  m lineages per phase with different masks, averaged, re-pruned,
                   retrained: the baseline SMS avoids (`imp_avg_reprune`)
  edge_popup       scores choose a subnetwork of frozen random weights (`edge_popup`)
  gmp, dpf, set    one model trained with a standalone sparsity updater
                   (`sparse_training`: every such updater of `sparsity.registry`)
"""

from sms_jax.strategies import (  # Register.
    bimp, dense, edge_popup, imp_avg_reprune, prune_retrain, sms_dpf, sms_gmp, sms_rigl,
    sparse_training)
from sms_jax.strategies.registry import STRATEGIES, Strategy, candidates_per_phase, register

__all__ = ["STRATEGIES", "Strategy", "candidates_per_phase", "register"]
