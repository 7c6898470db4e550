"""Dense training: train one model from scratch (or inside a start mask), then evaluate it."""

from typing import Any

import ml_collections

from sms_jax import pretraining, report, sparsity
from sms_jax.data import Dataset
from sms_jax.strategies.registry import Strategy, register
from sms_jax.training import state as state_lib


def run(config: ml_collections.ConfigDict, dataset: Dataset, workdir: str) -> dict[str, Any]:
  """Returns the results' strategy part: `history`, `final`, `num_params` (and `init_mask`)."""
  scalars = report.ScalarWriter(workdir)
  try:
    pretrained = pretraining.pretrain(config, dataset, workdir, scalars)
  finally:
    scalars.close()
  final = pretraining.final_metrics(pretrained)
  report.log("final: " + "  ".join(f"{k} {v:.4f}" for k, v in final.items()))
  if pretrained.init_mask:
    final["sparsity"] = sparsity.sparsity(pretrained.masks)
  return {"history": pretrained.history, **pretrained.records, "final": final,
          "train_time_s": pretrained.train_time_s,
          "num_params": state_lib.count_params(pretrained.state.params)}


register(Strategy("dense", run, shares_pretraining=True, rewinds=True,
                  help="train one model, dense or inside a start mask"))
