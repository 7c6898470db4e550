"""The phase runner: pretrain, then for each `PhasePlan` prune, retrain the candidates, soup
and evaluate; every phase resumable.

Phase k prunes the current model (the previous soup, or the pretrained model) to its plan's
target, trains the plan's m candidates from it (with `retrain.rewind`: from the rewind
point's weights under the new masks) as one stacked state (`engine.EpochRunner`)
with a fresh optimizer (momentum 0) wrapped by the plan's sparsity updater, then soups and
evaluates them (`PhaseEvaluator`); the soup (m = 1: the one model) is the next phase's
model. Each phase is checkpointed when complete (the soup, its masks and the phase records),
and the candidates every `checkpoint.every_epochs` epochs, so a killed run resumes mid-phase.
"""

import os
import shutil
import time
from typing import Any, Callable, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from sms_jax import checkpoints, models, parallel, plots, pretraining, report, sparsity
from sms_jax import config as config_lib
from sms_jax.data import Dataset, corruptions
from sms_jax.phases.evaluate import PhaseEvaluator, outcome
from sms_jax.phases.plan import Candidate, Model, PhasePlan, candidate_names
from sms_jax.sparsity import registry
from sms_jax.training import engine, loop, retrain, state as state_lib


class PlanContext(NamedTuple):
  """What a strategy's plans may depend on, known once pretraining is done."""
  steps_per_epoch: int
  max_lr: float  # The pretraining schedule's peak.
  start_sparsity: float  # Of the pretrained model's masks.


PlansFn = Callable[[ml_collections.ConfigDict, PlanContext], list[PhasePlan]]

# Plots are rewritten after a phase that ends this long after they were last written, and at
# the end: three PNGs take about 0.7 s, a phase of the embedded default about 5 s.
PLOT_EVERY_S = 30.0


