"""Dense training: train one model from scratch, then evaluate it on val and test.

`pretrain` is also the first stage of the pruning strategies (imp, imp_mx, sms).
"""

import os
from typing import Any, Callable, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import optax

from sms_jax import checkpoints, metrics, models, parallel, report, sparsity
from sms_jax.data import Dataset, first_batches
from sms_jax.sparsity import init_masks
from sms_jax.training import loop, optimizer, state as state_lib


class Pretrained(NamedTuple):
  """The pretrained model and what evaluating, pruning and reporting it needs.

  `masks`: the masks it trained in (all alive for a dense start); `init_mask`: the results'
  `{'init_mask': {...}}` entry for a sparse start, else {}.
  """
  model: nn.Module
  state: state_lib.TrainState
  history: list[dict[str, Any]]
  train_time_s: float
  evaluator: loop.Evaluator
  masks: Any
  init_mask: dict[str, Any]


def start_masks(config: ml_collections.ConfigDict, model: nn.Module, params: Any,
                batch_stats: Any, dataset: Dataset) -> tuple[Any, dict[str, float]]:
  """The masks training starts in, and each sparse start's achieved layer densities.

  Prunable: every conv and dense kernel, less the first / last if `prune.keep_*_dense`. A dense
  start (`init_mask.distribution='none'`) gives all-alive masks and {}.
  """
  paths = models.param_paths(model, dataset.input_shape)
  prunable = sparsity.prunable_filter(paths, keep_first_dense=config.prune.keep_first_dense,
                                      keep_last_dense=config.prune.keep_last_dense)
  alive = sparsity.create_masks(params, prunable)
  init = config.init_mask
  if init.distribution == "none":
    return alive, {}
  densities = None if init.distribution == "global" else init_masks.layer_densities_for(
      params, prunable, paths, init.distribution, init.density)
  if init.method == "snip":
    def loss_fn(p, batch):
      logits, _ = model.apply({"params": p, "batch_stats": batch_stats}, batch[0], train=True,
                              mutable=["batch_stats"])
      return metrics.cross_entropy(logits, batch[1])
    batch_size = config.train.batch_size
    scores = init_masks.snip_scores(loss_fn, params, list(first_batches(
        dataset.train, init.score_batches * batch_size, batch_size)), alive)
    masks = init_masks.keep_by_scores(scores, densities, init.density)
  elif init.method == "synflow":
    ones = jnp.ones((1, *dataset.input_shape), jnp.float32)
    output_fn = lambda p: model.apply({"params": p, "batch_stats": batch_stats}, ones,
                                      train=False)
    masks = init_masks.synflow_masks(output_fn, params, alive, densities, init.density)
  else:
    key = jax.random.fold_in(jax.random.key(config.seed), 4)
    masks = init_masks.init_masks(key, params, densities, init.method)
  achieved = {r["name"]: r["nonzero"] / r["size"]
              for r in init_masks.mask_record(params, masks, paths)}
  return masks, achieved


