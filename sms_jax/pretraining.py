"""The shared first stage of every strategy: train one model from scratch, resumably.

It starts dense or from a mask at initialisation (`init_mask.*`), and trains with a sparsity
updater from `sms_jax.sparsity.registry`: 'fixed' (the start mask) for dense training and
before pruning phases, or one that changes the masks during training (gmp, set). A dense
start with fixed masks trains the plain optimizer: all its masks are alive, and a select
between the update and the parameters would only cost time (and keep XLA from fusing the
update into one multiply-add).

With `config.pretrained` (a workdir) the model is not trained here but read from that run's
finished pretraining, and with `retrain.rewind` the rewind point is kept
(`sms_jax.shared_pretraining`).
"""

import os
from typing import Any, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections

from sms_jax import checkpoints, metrics, models, parallel, report, sparsity
from sms_jax import config as config_lib
from sms_jax import shared_pretraining
from sms_jax.data import Dataset, first_batches
from sms_jax.sparsity import init_masks, registry
from sms_jax.training import engine, loop, optimizers, retrain, schedules, state as state_lib
from sms_jax.training.evaluator import Evaluator


class Pretrained(NamedTuple):
  """The trained model and what evaluating, pruning and reporting it needs.

  `masks`: the masks it ended with (all alive for a dense start, without a changing
  updater); `updater`: the sparsity updater it trained with; `init_mask`: the results'
  `{'init_mask': {...}}` entry for a sparse start, else {}; `shared`: the results'
  `{'pretrained': {'from', 'epoch', 'checksum'}}` entry when read from another run, else {};
  `rewind`: `(params, batch_stats)` of the rewind point (`retrain.rewind`), else None.
  """
  model: nn.Module
  state: state_lib.TrainState
  history: list[dict[str, Any]]
  train_time_s: float
  evaluator: Evaluator
  masks: Any
  updater: sparsity.Updater
  init_mask: dict[str, Any]
  shared: dict[str, Any]
  rewind: tuple[Any, Any] | None = None

  @property
  def records(self) -> dict[str, Any]:
    """Its entries of results.json beside `history`: `init_mask`, `pretrained` (if any)."""
    return {**self.init_mask, **self.shared}


def _prunable(config: ml_collections.ConfigDict, model: nn.Module, dataset: Dataset
              ) -> tuple[list[str], Any]:
  """The model's parameter paths in forward order and the prunable filter: every conv and
  dense kernel, less the first / last if `prune.keep_*_dense`."""
  paths = models.param_paths(model, dataset.input_shape)
  return paths, sparsity.prunable_filter(paths, keep_first_dense=config.prune.keep_first_dense,
                                         keep_last_dense=config.prune.keep_last_dense)


def within_record(config: ml_collections.ConfigDict, model: nn.Module, params: Any,
                  dataset: Dataset) -> dict[str, Any]:
  """The results' `{'within': {distribution, density, achieved_density}}` part of `init_mask`:
  the random start mask SNIP / SynFlow scored inside (exact counts: achieved from the shapes),
  or {} without `init_mask.within`."""
  init = config.init_mask
  if init.within == "none":
    return {}
  paths, prunable = _prunable(config, model, dataset)
  densities = init_masks.layer_densities_for(params, prunable, paths, init.within,
                                             init.within_density)
  return {"within": {"distribution": init.within, "density": init.within_density,
                     "achieved_density": init_masks.achieved_density(params, densities)}}