class PhaseRunner:
  """Runs the phases of one experiment (see the module docstring)."""

  def __init__(self, config: ml_collections.ConfigDict, dataset: Dataset, workdir: str,
               pretrained: pretraining.Pretrained, *, m: int, scalars: report.ScalarWriter):
    self.config, self.dataset, self.workdir, self.m = config, dataset, workdir, m
    self.model, self.evaluator, self.scalars = pretrained.model, pretrained.evaluator, scalars
    self.rewind = pretrained.rewind  # (params, batch_stats) each phase starts from, or None.
    self.steps_per_epoch = dataset.steps_per_epoch(config.train.batch_size)
    self.pretrain = retrain.pretrain_schedule(config.train, self.steps_per_epoch)
    root = jax.random.key(config.seed)
    self.data_key, self.prune_key = jax.random.fold_in(root, 1), jax.random.fold_in(root, 2)
    self.mesh = parallel.candidate_mesh(m, config.train.batch_size)
    self.execution = None  # Resolved at the first phase: all phases' candidates share shapes.
    self._runners = {}  # See `epoch_runner`.
    self.evaluate = PhaseEvaluator(
        self.model, dataset, self.evaluator,
        bn_recalibration_frac=config.soup.bn_recalibration_frac,
        batch_size=config.train.batch_size,
        ood_sets=corruptions.ood_sets(dataset, config.ood.severity, jax.random.fold_in(root, 3),
                                     config.ood.corruptions),
        paths=models.param_paths(self.model, dataset.input_shape),
        bn_recalibration=config.soup.bn_recalibration,
        bn_average=config.soup.bn_recalibration_average, key=jax.random.fold_in(root, 4))

  def context(self, start_sparsity: float) -> PlanContext:
    """What the strategy's plans may use, for a pretrained model of `start_sparsity`."""
    return PlanContext(self.steps_per_epoch, self.pretrain.max_lr, start_sparsity)

  def prune(self, current: Model, plan: PhasePlan) -> tuple[Any, Any, float]:
    """The phase's masks, the pruned params, and the relative L2 norm pruning removed: the
    norm of the removed weights over that of all parameters before (kernels, biases,
    BatchNorm scales and shifts), as in the reference."""
    masks = sparsity.prune(current.params, current.masks, plan.target_sparsity,
                           selector=self.config.prune.selector,
                           key=jax.random.fold_in(self.prune_key, plan.phase))
    params = sparsity.apply_masks(current.params, masks)
    return masks, params, relative_norm_drop(current.params, params)

  def peak_scales(self, current: Model, plan: PhasePlan, norm_drop: float) -> list[float]:
    """Each candidate's factor on its peak learning rate: ALLR's for this phase (its lower
    bound from the candidate's own retraining length), else 1."""
    if plan.schedule != "allr":
      return [1.0] * len(plan.candidates)
    before = sparsity.sparsity(current.masks)
    prune_rate = 1.0 - (1.0 - plan.target_sparsity) / (1.0 - before)
    return [retrain.allr_peak(norm_drop, prune_rate, c.retrain_epochs, self.config.train.epochs,
                              1.0) for c in plan.candidates]

  def hparams(self, candidate: Candidate, peak_scale: float) -> dict[str, Any]:
    """A candidate's hyperparameters as run: its peak learning rate in absolute terms."""
    return {"seed": candidate.seed, "weight_decay": candidate.weight_decay,
            "learning_rate": candidate.learning_rate * self.pretrain.max_lr * peak_scale,
            "retrain_epochs": candidate.retrain_epochs}

  def run_phase(self, plan: PhasePlan, current: Model) -> tuple[Model, dict[str, Any]]:
    """Prunes `current`, retrains, soups and evaluates; returns the soup (m = 1: the model)
    and the record, whose scalars (`phase_scalars`) go to TensorBoard at the phase's last
    epoch on the experiment's axis (where its candidates' last epoch is)."""
    masks, params, norm_drop = self.prune(current, plan)
    start = Model(params, current.batch_stats, masks)
    if self.rewind is not None:  # Lottery-ticket IMP: the rewind point under the new mask.
      start = Model(sparsity.apply_masks(self.rewind[0], masks), self.rewind[1], masks)
    peak_scales = self.peak_scales(current, plan, norm_drop)
    report.log(f"phase {plan.phase}/{self.config.prune.n_phases}: pruned to sparsity "
               f"{sparsity.sparsity(masks):.4f}; training {self.m} candidate(s) for "
               f"{plan.epochs} epochs")
    updater = registry.build(plan.updater, self.config, self.steps_per_epoch, masks)
    stacked, history, train_time = self.train(plan, start, updater, peak_scales)
    masks = _common_masks(stacked, masks, updater)
    soup, evaluated = self.evaluate(
        stacked, masks, start_params=start.params, val_accuracies=history[-1].get("val_accuracy"),
        hparams=[self.hparams(c, s) for c, s in zip(plan.candidates, peak_scales)],
        method=self.config.soup.method if self.m > 1 else "uniform")
    record = {"phase": plan.phase, "target_sparsity": plan.target_sparsity, **evaluated,
              "train_time_s": train_time, "relative_norm_drop": norm_drop, "history": history}
    self.scalars.write(plan.first_epoch + plan.epochs, phase_scalars(record))
    return Model(soup.params, soup.batch_stats, masks), record

  def train(self, plan: PhasePlan, start: Model, updater: sparsity.Updater,
            peak_scales: Sequence[float]
            ) -> tuple[state_lib.TrainState, list[dict[str, Any]], float]:
    """Retrains the plan's candidates from `start`, each with its factor on the peak
    learning rate (`peak_scales`): the stacked state `[m, ...]` (on this process), its
    history and the training time."""
    config = self.config
    txs = [updater.wrap(retrain.retrain_optimizer(
        config.train, plan.schedule, self.pretrain,
        peak_learning_rate=self.pretrain.max_lr * scale * c.learning_rate,
        total_steps=c.retrain_epochs * self.steps_per_epoch, weight_decay=c.weight_decay,
        first_step=plan.first_step), start.masks) for c, scale in zip(plan.candidates, peak_scales)]
    stacked = engine.stack([
        state_lib.TrainState(step=jnp.zeros((), jnp.int32), params=start.params,
                             batch_stats=start.batch_stats, opt_state=tx.init(start.params))
        for tx in txs])
    phase_key = jax.random.fold_in(self.data_key, plan.phase)
    keys = jnp.stack([jax.random.fold_in(phase_key, c.seed) for c in plan.candidates])
    epochs = [c.retrain_epochs for c in plan.candidates]
    runner = self.epoch_runner(plan, updater, stacked, txs[0])

    def run_epoch(state, epoch):
      active = np.asarray([epoch < e for e in epochs])
      state, step_metrics = runner(state, jax.vmap(jax.random.fold_in, (0, None))(keys, epoch),
                                   jnp.asarray(active))
      return state, {**step_metrics, "active": active}

    checkpointer = checkpoints.Checkpointer(self.candidate_dir(plan.phase),
                                            config.checkpoint.keep,
                                            config_lib.run_identity(config))
    try:
      stacked, history, elapsed = loop.fit(
          stacked, run_epoch, epochs=plan.epochs, evaluate=self.evaluate_candidates,
          checkpointer=checkpointer, every_epochs=config.checkpoint.every_epochs,
          min_interval_s=config.checkpoint.min_interval_s,
          eval_every_epochs=config.train.eval_every_epochs,
          images_per_epoch=self.m * self.steps_per_epoch * config.train.batch_size,
          scalars=self.scalars, scalar_prefix=f"phase{plan.phase}/",
          scalar_offset=plan.first_epoch,
          describe_state=lambda s: pretraining.describe_state(s, with_sparsity=False),
          candidate_names=candidate_names(plan.candidates), stage=plan.phase)
    finally:
      checkpointer.close()
    return parallel.to_local(stacked), history, elapsed

  def epoch_runner(self, plan: PhasePlan, updater: sparsity.Updater,
                   stacked: state_lib.TrainState, tx) -> engine.EpochRunner:
    """The compiled epochs of the plan's candidates, `stacked: [m, ...]`.

    Compiled once for all phases alike: candidates differ only in their optimizer states
    (weight decay, peak, budget, first step, masks), so any candidate's `tx` updates them
    all; what changes the update itself (the schedule's kind, the updater) gets its own.
    """
    key = (plan.schedule, updater, engine.num_candidates(stacked))
    if key not in self._runners:
      config = self.config
      step_kwargs = dict(model=self.model, tx=tx, label_smoothing=config.train.label_smoothing)
      if self.execution is None:
        self.execution = engine.choose_execution(
            config.parallel.candidate_execution, stacked, self.dataset, mesh=self.mesh,
            batch_size=config.train.batch_size, log=report.log, **step_kwargs)
      self._runners[key] = engine.EpochRunner(
          stacked, self.dataset, batch_size=config.train.batch_size,
          epoch_loop=config.train.epoch_loop, execution=self.execution, mesh=self.mesh,
          log=report.log, **step_kwargs)
    return self._runners[key]

  def candidate_dir(self, phase: int) -> str:
    return os.path.join(self.workdir, "checkpoints", f"phase{phase}_candidates")

  def evaluate_candidates(self, stacked: state_lib.TrainState) -> dict[str, list[float]]:
    """Validation metrics of each candidate, as lists over the candidate axis."""
    per_candidate = [self.evaluator.evaluate(s, "val") for s in engine.unstack(stacked)]
    return {k: [r[k] for r in per_candidate] for k in per_candidate[0]}


