"""Strong lottery tickets: Edge-Popup (Ramanujan et al., 2020) on frozen random weights.

The weights stay at their scaled random initialisation (`edge_popup.init`); one score per
prunable weight trains for train.epochs with train.*'s optimizer, schedule and weight decay,
and each layer computes with its top `round(d_l * n_l)` scores' weights, `d_l` from
`init_mask.distribution` and `init_mask.density` (`sms_jax.sparsity.edge_popup`). Biases and
BatchNorm scales stay at their init; BatchNorm statistics update in training as usual.

The training state's params are `{'scores', 'weights'}`, trained by the shared epoch engine and
loop with `ScoredModel` as the model (resumable from `checkpoints/edge_popup`). When training
ends, the found subnetwork (the effective weights `w * m`, the BatchNorm statistics and the
masks) is written to `checkpoints/pretrain` at step train.epochs, where `sms_jax.export` reads
a strategy's trained model.
"""

import os
import time
from typing import Any

import flax.linen as nn
import jax
import ml_collections
import optax

from sms_jax import checkpoints, evaluation, models, parallel, pretraining, report, sparsity
from sms_jax import config as config_lib
from sms_jax.data import Dataset
from sms_jax.sparsity import edge_popup, init_masks
from sms_jax.strategies.registry import Strategy, register
from sms_jax.training import optimizers, schedules, state as state_lib
from sms_jax.training.evaluator import Evaluator


def check(config: ml_collections.ConfigDict, start_sparsity: float | None = None) -> str | None:
  """Why `config` cannot run edge_popup (one line), or None."""
  del start_sparsity
  init = config.init_mask
  if init.distribution in ("none", "global"):
    return (f"config key init_mask.distribution = {init.distribution!r} is not allowed with "
            "strategy edge_popup (it needs each layer's density); allowed: "
            f"{', '.join(sparsity.DISTRIBUTIONS)}")
  if init.method != "random":
    return (f"config key init_mask.method = {init.method!r} is not allowed with strategy "
            "edge_popup (its scores choose the mask); allowed: random")
  if init.rescale != "none":
    return (f"config key init_mask.rescale = {init.rescale!r} is not allowed with strategy "
            "edge_popup (edge_popup.init sets the weights); allowed: none")
  return None


def initial_state(config: ml_collections.ConfigDict, inner: nn.Module,
                  tx: optax.GradientTransformation, dataset: Dataset
                  ) -> tuple[state_lib.TrainState, tuple[tuple[str, int], ...], dict[str, float]]:
  """The state to train, before any step: params `{'scores', 'weights'}` (`edge_popup`'s
  init of the weights and scores, keys from `config.seed`), BatchNorm statistics and `tx`'s
  state; the layer counts (`edge_popup.layer_counts`) and `{path: density}` of the scored
  kernels (`init_mask.distribution`, `init_mask.density`; less the first / last kernel with
  `prune.keep_*_dense`)."""
  init_key = jax.random.split(jax.random.key(config.seed))[0]
  plain = state_lib.create_train_state(inner, optax.identity(), init_key, dataset.input_shape)
  paths = models.param_paths(inner, dataset.input_shape)
  prunable = sparsity.prunable_filter(paths, keep_first_dense=config.prune.keep_first_dense,
                                      keep_last_dense=config.prune.keep_last_dense)
  densities = init_masks.layer_densities_for(plain.params, prunable, paths,
                                             config.init_mask.distribution,
                                             config.init_mask.density)
  key = jax.random.fold_in(jax.random.key(config.seed), 6)
  params = {"scores": edge_popup.init_scores(jax.random.fold_in(key, 1), plain.params,
                                             densities),
            "weights": edge_popup.frozen_weights(jax.random.fold_in(key, 0), plain.params,
                                                 config.edge_popup.init)}
  state = plain.replace(params=params, opt_state=tx.init(params))
  return state, edge_popup.layer_counts(plain.params, densities), densities


