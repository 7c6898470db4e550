"""Sparse Model Soups on dynamic sparse training with gradient regrowth: sms_rigl, sms_granet.

  sms_rigl    the phases of `sms_jax.phases.gradual` (those of sms_gmp) from a sparse start
              that they keep: one model trains inside the start mask up to the first of
              `prune.n_phases` mask updates (at `gradual.phase_epochs`); each phase starts
              with RigL's drop and regrowth instead of pruning, so every layer keeps its
              number of alive weights (the start's layer densities) in every phase, while
              the mask moves (regrowth may pick any weight of a layer, as RigL's does);
  sms_granet  sms_gmp's phases (from a dense or a sparse start) with GraNet's regrowth after
              each pruning: the cubic schedule's sparsity at every phase, exactly
              `prune.goal_sparsity` at the last.
Phase k:
  1. prunes the current model (the previous soup, or the model trained up to the first
     update) to the plan's target: the start's sparsity for sms_rigl, which keeps the mask
     as it is; the schedule's sparsity at the phase's epoch for sms_granet, as sms_gmp;
  2. drops and regrows in every prunable layer (`sparsity.rigl.regrow_by_gradient`) the
     fraction alpha_t of the pruned model's alive weights, t the phase's first step: the
     smallest magnitudes go and as many come back where the magnitude of the dense gradient
     of the training loss at the pruned params is largest. alpha_t is the updater's (RigL's
     `rigl.drop_fraction` along its cosine decay; none from `rigl.end_fraction` of the run on,
     as the rigl and granet updaters do none there). The gradient is that of one training
     batch, the first `train.batch_size` examples in stored order, unaugmented, with
     BatchNorm in training mode (as SNIP scores): RigL and GraNet take one minibatch's
     gradient too. Regrown weights start at 0, a weight pruned in step 1 and regrown
     included; one dropped and regrown in the same update keeps its value. (The granet
     updater, inside a training step, takes the gradient at the weights before its pruning
     and keeps the value of a weight its pruning removed and its regrowth brought back; here
     the candidates start from the model the gradient was taken at, less the dropped
     weights.);
  3. trains soup.m candidates from that model with its masks fixed to the next update (the
     last phase: to train.epochs), going on with the training learning-rate schedule, and
     soups them; the soup starts the next phase. With soup.m = 1 each phase trains one model:
     RigL / GraNet with mask updates only at the phase starts.
Each phase's record adds `regrowth_fraction` (alpha_t) and `regrown` (the weights alive after
step 2 that were not after step 1). A phase is a function of the model it starts from, so a
resumed run redoes its regrowth exactly. The `dense` results entry is the model before the
first mask update.
"""

import dataclasses
import functools
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from sms_jax import metrics, pretraining, report, sparsity
from sms_jax.data import Dataset, first_batches
from sms_jax.phases import gradual, runner
from sms_jax.phases.plan import Model, PhasePlan
from sms_jax.sparsity import registry, rigl
from sms_jax.strategies.registry import Strategy, register


def regrowth_fraction(regrowth: rigl.RigL, step: int) -> float:
  """The fraction of the alive weights that `regrowth` drops and regrows at step `step`:
  `regrowth.fraction(step)` before its `end_step`, 0 from it on."""
  return float(regrowth.fraction(step)) if step < regrowth.end_step else 0.0


def loss_gradient(model: nn.Module, params: Any, batch_stats: Any, inputs: jax.Array,
                  labels: jax.Array, key: jax.Array, *, label_smoothing: float = 0.0) -> Any:
  """The dense gradient (a tree like `params`, pruned entries included) of the mean
  cross-entropy of `inputs: [b, ...]`, `labels: [b]` at `params`, BatchNorm in training mode
  (its statistics those of the batch), dropout (if any) seeded by `key`."""

  def loss_fn(p):
    logits, _ = model.apply({"params": p, "batch_stats": batch_stats}, inputs, train=True,
                            mutable=["batch_stats"], rngs={"dropout": key})
    return metrics.cross_entropy(logits, labels, label_smoothing)

  return jax.grad(loss_fn)(params)


def count_regrown(before: Any, after: Any) -> int:
  """How many weights are alive in masks `after` and not in `before` (same structure)."""
  return int(sum(np.count_nonzero(np.asarray(a) & ~np.asarray(b))
                 for a, b in zip(jax.tree.leaves(after), jax.tree.leaves(before))))