def relative_norm_drop(before: Any, after: Any) -> float:
  """The L2 norm of `before - after` over that of `before`, over all leaves of the two
  parameter trees (same structure, no candidate axis): what pruning removed, relative."""
  removed, total = (np.sqrt(sum(map(float, sums))) for sums in _squared_norms(before, after))
  return removed / max(total, 1e-12)


@jax.jit
def _squared_norms(params: Any, pruned: Any) -> tuple[list[jax.Array], list[jax.Array]]:
  """Per leaf: the squared L2 norm of what pruning removed (`params - pruned`), and of
  `params`."""
  return ([jnp.sum(jnp.square(p - q)) for p, q in zip(jax.tree.leaves(params),
                                                      jax.tree.leaves(pruned))],
          [jnp.sum(jnp.square(p)) for p in jax.tree.leaves(params)])


def _common_masks(stacked: state_lib.TrainState, masks: Any, updater: sparsity.Updater) -> Any:
  """The masks all candidates of `stacked: [m, ...]` hold (those of the phase, `masks`,
  unless `updater` changes them), after checking that the parameters are zero outside them.

  Raises:
    RuntimeError: the candidates hold different masks (their soup would not be sparse), or
      not the phase's, or have nonzero weights outside them.
  """
  held = engine.unstack(sparsity.masks_of(stacked.opt_state))
  common = held[0] if updater.changes_masks else masks
  for k, candidate_masks in enumerate(held):
    if not sparsity.masks_equal(candidate_masks, common):
      raise RuntimeError(f"candidate {k} does not hold this phase's mask")
  stacked_masks = jax.tree.map(lambda m: None if m is None else m[None], common,
                               is_leaf=lambda x: x is None)
  if not sparsity.zero_outside(stacked.params, stacked_masks):
    raise RuntimeError("a candidate has nonzero weights outside this phase's mask")
  return common


