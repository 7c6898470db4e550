"""The shared first stage of every strategy: train one model from scratch, resumably.

It starts dense or from a mask at initialisation (`init_mask.*`), and trains with a sparsity
updater from `sms_jax.sparsity.registry`: 'fixed' (the start mask) for dense training and
before pruning phases, or one that changes the masks during training (gmp, set). A dense
start with fixed masks trains the plain optimizer: all its masks are alive, and a select
between the update and the parameters would only cost time (and keep XLA from fusing the
update into one multiply-add).

With `config.pretrained` (a workdir) the model is not trained here but read from that run's
finished pretraining (shared pretraining: the SMS paper starts every method from one
pretrained model); `check_source` makes sure it is the same training before any work is done.
"""

import json
import os
from typing import Any, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections

from sms_jax import checkpoints, metrics, models, parallel, report, sparsity
from sms_jax import config as config_lib
from sms_jax import workdir as workdir_lib
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


# The config keys that define what pretraining computes (prefixes of dotted keys): a run may
# start from another's pretraining only if these agree.
PRETRAINING_KEYS = ("dataset.", "model.", "train.", "init_mask.", "seed",
                    "prune.keep_first_dense", "prune.keep_last_dense")
NOT_PRETRAINING_KEYS = ("dataset.data_dir",)  # Where the same data is read from.


def source_directory(source: str) -> str:
  """Where the run in workdir `source` keeps its pretraining checkpoints."""
  return os.path.join(source, "checkpoints", "pretrain")


def check_source(config: ml_collections.ConfigDict, workdir: str) -> None:
  """Raises ConfigError unless `config.pretrained` ('' passes) is the workdir of another run
  whose finished pretraining this config may start from: a run of a strategy that shares
  pretraining, not itself started from another's, with the same `PRETRAINING_KEYS`, and
  holding its checkpoint at epoch train.epochs. Reads only its config.json and file names."""
  source = config.pretrained
  if not source:
    return
  from sms_jax import strategies  # pylint: disable=g-import-not-at-top  (they import this)
  start = f"config key pretrained = {source!r} is not allowed: "
  allowed = ("; allowed: the workdir of a finished run of the same dataset, model, train, "
             "init_mask, seed and prune.keep_*_dense, e.g. a dense run's")
  path = os.path.join(source, "config.json")
  try:
    with open(path) as f:
      theirs = json.load(f)
  except (OSError, ValueError) as error:
    raise config_lib.ConfigError(f"{start}cannot read {path} ({type(error).__name__}){allowed}"
                                 ) from error
  if os.path.realpath(source) == os.path.realpath(workdir):
    raise config_lib.ConfigError(f"{start}it is this run's own workdir{allowed}")
  strategy = theirs.get("strategy")
  registered = strategies.STRATEGIES.get(strategy)
  if registered is None or not registered.shares_pretraining:
    raise config_lib.ConfigError(f"{start}its strategy {strategy} pretrains in its own way"
                                 f"{allowed}")
  if theirs.get("pretrained"):
    raise config_lib.ConfigError(f"{start}that run itself started from the pretraining of "
                                 f"{theirs['pretrained']!r}; pass that one")
  ours = json.loads(config.to_json())
  differing = [key for key in sorted(workdir_lib.differences(theirs, ours))
               if key.startswith(PRETRAINING_KEYS) and not key.startswith(NOT_PRETRAINING_KEYS)]
  if differing:
    key = differing[0]
    raise config_lib.ConfigError(
        f"{start}its {key} is {_value_at(theirs, key)!r}, this run's {_value_at(ours, key)!r}"
        f"{allowed}")
  directory = source_directory(source)
  epochs = _saved_epochs(directory)
  if config.train.epochs not in epochs:
    newest = f"its newest checkpoint is epoch {epochs[-1]}" if epochs else "it has no checkpoint"
    raise config_lib.ConfigError(
        f"{start}its pretraining has not finished ({newest} of {config.train.epochs} in "
        f"{directory}); let it finish{allowed}")
  rewind = retrain.rewind_epoch(config.retrain.rewind)
  if rewind and _rewind_source(source, rewind) is None:
    raise config_lib.ConfigError(
        f"{start}it kept no state of epoch {rewind} to rewind to (retrain.rewind = "
        f"{config.retrain.rewind!r}); allowed: a source run with the same retrain.rewind (it "
        "keeps its rewind point), or one that kept that checkpoint, or retrain.rewind = init")


def _saved_epochs(directory: str) -> list[int]:
  """The steps of the checkpoints in `directory` (none if it does not exist), ascending."""
  return sorted(int(n) for n in (os.listdir(directory) if os.path.isdir(directory) else [])
                if n.isdigit())


def _rewind_source(source: str, epoch: int) -> str | None:
  """The checkpoint directory of run `source` holding pretraining epoch `epoch`: its rewind
  point, else its pretraining checkpoint; None if neither."""
  for directory in (rewind_directory(source), source_directory(source)):
    if epoch in _saved_epochs(directory):
      return directory
  return None


