"""Pruning during training on the embedded MNIST-1D data: SMS on dynamic pruning with feedback.

One 60-epoch cosine training run of the 1-D CNN (configs/mnist1d.py's) in which the sparsity
rises to 95% along the cubic schedule between epochs 10 and 45 (sms_gmp_mnist1d's schedule).
`strategy=sms_dpf` (the default here) recomputes the mask from the dense weights at 35 phase
starts, once an epoch (epochs 11, 12, ..., 45): from each, m = 4 candidates with different
seeds train to the next one (the last to epoch 60) on their masked weights while their dense
weights keep learning, and the soup of their dense weights gives the next phase's mask and
start. Phases must be short here: between mask updates the pruned dense weights drift, and
DPF's accuracy falls with the interval. One seed (2-core CPU, 70 s): sms_dpf 0.892 test; with
12 phases 3 epochs apart 0.786; dpf 0.934 (on a 30-epoch variant, 0.870 updating every 16
steps, 0.758 every 28); gmp 0.895; sms_gmp at the same 35 phases 0.868; gmp_mx 0.899.
The same schedule runs the other pruning-during-training strategies:
  --config.strategy=dpf      DPF, one model, its mask recomputed every 16 steps (the paper's k)
  --config.strategy=gmp      gradual magnitude pruning, every 16 steps, no dense weights
  --config.strategy=sms_gmp  SMS on GMP at the same 35 phase starts
  --config.strategy=gmp_mx   sms_gmp's phases with one model trained 4 times longer (the
                             compute of sms_gmp and sms_dpf)
`:quick` is a smoke test.
"""

from sms_jax.configs import sms_gmp_mnist1d


def get_config(arg: str = ""):
  """SMS-DPF on MNIST-1D; `arg` '' or 'quick' (sms_gmp_mnist1d's schedule and its quick
  variant, with 35 phases and an update every 16 steps)."""
  config = sms_gmp_mnist1d.get_config(arg)
  config.strategy = "sms_dpf"
  if arg != "quick":
    config.prune.n_phases = 35
    config.gradual.update_every = 16  # Steps between dpf's / gmp's mask updates (DPF's k).
  return config
