"""Sparse training with a standalone sparsity updater: one model, one training run, the
masks changed by the updater inside the jitted step.

Every updater of `sms_jax.sparsity.registry` marked `standalone` is a strategy of its own
name: `gmp` (gradual magnitude pruning from the start mask to `prune.goal_sparsity`), `set`
(drop and regrow at the start mask's density), and any updater registered later.
"""

import functools
import os
import time
from typing import Any

import ml_collections

from sms_jax import evaluation, models, plots, pretraining, report, sparsity
from sms_jax.data import Dataset
from sms_jax.sparsity import registry
from sms_jax.strategies.registry import Strategy, register
from sms_jax.training import state as state_lib


def run(config: ml_collections.ConfigDict, dataset: Dataset, workdir: str, *,
        updater: str) -> dict[str, Any]:
  """Trains one model with `updater` from the start mask.

  Returns the results' strategy part: `history` (with each epoch's mask `sparsity`),
  `updater` (what it did, e.g. gmp's update steps and sparsities), `final` (val/test
  metrics, `sparsity`, `sparsity_all`), `layers` and `flops` of the final model. Writes the
  plots of `plots.write_plots` (per-layer sparsity; accuracy and sparsity against epochs).
  """
  scalars = report.ScalarWriter(workdir)
  try:
    pretrained = pretraining.pretrain(config, dataset, workdir, scalars, updater=updater)
  finally:
    scalars.close()
  state, masks, tic = pretrained.state, pretrained.masks, time.perf_counter()
  if not sparsity.zero_outside(state.params, masks):
    raise RuntimeError(f"the model has nonzero weights outside its {updater} masks")
  final = pretraining.final_metrics(pretrained)
  record = evaluation.sparsity_record(state.params, masks,
                                      models.param_paths(pretrained.model, dataset.input_shape))
  final.update(sparsity=record["sparsity"], sparsity_all=record["sparsity_all"])
  report.log("final: " + "  ".join(f"{k} {v:.4f}" for k, v in final.items()))
  results = {
      "history": pretrained.history, **pretrained.records,
      "updater": pretrained.updater.describe(), "final": final, "layers": record["layers"],
      "flops": evaluation.flops_summary(evaluation.layer_flops(
          pretrained.model, {"params": state.params, "batch_stats": state.batch_stats},
          dataset.input_shape)),
      "train_time_s": pretrained.train_time_s, "eval_time_s": time.perf_counter() - tic,
      "num_params": state_lib.count_params(state.params)}
  plots.write_plots({"config": config, **results}, os.path.join(workdir, "plots"))
  return results


for _name, _registration in registry.UPDATERS.items():
  if _registration.standalone:
    register(Strategy(_name, functools.partial(run, updater=_name), check=_registration.check,
                      help=_registration.help))