def _save_model(config, workdir: str, model: dict[str, Any]) -> None:
  """Writes `model` (params, batch_stats, masks) to `checkpoints/pretrain` at train.epochs,
  unless a resumed run wrote it already."""
  directory = os.path.join(workdir, "checkpoints", "pretrain")
  if os.path.isdir(os.path.join(directory, str(config.train.epochs))):
    return
  saver = checkpoints.Checkpointer(directory, None, config_lib.run_identity(config))
  try:
    saver.save(config.train.epochs, model, {})
  finally:
    saver.close()


def run(config: ml_collections.ConfigDict, dataset: Dataset, workdir: str) -> dict[str, Any]:
  """Trains the scores and saves the subnetwork they choose (`checkpoints/pretrain`).

  Returns the results' strategy part: `history`, `final` (val/test metrics, `sparsity` of the
  prunable weights, `sparsity_all`), `layers` (per layer: name, shape, size, alive, nonzero),
  `edge_popup` (init, distribution, density, achieved density, `{layer: density}`), `flops`,
  `train_time_s`, `eval_time_s`, `num_params` (of the model), `num_scores`.
  """
  inner = models.create_model(config.model.name, dataset.num_classes,
                              dtype=models.compute_dtype(config.train.dtype))
  steps_per_epoch = dataset.steps_per_epoch(config.train.batch_size)
  tx = edge_popup.scores_optimizer(optimizers.make_optimizer(
      config.train, schedules.make_schedule(config.train, steps_per_epoch)))
  state, counts, densities = initial_state(config, inner, tx, dataset)
  model = edge_popup.ScoredModel(inner, counts)
  paths = models.param_paths(inner, dataset.input_shape)
  report.log(f"edge_popup: {config.edge_popup.init} weights (frozen), "
             f"{state_lib.count_params(state.params['scores']):,} scores; "
             f"{config.init_mask.distribution} densities, density "
             f"{init_masks.achieved_density(state.params['weights'], densities):.4f}")
  data_key = jax.random.split(jax.random.key(config.seed))[1]
  evaluator = Evaluator(model, dataset, config.train.eval_batch_size)
  scalars = report.ScalarWriter(workdir)
  try:
    state, history, elapsed = pretraining.train_one_model(
        config, dataset, state, model=model, tx=tx, evaluator=evaluator,
        directory=os.path.join(workdir, "checkpoints", "edge_popup"), data_key=data_key,
        scalars=scalars, epochs=config.train.epochs)
  finally:
    scalars.close()
  state, tic = parallel.to_local(state), time.perf_counter()
  weights, scores = state.params["weights"], state.params["scores"]
  params = jax.jit(edge_popup.effective_params, static_argnums=2)(weights, scores, counts)
  masks = edge_popup.masks_from_scores(weights, scores, counts)
  _save_model(config, workdir, {"params": params, "batch_stats": state.batch_stats,
                                "masks": masks})
  final = pretraining.val_and_test_metrics(history, evaluator, state)
  record = evaluation.sparsity_record(params, masks, paths)
  final.update(sparsity=record["sparsity"], sparsity_all=record["sparsity_all"])
  report.log("final: " + "  ".join(f"{k} {v:.4f}" for k, v in final.items()))
  variables = {"params": params, "batch_stats": state.batch_stats}
  return {
      "history": history, "final": final, "layers": record["layers"],
      "edge_popup": {"init": config.edge_popup.init, "scores_init": "kaiming_uniform",
                     "distribution": config.init_mask.distribution,
                     "density": config.init_mask.density,
                     "achieved_density": 1.0 - record["sparsity"],
                     "layer_densities": densities},
      "flops": evaluation.flops_summary(evaluation.layer_flops(inner, variables,
                                                               dataset.input_shape)),
      "train_time_s": elapsed, "eval_time_s": time.perf_counter() - tic,
      "num_params": state_lib.count_params(params),
      "num_scores": state_lib.count_params(scores)}


register(Strategy("edge_popup", run, check=check,
                  help="Edge-Popup: train scores choosing a subnetwork of frozen random weights"))
