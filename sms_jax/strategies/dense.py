"""Dense training: train one model from scratch, then evaluate it on val and test.

`pretrain` is also the first stage of the pruning strategies (imp, imp_mx, sms).
"""

import os
from typing import Any, NamedTuple

import flax.linen as nn
import jax
import ml_collections

from sms_jax import checkpoints, models, report
from sms_jax.data import Dataset
from sms_jax.training import loop, optimizer, state as state_lib


class Pretrained(NamedTuple):
  """The trained dense model and what evaluating and reporting it needs."""
  model: nn.Module
  state: state_lib.TrainState
  history: list[dict[str, Any]]
  train_time_s: float
  evaluator: loop.Evaluator


def pretrain(config: ml_collections.ConfigDict, dataset: Dataset, workdir: str,
             scalars: report.ScalarWriter) -> Pretrained:
  """Trains `config.model` on `dataset` for `config.train.epochs`, resumable from
  `<workdir>/checkpoints/pretrain`."""
  model = models.create_model(config.model.name, dataset.num_classes)
  steps_per_epoch = dataset.steps_per_epoch(config.train.batch_size)
  tx = optimizer.make_optimizer(config.train, steps_per_epoch)
  init_key, data_key = jax.random.split(jax.random.key(config.seed))
  state = state_lib.create_train_state(model, tx, init_key, dataset.input_shape)
  report.log(f"model {config.model.name}: {state_lib.count_params(state.params):,} parameters; "
             f"{dataset.train.num_examples} train / {dataset.val.num_examples} val / "
             f"{dataset.test.num_examples} test examples, {steps_per_epoch} steps per epoch")
  evaluator = loop.Evaluator(model, dataset, config.train.eval_batch_size)
  checkpointer = checkpoints.Checkpointer(os.path.join(workdir, "checkpoints", "pretrain"),
                                          config.checkpoint.keep)
  try:
    state, history, elapsed = loop.fit(
        state, loop.train_epochs(state, dataset, data_key, config.train, model=model, tx=tx),
        epochs=config.train.epochs, evaluate=lambda s: evaluator.evaluate(s, "val"),
        checkpointer=checkpointer, every_epochs=config.checkpoint.every_epochs,
        eval_every_epochs=config.train.eval_every_epochs,
        images_per_epoch=steps_per_epoch * config.train.batch_size, scalars=scalars)
  finally:
    checkpointer.close()
  return Pretrained(model, state, history, elapsed, evaluator)


def run(config: ml_collections.ConfigDict, dataset: Dataset, workdir: str) -> dict[str, Any]:
  """Dense training only. Returns the results' strategy part: `history`, `final`, size."""
  scalars = report.ScalarWriter(workdir)
  try:
    pretrained = pretrain(config, dataset, workdir, scalars)
  finally:
    scalars.close()
  # The last epoch was evaluated on val already; only the test split is new.
  final = {k: v for k, v in pretrained.history[-1].items() if k.startswith("val_")}
  final.update({f"test_{k}": v
                for k, v in pretrained.evaluator.evaluate(pretrained.state, "test").items()})
  report.log("final: " + "  ".join(f"{k} {v:.4f}" for k, v in final.items()))
  return {"history": pretrained.history, "final": final, "train_time_s": pretrained.train_time_s,
          "num_params": state_lib.count_params(pretrained.state.params)}