def phase_scalars(record: dict[str, Any]) -> dict[str, float | None]:
  """A phase record's TensorBoard scalars, under `phases/`: the test accuracy, validation
  accuracy and ECE of the model it hands on (the soup; m = 1: the model), its sparsity, the
  best candidate's and the ensemble's test accuracy (m > 1) and each OOD accuracy."""
  model = outcome(record)
  scalars = {"phases/test_accuracy": model["test_accuracy"],
             "phases/val_accuracy": model["val_accuracy"], "phases/test_ece": model["test_ece"],
             "phases/sparsity": record["sparsity"]}
  for key in ("best_candidate", "ensemble"):
    if key in record:
      scalars[f"phases/{key}_test_accuracy"] = record[key]["test_accuracy"]
  scalars.update({f"phases/ood/{name}": value for name, value in record["ood"].items()})
  return scalars


def _log_phase(record: dict[str, Any], names: list[str]) -> None:
  """Logs the phase's result; a greedy soup's accepted candidates (`names`, one each)."""
  head = (f"phase {record['phase']}: sparsity {record['sparsity']:.4f} (target "
          f"{record['target_sparsity']:.4f})")
  if "model" in record:
    report.log(f"{head}  model test {record['model']['test_accuracy']:.4f}")
    return
  cands = [c["test_accuracy"] for c in record["candidates"]]
  best = record.get("best_candidate")  # Absent without a validation split.
  best_text = f"  best-by-val {best['test_accuracy']:.4f}" if best else ""
  report.log(f"{head}  soup test {record['soup']['test_accuracy']:.4f}"
             f"  candidates {min(cands):.4f}-{max(cands):.4f}{best_text}  ensemble "
             f"{record['ensemble']['test_accuracy']:.4f}")
  soup = record["soup"]
  if soup["method"] == "greedy":
    report.log(f"phase {record['phase']}: greedy soup of {len(soup['ingredients'])} of "
               f"{len(cands)} candidates: {', '.join(names[k] for k in soup['ingredients'])}")


def _final_line(final: dict[str, Any], reference: dict[str, Any], start: str) -> str:
  """`final: test_accuracy 0.8980 (dense 0.9320, -3.40 points)  val_accuracy ...`, against
  the model the phases started from (`reference`: its metrics; `start`: what it was)."""
  test, before = final["test_accuracy"], reference.get("test_accuracy")
  against = (f" ({start} {before:.4f}, {100 * (test - before):+.2f} points)"
             if before is not None else "")
  rest = "  ".join(f"{k} {v:.4f}" for k, v in final.items()
                   if v is not None and k != "test_accuracy")
  return f"final: test_accuracy {test:.4f}{against}  {rest}"