def _value_at(config_dict: dict[str, Any], dotted: str) -> Any:
  """The value at `dotted` ('a.b') of a nested dict, None where missing."""
  for part in dotted.split("."):
    config_dict = config_dict.get(part) if isinstance(config_dict, dict) else None
  return config_dict


def read_shared(config: ml_collections.ConfigDict, like: state_lib.TrainState
                ) -> tuple[state_lib.TrainState, list[dict[str, Any]], float, dict[str, Any]]:
  """The finished pretraining of run `config.pretrained` (checked by `check_source`): its state
  in the structure of `like`, its history, training time and the results' `pretrained` entry.

  Raises:
    CheckpointError: the checkpoint cannot be read, is damaged or holds another layout.
  """
  source = os.path.abspath(config.pretrained)
  epoch, state, meta = checkpoints.read_verified(source_directory(source), config.train.epochs,
                                                 like=like)
  checksum = checkpoints.state_checksum(state)
  report.log(f"pretraining: read from {source} (epoch {epoch}, checksum {checksum}); not "
             "trained here")
  return (jax.tree.map(jnp.asarray, state), meta["history"], meta["elapsed_s"],
          {"pretrained": {"from": source, "epoch": epoch, "checksum": checksum}})


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


def rewind_directory(workdir: str) -> str:
  """Where a run keeps its rewind point of `retrain.rewind = epoch:K`."""
  return os.path.join(workdir, "checkpoints", "rewind")


def _rewind_saver(config: ml_collections.ConfigDict, workdir: str, epoch: int | None):
  """`after_epoch(e, state)` for `loop.fit` that saves `{params, batch_stats}` of pretraining
  epoch `epoch` to `rewind_directory` (None: when nothing is to be saved)."""
  if not epoch or config.pretrained:
    return None
  def save(e, state):
    if e == epoch:
      saver = checkpoints.Checkpointer(rewind_directory(workdir), None,
                                       config_lib.run_identity(config))
      try:
        saver.save(e, _rewind_point(state), {})
      finally:
        saver.close()
  return save


def _rewind_point(state: state_lib.TrainState) -> dict[str, Any]:
  return {"params": state.params, "batch_stats": state.batch_stats}


def _read_rewind(config: ml_collections.ConfigDict, workdir: str, epoch: int,
                 like: state_lib.TrainState) -> tuple[Any, Any]:
  """The rewind point of pretraining epoch `epoch` >= 1: from the source's pretraining
  checkpoint (shared pretraining) or from this run's `rewind_directory`."""
  directory = (_rewind_source(config.pretrained, epoch) if config.pretrained
               else rewind_directory(workdir))
  if directory == rewind_directory(config.pretrained or workdir):
    _, point, _ = checkpoints.read_verified(directory, epoch, like=_rewind_point(like))
  else:  # The source's pretraining checkpoint of that epoch.
    _, state, _ = checkpoints.read_verified(directory, epoch, like=like)
    point = _rewind_point(state)
  return tuple(jax.tree.map(jnp.asarray, (point["params"], point["batch_stats"])))


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
    state, history, elapsed, shared = read_shared(config, state)
  else:
    checkpointer = checkpoints.Checkpointer(os.path.join(workdir, "checkpoints", "pretrain"),
                                            config.checkpoint.keep,
                                            config_lib.run_identity(config))
    runner = engine.EpochRunner(state, dataset, model=model, tx=tx,
                                batch_size=config.train.batch_size,
                                label_smoothing=config.train.label_smoothing,
                                epoch_loop=config.train.epoch_loop,
                                mesh=parallel.candidate_mesh(1, config.train.batch_size),
                                log=report.log)
    try:
      state, history, elapsed = loop.fit(
          state, lambda s, epoch: runner(s, jax.random.fold_in(data_key, epoch)),
          epochs=epochs or config.train.epochs, evaluate=lambda s: evaluator.evaluate(s, "val"),
          checkpointer=checkpointer, every_epochs=config.checkpoint.every_epochs,
          eval_every_epochs=config.train.eval_every_epochs,
          images_per_epoch=steps_per_epoch * config.train.batch_size, scalars=scalars,
          describe_state=lambda s: describe_state(s, with_sparsity=sparse_updater.changes_masks),
          after_epoch=_rewind_saver(config, workdir, rewind_epoch))
    finally:
      checkpointer.close()
  if rewind_epoch:
    rewind = _read_rewind(config, workdir, rewind_epoch, like)
  state = parallel.to_local(state)
  return Pretrained(model, state, history, elapsed, evaluator,
                    sparsity.masks_of(state.opt_state) if wrapped else masks, sparse_updater,
                    init_mask, shared, rewind)


def final_metrics(pretrained: Pretrained) -> dict[str, float]:
  """`val_*` and `test_*` metrics of the trained model.

  The last epoch was evaluated on val already; only the test split is new.
  """
  final = {k: v for k, v in pretrained.history[-1].items() if k.startswith("val_")}
  final.update({f"test_{k}": v
                for k, v in pretrained.evaluator.evaluate(pretrained.state, "test").items()})
  return final
