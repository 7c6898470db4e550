"""Averaging models with different masks, then re-pruning (imp_avg_reprune): the baseline that
Sparse Model Soups is designed to avoid.

Averaging sparse models whose masks differ gives a model on the union of their masks, denser
than each; to reach the target sparsity it must be pruned again, which removes weights that
some of the models relied on. SMS avoids this by pruning once per phase and retraining all
candidates inside that one mask. This strategy does the averaging anyway, with everything
else as in `sms` (the same pretraining, phase targets, soup.m lineages differing in
`soup.vary`, `retrain.schedule`), so that the two compare directly.

Phase k, from the phase's start S (the previous phase's model; phase 1: the pretrained one)
of sparsity s_{k-1} and target s_k:
  1. m lineages, one stacked training from S: each trains `avg_reprune.diverge_epochs` (d)
     epochs inside S's mask with its own hyperparameters (seed: its batch order), then prunes
     ITSELF to exactly s_k by global magnitude of its own weights (`PruneOnce`, in the
     training step at step d * steps_per_epoch), then retrains its
     `retrain_epochs` (`retrain.epochs_per_phase`, or its `soup.vary` value) inside its own
     mask: an IMP phase per lineage, all d + retrain_epochs epochs along one
     `retrain.schedule` (ALLR's peak from the norm that pruning S once removes). Lineages
     must diverge before they prune: m copies of S pruned by magnitude would all get the
     same mask, and averaging them would be SMS.
  2. Their uniform average (BatchNorm statistics recalibrated), on the union of the m masks:
     its sparsity (`average.sparsity`, below s_k whenever the masks differ) and metrics are
     recorded.
  3. The average pruned back to exactly s_k by global magnitude among the union's
     weights (`repruned`: its sparsity, the relative norm removed, its metrics after BatchNorm
     recalibration).
  4. One model retrained from it for `avg_reprune.retrain_epochs` epochs (`retrain.schedule`;
     ALLR's peak from the re-pruning's norm drop): the phase's model, evaluated like every
     phase of one model (record `model`), and the start of the next phase.
The record's `lineages` holds their hyperparameters, each one's sparsity (exactly s_k), the
mean pairwise overlap of their masks (the share of a lineage's weights that another also
keeps: 1.0 would mean one mask) and their validation accuracies; `history` the lineages'
epochs, then the retraining's (numbered on). Cost per phase: m * (d + retrain_epochs) + the
retraining's epochs, d more per lineage than an SMS phase.

Why this definition: the SMS paper names averaging models of different sparse connectivity
as the problem its method avoids (its abstract: "averaging arbitrary sparse models reduces the
overall sparsity due to differing sparse connectivities"); its reference code has no such
baseline to copy. Lineages that restart each phase from one model keep the phases' models
comparable with sms (one model carried between phases, the same targets); diverging before
pruning is the least change to an IMP phase that makes the masks differ, and every lineage
still retrains after its own pruning as long as an SMS candidate does. Pruning is global
magnitude throughout (`prune.selector` must be 'global'), as the SMS default.
"""

import contextlib
import dataclasses
import os
from typing import Any, ClassVar, Iterator

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from sms_jax import parallel, report, sparsity
from sms_jax.phases import plan as plan_lib, runner
from sms_jax.phases.evaluate import evaluation_state
from sms_jax.phases.plan import Model, PhasePlan
from sms_jax.sparsity import masks as masks_lib, pruning
from sms_jax.strategies import prune_retrain
from sms_jax.strategies.registry import Strategy, register
from sms_jax.training import engine


@dataclasses.dataclass(frozen=True)
class PruneOnce(sparsity.Updater):
  """Prunes each lineage once, by global magnitude of its own weights, on the update that
  brings its step count to `step`: to the largest count of `keep` (every phase's count of
  weights, decreasing) below its alive weights, i.e. the count of the phase it is in. The
  same updater serves every phase, so the lineages' program compiles once."""
  name: ClassVar[str] = "prune_once"
  changes_masks: ClassVar[bool] = True
  step: int
  keep: tuple[int, ...]

  def is_update_step(self, steps: jax.Array) -> jax.Array:
    return steps == self.step

  def new_masks(self, masks: Any, params: Any, grads: Any, steps: jax.Array) -> Any:
    del grads, steps
    alive = sum(jnp.sum(m, dtype=jnp.int32) for m in jax.tree.leaves(masks))
    table = jnp.asarray(self.keep, jnp.int32)
    count = jnp.max(jnp.where(table < alive, table, 0))
    return pruning.prune_to_counts(params, masks, count[None], jax.random.key(0),
                                   selector="global")

  def describe(self) -> dict[str, Any]:
    return {"name": self.name, "step": self.step, "keep": list(self.keep)}


def keep_table(config: ml_collections.ConfigDict, start_sparsity: float,
               prunable: int) -> tuple[int, ...]:
  """The alive weights after each phase, as `sparsity.prune` keeps them (global):
  `round((1 - s_k) * prunable)`, s_k the phase's target from `start_sparsity`."""
  prune = config.prune
  return tuple(round((1.0 - pruning.phase_sparsity(prune.goal_sparsity, prune.n_phases, k,
                                                   start=start_sparsity)) * prunable)
               for k in range(1, prune.n_phases + 1))