def run(config: ml_collections.ConfigDict, dataset: Dataset, workdir: str, *, m: int,
        plans: PlansFn, pretrain_epochs: int | None = None,
        phase_runner: type[PhaseRunner] = PhaseRunner) -> dict[str, Any]:
  """Pretrains, then runs the phases of `plans(config, context)` with m candidates each.

  Args:
    config: a validated config.
    dataset: the loaded data.
    workdir: where checkpoints, plots and scalars go.
    m: candidates per phase.
    plans: the strategy's phase plans.
    pretrain_epochs: stop pretraining after this many epochs (default: train.epochs).
    phase_runner: runs each phase; a strategy whose phases differ (e.g. carry more than the
      model) passes a subclass.
  Returns:
    The results' strategy part: pretraining `history`, `dense` (its val/test metrics),
    `phases` (one record per phase), `final` (the metrics and sparsity of the last phase's
    soup, or for m = 1 its model). Plots (`plots.write_plots`) are written at the end, and
    after each phase that ends `PLOT_EVERY_S` or more after their last writing.
  """
  scalars = report.ScalarWriter(workdir)
  try:
    pretrained = pretraining.pretrain(config, dataset, workdir, scalars, epochs=pretrain_epochs)
    runner = phase_runner(config, dataset, workdir, pretrained, m=m, scalars=scalars)
    phase_plans = plans(config, runner.context(sparsity.sparsity(pretrained.masks)))
    dense_metrics = pretraining.final_metrics(pretrained)
    state = pretrained.state
    current = Model(state.params, state.batch_stats, pretrained.masks)
    records, elapsed = [], pretrained.train_time_s
    phase_ckpt = checkpoints.Checkpointer(os.path.join(workdir, "checkpoints", "phases"), None,
                                          config_lib.run_identity(config))
    try:
      restored = phase_ckpt.restore_latest(current)
      done = 0
      if restored is not None:
        done, current, meta = restored
        current = Model(*current)
        records, elapsed = meta["phases"], meta["elapsed_s"]
        report.log(f"resumed after phase {done} from {phase_ckpt.directory}")
      write_plots = lambda: plots.write_plots(
          {"config": config, "history": pretrained.history, "dense": dense_metrics,
           **pretrained.init_mask, "phases": records}, os.path.join(workdir, "plots"))
      plotted = time.perf_counter()
      for plan in phase_plans[done:]:
        current, record = runner.run_phase(plan, current)
        records.append(record)
        elapsed += record["train_time_s"]
        with report.interrupts_deferred():  # A Ctrl-C waits for the phase's checkpoint.
          phase_ckpt.save(plan.phase, current, {"phases": records, "elapsed_s": elapsed})
        shutil.rmtree(runner.candidate_dir(plan.phase), ignore_errors=True)
        _log_phase(record, candidate_names(plan.candidates))
        if plan is not phase_plans[-1] and time.perf_counter() - plotted >= PLOT_EVERY_S:
          write_plots()
          plotted = time.perf_counter()
      write_plots()
    finally:
      phase_ckpt.close()
  finally:
    scalars.close()

  last = records[-1]
  final = {k: outcome(last)[k] for k in ("val_accuracy", "val_loss", "test_accuracy",
                                          "test_loss", "test_ece", "test_mce",
                                          "test_worst_class_accuracy", "distance_to_start")}
  final.update(sparsity=last["sparsity"], sparsity_all=last["sparsity_all"])
  report.log(_final_line(final, dense_metrics,
                         "sparse start" if pretrained.init_mask else "dense"))
  return {"history": pretrained.history, "dense": dense_metrics, **pretrained.records,
          "phases": records, "final": final, "train_time_s": elapsed,
          "num_params": state_lib.count_params(current.params)}