def start_masks(config: ml_collections.ConfigDict, model: nn.Module, params: Any,
                batch_stats: Any, dataset: Dataset) -> tuple[Any, dict[str, float]]:
  """The masks training starts in, and each sparse start's achieved layer densities.

  Prunable: see `_prunable`. A dense start (`init_mask.distribution='none'`) gives all-alive
  masks and {}. With `init_mask.within`, SNIP / SynFlow score only the weights alive in the
  random start mask (drawn as a random start of that distribution and `within_density` would
  be, same key), on the network masked by it, and keep the best of them.

  Raises:
    ConfigError: `init_mask.distribution`'s layer densities ask a layer for more weights than
      the `within` start mask holds there.
  """
  paths, prunable = _prunable(config, model, dataset)
  alive = sparsity.create_masks(params, prunable)
  init = config.init_mask
  if init.distribution == "none":
    return alive, {}
  densities = None if init.distribution == "global" else init_masks.layer_densities_for(
      params, prunable, paths, init.distribution, init.density)
  key = jax.random.fold_in(jax.random.key(config.seed), 4)
  start = alive
  if init.within != "none":
    start = init_masks.init_masks(key, params, init_masks.layer_densities_for(
        params, prunable, paths, init.within, init.within_density), "random")
    excess = init_masks.first_excess(start, densities, init.density)
    if excess:
      raise config_lib.ConfigError(
          f"config key init_mask.distribution = {init.distribution!r} is not allowed with "
          f"init_mask.within = {init.within!r}: at density {init.density} it keeps "
          f"{excess[1]} weights in {excess[0]}, where the start mask (within_density "
          f"{init.within_density}) has only {excess[2]}; allowed: 'global', the within "
          "distribution, or a lower init_mask.density")
  if init.method == "snip":
    def loss_fn(p, batch):
      logits, _ = model.apply({"params": p, "batch_stats": batch_stats}, batch[0], train=True,
                              mutable=["batch_stats"])
      return metrics.cross_entropy(logits, batch[1])
    batch_size = config.train.batch_size
    scores = init_masks.snip_scores(loss_fn, sparsity.apply_masks(params, start), list(
        first_batches(dataset.train, init.score_batches * batch_size, batch_size)), start)
    masks = init_masks.keep_by_scores(init_masks.restrict_scores(scores, start), densities,
                                      init.density)
  elif init.method == "synflow":
    ones = jnp.ones((1, *dataset.input_shape), jnp.float32)
    output_fn = lambda p: model.apply({"params": p, "batch_stats": batch_stats}, ones,
                                      train=False)
    masks = init_masks.synflow_masks(output_fn, params, start, densities, init.density)
  else:
    masks = init_masks.init_masks(key, params, densities, init.method)
  achieved = {r["name"]: r["nonzero"] / r["size"]
              for r in init_masks.mask_record(params, masks, paths)}
  return masks, achieved


def check_start(config: ml_collections.ConfigDict, masks: Any) -> None:
  """Raises ConfigError if the strategy cannot start from `masks`: its check, asked again with
  their achieved sparsity (e.g. a Bernoulli mask already sparser than `prune.goal_sparsity`)."""
  from sms_jax import strategies  # pylint: disable=g-import-not-at-top  (they import this)
  error = strategies.STRATEGIES[config.strategy].check(config, sparsity.sparsity(masks))
  if error:
    raise config_lib.ConfigError(error)


def describe_state(state: state_lib.TrainState, *, with_sparsity: bool) -> dict[str, Any]:
  """What an epoch's record holds of the state: the learning rate of its last step (a list
  for stacked candidates) and, if the masks change during training, their sparsity."""
  record = {"learning_rate": loop.summarise(parallel.to_local(
      optimizers.learning_rate_of(state.opt_state)))}
  if with_sparsity:
    record["sparsity"] = sparsity.sparsity(sparsity.masks_of(parallel.to_local(state.opt_state)))
  return record


def train_one_model(config: ml_collections.ConfigDict, dataset: Dataset,
                    state: state_lib.TrainState, *, model: Any, tx: Any, evaluator: Evaluator,
                    directory: str, data_key: jax.Array, scalars: report.ScalarWriter,
                    epochs: int, with_sparsity: bool = False,
                    after_epoch: Any = None
                    ) -> tuple[state_lib.TrainState, list[dict[str, Any]], float]:
  """Trains one model (`model.apply`, optimizer `tx`) for `epochs` epochs of train.*,
  resumable from the checkpoints in `directory`, validated every train.eval_every_epochs;
  epoch e's data from `fold_in(data_key, e)`. Returns `loop.fit`'s (state, history, time);
  `with_sparsity` records the masks' sparsity each epoch, `after_epoch` as `loop.fit`'s."""
  checkpointer = checkpoints.Checkpointer(directory, config.checkpoint.keep,
                                          config_lib.run_identity(config))
  runner = engine.EpochRunner(state, dataset, model=model, tx=tx,
                              batch_size=config.train.batch_size,
                              label_smoothing=config.train.label_smoothing,
                              epoch_loop=config.train.epoch_loop,
                              mesh=parallel.candidate_mesh(1, config.train.batch_size),
                              log=report.log)
  steps_per_epoch = dataset.steps_per_epoch(config.train.batch_size)
  try:
    return loop.fit(
        state, lambda s, epoch: runner(s, jax.random.fold_in(data_key, epoch)),
        epochs=epochs, evaluate=lambda s: evaluator.evaluate(s, "val"),
        checkpointer=checkpointer, every_epochs=config.checkpoint.every_epochs,
        min_interval_s=config.checkpoint.min_interval_s,
        eval_every_epochs=config.train.eval_every_epochs,
        images_per_epoch=steps_per_epoch * config.train.batch_size, scalars=scalars,
        describe_state=lambda s: describe_state(s, with_sparsity=with_sparsity),
        after_epoch=after_epoch)
  finally:
    checkpointer.close()