def union(stacked_masks: Any) -> Any:
  """The masks alive in any candidate of `stacked_masks: [m, ...]` (None leaves kept)."""
  return jax.tree.map(lambda m: jnp.any(m, axis=0), stacked_masks)


def mask_overlap(stacked_masks: Any) -> float:
  """The mean over ordered pairs i != j of candidates of `stacked_masks: [m, ...]` (m >= 2)
  of |M_i and M_j| / |M_i|: the share of a lineage's alive weights another also keeps (1.0:
  one mask)."""
  flat = np.concatenate([np.asarray(m).reshape(m.shape[0], -1)
                         for m in jax.tree.leaves(stacked_masks)], axis=1).astype(np.float64)
  shared, alive = flat @ flat.T, flat.sum(axis=1)
  m = flat.shape[0]
  return float(sum(shared[i, j] / max(alive[i], 1.0)
                   for i in range(m) for j in range(m) if i != j) / (m * (m - 1)))


def retrain_plan(config: ml_collections.ConfigDict, plan: PhasePlan) -> PhasePlan:
  """Step 4 of phase `plan`: one model, `avg_reprune.retrain_epochs` epochs, shared
  hyperparameters, a seed after the lineages', on the time axis after them."""
  epochs = config.avg_reprune.retrain_epochs
  candidate = plan_lib.Candidate(seed=max(c.seed for c in plan.candidates) + 1,
                                 weight_decay=float(config.train.weight_decay),
                                 learning_rate=1.0, retrain_epochs=epochs)
  return dataclasses.replace(plan, candidates=(candidate,), retrain_epochs=epochs,
                             first_epoch=plan.first_epoch + plan.epochs)


def plans(config: ml_collections.ConfigDict,
          context: runner.PlanContext) -> list[PhasePlan]:
  """sms's phases (`prune_retrain.plans`), each lineage `avg_reprune.diverge_epochs` longer
  (it diverges, then prunes itself), on a time axis that leaves room for step 4."""
  diverge = config.avg_reprune.diverge_epochs
  base = prune_retrain.plans(config, context, m=config.soup.m, length_factor=1)
  span = diverge + base[0].epochs + config.avg_reprune.retrain_epochs
  return [dataclasses.replace(
      p, candidates=tuple(dataclasses.replace(c, retrain_epochs=diverge + c.retrain_epochs)
                          for c in p.candidates),
      retrain_epochs=diverge + p.retrain_epochs,
      first_epoch=config.train.epochs + (p.phase - 1) * span) for p in base]


