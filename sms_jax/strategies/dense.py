"""Dense training: train one model from scratch, then evaluate it on val and test."""

import os
from typing import Any

import jax
import ml_collections

from sms_jax import checkpoints, models, report
from sms_jax.data import Dataset
from sms_jax.training import loop, optimizer, state as state_lib


def run(config: ml_collections.ConfigDict, dataset: Dataset, workdir: str) -> dict[str, Any]:
  """Trains `config.model` on `dataset` for `config.train.epochs`, resumable from `workdir`.

  Returns the results' strategy part: `history`, `final` and the model's size.
  """
  model = models.create_model(config.model.name, dataset.num_classes)
  steps_per_epoch = dataset.steps_per_epoch(config.train.batch_size)
  tx = optimizer.make_optimizer(config.train, steps_per_epoch)
  init_key, data_key = jax.random.split(jax.random.key(config.seed))
  state = state_lib.create_train_state(model, tx, init_key, dataset.input_shape)
  report.log(f"model {config.model.name}: {state_lib.count_params(state.params):,} parameters; "
             f"{dataset.train.num_examples} train / {dataset.val.num_examples} val / "
             f"{dataset.test.num_examples} test examples, {steps_per_epoch} steps per epoch")

  checkpointer = checkpoints.Checkpointer(os.path.join(workdir, "checkpoints"),
                                          config.checkpoint.keep)
  scalars = report.ScalarWriter(workdir)
  evaluator = loop.Evaluator(model, dataset, config.train.eval_batch_size)
  try:
    state, history, elapsed = loop.fit(
        state, model=model, tx=tx, dataset=dataset, train_config=config.train, key=data_key,
        checkpointer=checkpointer, every_epochs=config.checkpoint.every_epochs,
        evaluator=evaluator, scalars=scalars)
  finally:
    checkpointer.close()
    scalars.close()

  # The last epoch was evaluated on val already; only the test split is new.
  final = {k: v for k, v in history[-1].items() if k.startswith("val_")}
  final.update({f"test_{k}": v for k, v in evaluator.evaluate(state, "test").items()})
  report.log("final: " + "  ".join(f"{k} {v:.4f}" for k, v in final.items()))
  return {"history": history, "final": final, "train_time_s": elapsed,
          "num_params": state_lib.count_params(state.params)}