def pretrain(config: ml_collections.ConfigDict, dataset: Dataset, workdir: str,
             scalars: report.ScalarWriter, *, epochs: int | None = None,
             updater: str = "fixed") -> Pretrained:
  """Trains `config.model` on `dataset`, resumable from `<workdir>/checkpoints/pretrain`.

  Args:
    config, dataset, workdir, scalars: the experiment.
    epochs: stop after this many epochs of the `config.train.epochs`-long schedule (default:
      all of them).
    updater: the sparsity updater's name in `sparsity.registry.UPDATERS`.
  """
  model = models.create_model(config.model.name, dataset.num_classes,
                              dtype=models.compute_dtype(config.train.dtype))
  steps_per_epoch = dataset.steps_per_epoch(config.train.batch_size)
  tx = optimizers.make_optimizer(config.train, schedules.make_schedule(config.train,
                                                                       steps_per_epoch))
  init_key, data_key = jax.random.split(jax.random.key(config.seed))
  state = state_lib.create_train_state(model, tx, init_key, dataset.input_shape)
  masks, densities = start_masks(config, model, state.params, state.batch_stats, dataset)
  check_start(config, masks)
  init_mask = {}
  if densities:  # Train inside the mask: masked (optionally rescaled) init.
    params = init_masks.rescale_init(state.params, densities, config.init_mask.rescale,
                                     jax.random.fold_in(jax.random.key(config.seed), 5))
    state = state.replace(params=sparsity.apply_masks(params, masks))
    init_mask = {"init_mask": {
        "distribution": config.init_mask.distribution, "density": config.init_mask.density,
        "method": config.init_mask.method, "achieved_density": 1.0 - sparsity.sparsity(masks),
        **within_record(config, model, state.params, dataset),
        "layers": init_masks.mask_record(state.params, masks, models.param_paths(
            model, dataset.input_shape))}}
    report.log(f"sparse start: {config.init_mask.distribution} densities, "
               f"{config.init_mask.method} mask, density {1.0 - sparsity.sparsity(masks):.4f}")
  sparse_updater = registry.build(updater, config, steps_per_epoch, masks)
  wrapped = bool(densities) or sparse_updater.changes_masks  # A dense start needs no masks.
  if wrapped:  # A copy in the state: training steps donate (and delete) their input state.
    tx = sparse_updater.wrap(tx, jax.tree.map(jnp.copy, masks))
    state = state.replace(opt_state=tx.init(state.params))
  report.log(f"model {config.model.name}: {state_lib.count_params(state.params):,} parameters; "
             f"{dataset.train.num_examples} train / {dataset.val.num_examples} val / "
             f"{dataset.test.num_examples} test examples, {steps_per_epoch} steps per epoch")
  evaluator = Evaluator(model, dataset, config.train.eval_batch_size)
  rewind_epoch, rewind = retrain.rewind_epoch(config.retrain.rewind), None
  if rewind_epoch == 0:  # Copies: training donates (and deletes) the state's buffers.
    rewind = jax.tree.map(jnp.copy, (state.params, state.batch_stats))
  like, shared = state, {}
  if config.pretrained:
    state, history, elapsed, shared = shared_pretraining.read_shared(config, state)
  else:
    state, history, elapsed = train_one_model(
        config, dataset, state, model=model, tx=tx, evaluator=evaluator,
        directory=os.path.join(workdir, "checkpoints", "pretrain"), data_key=data_key,
        scalars=scalars, epochs=epochs or config.train.epochs,
        with_sparsity=sparse_updater.changes_masks,
        after_epoch=shared_pretraining.rewind_saver(config, workdir, rewind_epoch))
  if rewind_epoch:
    rewind = shared_pretraining.read_rewind(config, workdir, rewind_epoch, like)
  state = parallel.to_local(state)
  return Pretrained(model, state, history, elapsed, evaluator,
                    sparsity.masks_of(state.opt_state) if wrapped else masks, sparse_updater,
                    init_mask, shared, rewind)


def final_metrics(pretrained: Pretrained) -> dict[str, float]:
  """`val_*` and `test_*` metrics of the trained model.

  The last epoch was evaluated on val already; only the test split is new.
  """
  return val_and_test_metrics(pretrained.history, pretrained.evaluator, pretrained.state)


def val_and_test_metrics(history: list[dict[str, Any]], evaluator: Evaluator,
                         state: state_lib.TrainState) -> dict[str, float]:
  """`val_*` metrics of the last epoch's record in `history`, and `test_*` of `state`."""
  final = {k: v for k, v in history[-1].items() if k.startswith("val_")}
  final.update({f"test_{k}": v for k, v in evaluator.evaluate(state, "test").items()})
  return final