class AvgRepruneRunner(runner.PhaseRunner):
  """Runs imp_avg_reprune's phases (see the module docstring): two trainings per phase,
  each checkpointed in its own folder of the phase's candidate folder."""

  def __init__(self, *args, **kwargs):
    super().__init__(*args, **kwargs)
    self._part = None  # The phase's training in progress: its checkpoint subfolder.
    self._start_sparsity = 0.0  # Of the pretrained model (`context`).

  def context(self, start_sparsity: float) -> runner.PlanContext:
    self._start_sparsity = start_sparsity
    return super().context(start_sparsity)

  def candidate_dir(self, phase: int) -> str:
    base = super().candidate_dir(phase)
    return base if self._part is None else os.path.join(base, self._part)

  @contextlib.contextmanager
  def _training(self, part: str, plan: PhasePlan) -> Iterator[None]:
    """While the block runs: checkpoints in `part`, and the plan's candidate count (and its
    device mesh) in place of soup.m."""
    saved = self._part, self.m, self.mesh
    self._part, self.m = part, len(plan.candidates)
    self.mesh = parallel.candidate_mesh(self.m, self.config.train.batch_size)
    try:
      yield
    finally:
      self._part, self.m, self.mesh = saved

  def run_phase(self, plan: PhasePlan, current: Model) -> tuple[Model, dict[str, Any]]:
    """Steps 1-4 of the module docstring; returns the phase's model and its record."""
    config = self.config
    _, _, start_drop = self.prune(current, plan)
    scales = self.peak_scales(current, plan, start_drop)
    alive, sizes = masks_lib.layer_alive(current.masks)
    keep = keep_table(config, self._start_sparsity, sum(sizes))
    if keep[plan.phase - 1] >= sum(alive):
      raise RuntimeError(f"phase {plan.phase} would prune no weight: prune.n_phases = "
                         f"{config.prune.n_phases} is too many for this model's "
                         f"{sum(sizes)} prunable weights")
    updater = PruneOnce(config.avg_reprune.diverge_epochs * self.steps_per_epoch, keep)
    report.log(f"phase {plan.phase}/{config.prune.n_phases}: {len(plan.candidates)} lineages "
               f"train {config.avg_reprune.diverge_epochs} epoch(s), prune themselves to "
               f"sparsity {plan.target_sparsity:.4f}, retrain to {plan.epochs} epochs")
    with self._training("lineages", plan):
      lineages, history, lineage_time = self.train(plan, current, updater, scales)
    held = sparsity.masks_of(lineages.opt_state)
    average = self.evaluate.soup(lineages, list(range(len(plan.candidates))))
    on_union = Model(average.params, average.batch_stats, union(held))

    final_plan = retrain_plan(config, plan)
    masks, params, drop = self.prune(on_union, final_plan)
    (repruned,) = engine.unstack(self.evaluate.recalibrated(
        engine.stack([evaluation_state(params, average.batch_stats)])))
    final_scales = self.peak_scales(on_union, final_plan, drop)
    report.log(f"phase {plan.phase}: the lineages' average has sparsity "
               f"{sparsity.sparsity(on_union.masks):.4f}; pruned back to "
               f"{sparsity.sparsity(masks):.4f}, retraining it {final_plan.epochs} epoch(s)")
    with self._training("retrain", final_plan):
      trained, retrain_history, retrain_time = self.train(
          final_plan, Model(params, repruned.batch_stats, masks), sparsity.FixedMasks(),
          final_scales)
    if not sparsity.zero_outside(trained.params, jax.tree.map(lambda m: m[None], masks)):
      raise RuntimeError("the retrained model has nonzero weights outside its mask")
    model, evaluated = self.evaluate(
        trained, masks, start_params=params,
        val_accuracies=retrain_history[-1].get("val_accuracy"),
        hparams=[self.hparams(c, s) for c, s in zip(final_plan.candidates, final_scales)],
        method="uniform")
    lineage_masks = engine.unstack(held)
    record = {
        "phase": plan.phase, "target_sparsity": plan.target_sparsity, **evaluated,
        "lineages": {
            "hparams": [self.hparams(c, s) for c, s in zip(plan.candidates, scales)],
            "val_accuracy": history[-1].get("val_accuracy"),
            "sparsity": [sparsity.sparsity(m) for m in lineage_masks],
            "mask_overlap": mask_overlap(held), "updater": updater.describe()},
        "average": {"sparsity": sparsity.sparsity(on_union.masks),
                    **self.evaluate.metrics(average, current.params)},
        "repruned": {"sparsity": sparsity.sparsity(masks), "relative_norm_drop": drop,
                     **self.evaluate.metrics(repruned, current.params)},
        "train_time_s": lineage_time + retrain_time, "relative_norm_drop": drop,
        "history": history + [{**r, "epoch": plan.epochs + r["epoch"]}
                              for r in retrain_history]}
    self.scalars.write(final_plan.first_epoch + final_plan.epochs, runner.phase_scalars(record))
    return Model(model.params, model.batch_stats, masks), record


def check(config: ml_collections.ConfigDict, start_sparsity: float | None = None) -> str | None:
  """Why `config` cannot run imp_avg_reprune (one line), or None."""
  soup = config.soup
  if soup.m < 2:
    return (f"config key soup.m = {soup.m} is not allowed with strategy 'imp_avg_reprune'; "
            "allowed: 2 or more (the lineages it averages)")
  if soup.method != "uniform":
    return (f"config key soup.method = {soup.method!r} is not allowed with strategy "
            "'imp_avg_reprune'; allowed: 'uniform' (it averages every lineage)")
  if config.prune.selector != "global":
    return (f"config key prune.selector = {config.prune.selector!r} is not allowed with "
            "strategy 'imp_avg_reprune'; allowed: 'global' (lineages and their average are "
            "pruned by global magnitude)")
  return pruning.check_goal_sparsity(config, start_sparsity)


def _lineage_epochs(config: ml_collections.ConfigDict) -> int:
  """The longest lineage: diverge_epochs + its retraining."""
  return config.avg_reprune.diverge_epochs + max(c.retrain_epochs for c in plan_lib.candidates(
      config, config.soup.m, config.retrain.epochs_per_phase, 1.0))


def phase_epochs(config: ml_collections.ConfigDict) -> int:
  """The longest training of a phase (for the step-count bound)."""
  return max(_lineage_epochs(config), config.avg_reprune.retrain_epochs)


def planned_epochs(config: ml_collections.ConfigDict) -> list[tuple[int, int]]:
  """Pretraining, then per phase the lineages' epochs and the retraining's, counted as
  m-candidate epochs (the retraining's, of one model, thus m times: it is short)."""
  per_phase = _lineage_epochs(config) + config.avg_reprune.retrain_epochs
  return [(config.train.epochs, 1)] + [(per_phase, config.soup.m)] * config.prune.n_phases


def run(config: ml_collections.ConfigDict, dataset, workdir: str) -> dict[str, Any]:
  return runner.run(config, dataset, workdir, m=config.soup.m, plans=plans,
                    phase_runner=AvgRepruneRunner)


register(Strategy("imp_avg_reprune", run, candidates=lambda config: config.soup.m, check=check,
                  phase_epochs=phase_epochs, planned_epochs=planned_epochs, shares_pretraining=True,
                  help="average soup.m IMP lineages with different masks, re-prune, retrain"))
