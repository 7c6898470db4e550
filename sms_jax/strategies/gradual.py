"""Pruning during training: gradual magnitude pruning (GMP) and Sparse Model Soups on top.

Both follow the cubic schedule of `sms_jax.sparsity.gradual` from the initial mask's
sparsity to `prune.goal_sparsity` between `gradual.start_epoch` and `gradual.end_epoch`,
within one run of the training schedule (`train.*`, `train.epochs` long).
  gmp      one model; the mask is updated every `gradual.update_every` steps inside the
           jitted training step (`gradual_pruning`, last in the optimizer chain).
  sms_gmp  the schedule sampled at `prune.n_phases` mask updates, at the epochs
           `phase_epochs`. One model trains up to the first; phase k prunes the current
           model to the schedule's sparsity at its epoch, trains soup.m candidates from it
           until the next update (the last phase: until train.epochs), going on with the
           training learning-rate schedule (fresh momentum), and soups them; the next phase
           starts from the soup. Candidates differ as in `sms` (seed, weight_decay,
           learning_rate: the peak of the schedule they continue).
sms_gmp's `dense` results entry is the model before the first mask update.
"""

import time
from typing import Any

import ml_collections

from sms_jax import metrics, models, report, sparsity
from sms_jax.data import Dataset
from sms_jax.strategies import dense, sms
from sms_jax.training import retrain, state as state_lib


def phase_epochs(config: ml_collections.ConfigDict) -> list[int]:
  """The epochs of sms_gmp's mask updates: `start + round(k * (end - start) / n)`, k = 1..n."""
  start, end, n = config.gradual.start_epoch, config.gradual.end_epoch, config.prune.n_phases
  return [start + int(round(k * (end - start) / n)) for k in range(1, n + 1)]


def schedule_for(config: ml_collections.ConfigDict, steps_per_epoch: int,
                 initial_sparsity: float) -> sparsity.CubicSchedule:
  """The cubic schedule of `config.gradual` from `initial_sparsity` to the goal."""
  return sparsity.cubic_schedule(
      start_epoch=config.gradual.start_epoch, end_epoch=config.gradual.end_epoch,
      steps_per_epoch=steps_per_epoch, update_every=config.gradual.update_every,
      initial_sparsity=initial_sparsity, final_sparsity=config.prune.goal_sparsity)


def run_gmp(config: ml_collections.ConfigDict, dataset: Dataset, workdir: str) -> dict[str, Any]:
  """Gradual magnitude pruning of one model during its training.

  Returns the results' strategy part: `history` (with each epoch's `sparsity`), `gradual`
  (the schedule as run), `final` (val/test metrics, `sparsity`, `sparsity_all`), `layers`
  and `flops` of the final model.
  """
  steps_per_epoch = dataset.steps_per_epoch(config.train.batch_size)
  schedules = []  # The schedule starts from the start mask's sparsity, known inside pretrain.

  def mask_transform(masks):
    schedules.append(schedule_for(config, steps_per_epoch, sparsity.sparsity(masks)))
    return sparsity.gradual_pruning(masks, schedules[0], config.prune.selector)

  scalars = report.ScalarWriter(workdir)
  try:
    pretrained = dense.pretrain(config, dataset, workdir, scalars, mask_transform=mask_transform)
  finally:
    scalars.close()
  state, schedule = pretrained.state, schedules[0]
  tic = time.perf_counter()
  (masks,) = sparsity.held_masks(state.opt_state)
  if not sparsity.zero_outside(state.params, masks):
    raise RuntimeError("the model has nonzero weights outside its gradual pruning mask")
  final = dense.final_metrics(pretrained)
  record = sms.sparsity_record(state.params, masks,
                               models.param_paths(pretrained.model, dataset.input_shape))
  final.update(sparsity=record["sparsity"], sparsity_all=record["sparsity_all"])
  report.log("final: " + "  ".join(f"{k} {v:.4f}" for k, v in final.items()))
  update_steps = schedule.update_steps()
  return {
      "history": pretrained.history, **pretrained.init_mask,
      "gradual": {"start_epoch": config.gradual.start_epoch,
                  "end_epoch": config.gradual.end_epoch,
                  "update_every": config.gradual.update_every, "selector": config.prune.selector,
                  "initial_sparsity": schedule.initial_sparsity,
                  "final_sparsity": schedule.final_sparsity,
                  "updates": [{"step": int(t), "sparsity": float(schedule.sparsity(t))}
                              for t in update_steps]},
      "final": final, "layers": record["layers"],
      "flops": metrics.flops_summary(metrics.layer_flops(
          pretrained.model, {"params": state.params, "batch_stats": state.batch_stats},
          dataset.input_shape)),
      "train_time_s": pretrained.train_time_s, "eval_time_s": time.perf_counter() - tic,
      "num_params": state_lib.count_params(state.params)}


class GradualPhases(sms.Phases):
  """sms_gmp's phases: phase k starts at the k-th mask update and runs to the next."""

  def __init__(self, *args, **kwargs):
    super().__init__(*args, **kwargs)
    self.epochs = phase_epochs(self.config) + [self.config.train.epochs]
    self.schedule = schedule_for(self.config, self.steps_per_epoch, self.start_sparsity)
    self.schedule_kind = retrain.CONTINUE  # Go on with the training schedule.

  def target(self, phase: int) -> float:
    return float(self.schedule.sparsity(self.epochs[phase - 1] * self.steps_per_epoch))

  def first_epoch(self, phase: int) -> int:
    return self.epochs[phase - 1]

  def hparams(self, phase: int) -> list[dict[str, Any]]:
    length = self.epochs[phase] - self.epochs[phase - 1]
    return sms.candidate_hparams(self.config, self.m, length, self.pretrain.max_lr)

  def peak_scale(self, current: dict[str, Any], phase: int, norm_drop: float) -> float:
    del current, phase, norm_drop
    return 1.0

  def first_step(self, phase: int) -> int:
    return self.epochs[phase - 1] * self.steps_per_epoch


def run_sms_gmp(config: ml_collections.ConfigDict, dataset: Dataset,
                workdir: str) -> dict[str, Any]:
  """SMS on gradual magnitude pruning: soup.m candidates between mask updates."""
  return sms.run(config, dataset, workdir, m=config.soup.m, phases_type=GradualPhases,
                 pretrain_epochs=phase_epochs(config)[0])