class RegrowthPhaseRunner(runner.PhaseRunner):
  """Runs the phases of sms_rigl / sms_granet (see the module docstring): the phase runner
  whose pruning is followed by the drop and regrowth of the sparsity updater `updater`
  ('rigl' or 'granet', built from the start masks: its fraction and end step)."""

  def __init__(self, config: ml_collections.ConfigDict, dataset: Dataset, workdir: str,
               pretrained: pretraining.Pretrained, *, updater: str, **kwargs: Any):
    super().__init__(config, dataset, workdir, pretrained, **kwargs)
    built = registry.build(updater, config, self.steps_per_epoch, pretrained.masks)
    self.regrowth = built.regrowth if isinstance(built, rigl.GraNet) else built
    batch_size = config.train.batch_size
    self.batch = tuple(map(jnp.asarray, next(first_batches(dataset.train, batch_size,
                                                           batch_size))))
    self._gradient = jax.jit(functools.partial(
        loss_gradient, self.model, label_smoothing=config.train.label_smoothing))
    self._regrow = jax.jit(rigl.regrow_by_gradient)
    self._regrowth_record = None  # Of the phase being run: {regrowth_fraction, regrown}.

  def prune(self, current: Model, plan: PhasePlan) -> tuple[Any, Any, float]:
    """The base runner's pruning to the plan's target, then the drop and regrowth of the
    fraction at the plan's first step (see the module docstring): the masks, the params the
    candidates start from (0 outside the masks), and the relative L2 norm removed from
    `current.params`."""
    masks, params, _ = super().prune(current, plan)
    fraction = regrowth_fraction(self.regrowth, plan.first_step)
    if fraction > 0.0:
      key = jax.random.fold_in(jax.random.fold_in(self.prune_key, plan.phase), 1)
      grads = self._gradient(params, current.batch_stats, *self.batch, key)
      pruned, masks = masks, self._regrow(masks, params, grads, jnp.float32(fraction))
      regrown = count_regrown(pruned, masks)
      params = sparsity.apply_masks(params, masks)
    else:
      regrown = 0
    self._regrowth_record = {"regrowth_fraction": fraction, "regrown": regrown}
    report.log(f"phase {plan.phase}: {regrown} weights regrown where the dense gradient is "
               f"largest (drop fraction {fraction:.4f} of each layer's alive weights)")
    return masks, params, runner.relative_norm_drop(current.params, params)

  def run_phase(self, plan: PhasePlan, current: Model) -> tuple[Model, dict[str, Any]]:
    """The base runner's phase; its record adds `regrowth_fraction` and `regrown`."""
    model, record = super().run_phase(plan, current)
    record.update(self._regrowth_record)
    self._regrowth_record = None
    return model, record


def _plans(config: ml_collections.ConfigDict, context: runner.PlanContext, *,
           keep_sparsity: bool) -> list[PhasePlan]:
  """sms_gmp's plans with soup.m candidates; `keep_sparsity` (sms_rigl): every phase's target
  is the start's sparsity."""
  plans = gradual.plans(config, context, m=config.soup.m)
  if keep_sparsity:
    plans = [dataclasses.replace(p, target_sparsity=context.start_sparsity) for p in plans]
  return plans


def _runner(updater: str):
  def run(config: ml_collections.ConfigDict, dataset: Dataset, workdir: str) -> dict[str, Any]:
    return runner.run(config, dataset, workdir, m=config.soup.m,
                      plans=functools.partial(_plans, keep_sparsity=updater == "rigl"),
                      pretrain_epochs=gradual.phase_epochs(config)[0],
                      phase_runner=functools.partial(RegrowthPhaseRunner, updater=updater))
  return run


_RIGL_FIELDS = gradual.strategy_fields(prunes=False)


def _check_sms_rigl(config: ml_collections.ConfigDict,
                    start_sparsity: float | None = None) -> str | None:
  """RigL's check (a sparse start) and those of the phases, which need no goal sparsity."""
  return rigl.check_rigl(config, start_sparsity) or _RIGL_FIELDS["check"](config, start_sparsity)


register(Strategy(
    "sms_rigl", _runner("rigl"), candidates=lambda config: config.soup.m,
    **{**_RIGL_FIELDS, "check": _check_sms_rigl},
    help="SMS between RigL's drop-and-regrow updates at the phase starts (sparse start kept)"))
register(Strategy(
    "sms_granet", _runner("granet"), candidates=lambda config: config.soup.m,
    **gradual.strategy_fields(),
    help="SMS between GraNet's updates: sms_gmp's pruning, then RigL's regrowth, each phase"))