def pretrain(config: ml_collections.ConfigDict, dataset: Dataset, workdir: str,
             scalars: report.ScalarWriter, *, epochs: int | None = None,
             mask_transform: Callable[[Any], optax.GradientTransformation] | None = None
             ) -> Pretrained:
  """Trains `config.model` on `dataset`, resumable from `<workdir>/checkpoints/pretrain`.

  Args:
    config, dataset, workdir, scalars: the experiment.
    epochs: stop after this many epochs of the `config.train.epochs`-long schedule (default:
      all of them).
    mask_transform: `masks -> transformation` chained last in the optimizer to hold the masks
      (e.g. gradual pruning); default: `masked_updates` for a sparse start, nothing for a
      dense one.
  """
  model = models.create_model(config.model.name, dataset.num_classes,
                              dtype=models.compute_dtype(config.train.dtype))
  steps_per_epoch = dataset.steps_per_epoch(config.train.batch_size)
  tx = optimizer.make_optimizer(config.train, steps_per_epoch)
  init_key, data_key = jax.random.split(jax.random.key(config.seed))
  state = state_lib.create_train_state(model, tx, init_key, dataset.input_shape)
  masks, densities = start_masks(config, model, state.params, state.batch_stats, dataset)
  init_mask = {}
  if densities:  # Train inside the mask: masked (optionally rescaled) init, masked updates.
    params = init_masks.rescale_init(state.params, densities) if config.init_mask.rescale \
        else state.params
    state = state.replace(params=sparsity.apply_masks(params, masks))
    init_mask = {"init_mask": {
        "distribution": config.init_mask.distribution, "density": config.init_mask.density,
        "method": config.init_mask.method, "achieved_density": 1.0 - sparsity.sparsity(masks),
        "layers": init_masks.mask_record(state.params, masks, models.param_paths(
            model, dataset.input_shape))}}
    report.log(f"sparse start: {config.init_mask.distribution} densities, "
               f"{config.init_mask.method} mask, density {1.0 - sparsity.sparsity(masks):.4f}")
    mask_transform = mask_transform or sparsity.masked_updates
  if mask_transform is not None:
    # A copy in the optimizer state: training steps donate (and delete) their input state.
    tx = optax.chain(tx, mask_transform(jax.tree.map(jnp.copy, masks)))
    state = state.replace(opt_state=tx.init(state.params))
  report.log(f"model {config.model.name}: {state_lib.count_params(state.params):,} parameters; "
             f"{dataset.train.num_examples} train / {dataset.val.num_examples} val / "
             f"{dataset.test.num_examples} test examples, {steps_per_epoch} steps per epoch")
  evaluator = loop.Evaluator(model, dataset, config.train.eval_batch_size)
  checkpointer = checkpoints.Checkpointer(os.path.join(workdir, "checkpoints", "pretrain"),
                                          config.checkpoint.keep)
  mesh = parallel.candidate_mesh(1, config.train.batch_size)
  try:
    state, history, elapsed = loop.fit(
        state, loop.train_epochs(state, dataset, data_key, config.train, model=model, tx=tx,
                                 mesh=mesh),
        epochs=epochs or config.train.epochs, evaluate=lambda s: evaluator.evaluate(s, "val"),
        checkpointer=checkpointer, every_epochs=config.checkpoint.every_epochs,
        eval_every_epochs=config.train.eval_every_epochs,
        images_per_epoch=steps_per_epoch * config.train.batch_size, scalars=scalars)
  finally:
    checkpointer.close()
  return Pretrained(model, parallel.to_local(state), history, elapsed, evaluator, masks,
                    init_mask)


def final_metrics(pretrained: Pretrained) -> dict[str, float]:
  """`val_*` and `test_*` metrics of the trained model.

  The last epoch was evaluated on val already; only the test split is new.
  """
  final = {k: v for k, v in pretrained.history[-1].items() if k.startswith("val_")}
  final.update({f"test_{k}": v
                for k, v in pretrained.evaluator.evaluate(pretrained.state, "test").items()})
  return final


def run(config: ml_collections.ConfigDict, dataset: Dataset, workdir: str) -> dict[str, Any]:
  """Dense training only. Returns the results' strategy part: `history`, `final`, size."""
  scalars = report.ScalarWriter(workdir)
  try:
    pretrained = pretrain(config, dataset, workdir, scalars)
  finally:
    scalars.close()
  final = final_metrics(pretrained)
  report.log("final: " + "  ".join(f"{k} {v:.4f}" for k, v in final.items()))
  if pretrained.init_mask:
    final["sparsity"] = sparsity.sparsity(pretrained.masks)
  return {"history": pretrained.history, **pretrained.init_mask, "final": final,
          "train_time_s": pretrained.train_time_s,
          "num_params": state_lib.count_params(pretrained.state.params)}
