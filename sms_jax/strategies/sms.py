"""Iterative magnitude pruning (IMP) and Sparse Model Soups (SMS).

After dense pretraining, phase k = 1..n prunes the current model to sparsity
`1 - (1 - goal) ** (k / n)`, retrains m candidates from the pruned model (one stacked state,
`sms_jax.training.candidates`), soups them and evaluates. The next phase starts from the soup.
  imp     m = 1: each phase continues from its own retrained model;
  imp_mx  m = 1 with soup.m times longer retraining: the equal-compute baseline;
  sms     m = soup.m candidates that differ in `soup.vary`.
Each phase is checkpointed when complete (the soup, its masks and the phase records), and
the candidates every `checkpoint.every_epochs` epochs, so a killed run resumes mid-phase.
"""

import os
import shutil
import time
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from sms_jax import checkpoints, metrics, models, parallel, plots, report, soups, sparsity
from sms_jax.data import Dataset, Split, corruptions
from sms_jax.strategies import dense
from sms_jax.training import candidates, loop, retrain, state as state_lib

VARIABLE_HPARAMS = ("seed", "weight_decay", "learning_rate", "retrain_epochs")
VALUES_KEY = {"seed": "seeds", "weight_decay": "weight_decays",
               "learning_rate": "learning_rates", "retrain_epochs": "retrain_epochs"}


def varied_names(vary: str) -> list[str]:
  """The hyperparameter names in a `soup.vary` string: 'seed,weight_decay' -> both."""
  return [name.strip() for name in vary.split(",") if name.strip()]


def candidate_hparams(config: ml_collections.ConfigDict, m: int, epochs_per_phase: int,
                      max_lr: float) -> list[dict[str, Any]]:
  """The m candidates' `seed` (offset), `weight_decay`, `learning_rate` (peak relative to
  maxLR, 1 = the schedule's own peak) and `retrain_epochs`.

  A name in `soup.vary` takes its values from `soup.<name>s` or a default spread; the others
  are shared (seed offset 0, `train.weight_decay`, peak 1, `epochs_per_phase`).
  """
  names = varied_names(config.soup.vary) if m > 1 else []
  spread = np.linspace(-1.0, 1.0, m) if m > 1 else np.zeros(1)
  defaults = {
      "seed": [int(k) for k in range(m)],
      "weight_decay": [float(config.train.weight_decay * 2.0 ** s) for s in spread],
      "learning_rate": [float(1.0 + 0.5 * s) for s in spread],
      "retrain_epochs": [max(1, int(round(epochs_per_phase * (1.0 + 0.5 * s)))) for s in spread],
  }
  shared = {"seed": 0, "weight_decay": float(config.train.weight_decay), "learning_rate": 1.0,
            "retrain_epochs": epochs_per_phase}
  columns = {}
  for name in VARIABLE_HPARAMS:
    given = list(config.soup[VALUES_KEY[name]])
    if name not in names:
      columns[name] = [shared[name]] * m
    elif given:
      columns[name] = [v / max_lr for v in given] if name == "learning_rate" else given
    else:
      columns[name] = defaults[name]
  return [{name: columns[name][k] for name in VARIABLE_HPARAMS} for k in range(m)]


def _soup_state(params: Any, batch_stats: Any) -> state_lib.TrainState:
  """A state to evaluate (no optimizer)."""
  return state_lib.TrainState(step=jnp.zeros((), jnp.int32), params=params,
                              batch_stats=batch_stats, opt_state=())


def _check_masks(stacked: state_lib.TrainState, masks: Any) -> None:
  """Raises RuntimeError unless every candidate holds `masks` and is zero where they are."""
  for k, opt_state in enumerate(candidates.unstack(stacked.opt_state)):
    held = sparsity.held_masks(opt_state)
    if len(held) != 1 or not sparsity.masks_equal(held[0], masks):
      raise RuntimeError(f"candidate {k} does not hold this phase's mask")
  stacked_masks = jax.tree.map(lambda m: None if m is None else m[None], masks,
                               is_leaf=lambda x: x is None)
  if not sparsity.zero_outside(stacked.params, stacked_masks):
    raise RuntimeError("a candidate has nonzero weights outside this phase's mask")


def sparsity_record(params: Any, masks: Any, paths: list[str]) -> dict[str, Any]:
  """Achieved sparsity over prunable weights and over all parameters, and per layer."""
  layers = sparsity.layer_stats(params, masks, paths)
  size, nonzero = sum(l["size"] for l in layers), sum(l["nonzero"] for l in layers)
  return {"sparsity": 1.0 - nonzero / size,
          "sparsity_all": (size - nonzero) / state_lib.count_params(params), "layers": layers}


class Phases:
  """The prune-retrain-soup phases of one experiment (see the module docstring).

  Pruning during training (`sms_jax.strategies.gradual`) subclasses it and overrides the
  phase-specific parts: `target`, `hparams`, `peak_scale`, `first_epoch`, `first_step` and
  the candidates' learning-rate schedule `schedule_kind`.
  """

  def __init__(self, config: ml_collections.ConfigDict, dataset: Dataset, workdir: str,
               pretrained: dense.Pretrained, *, m: int, length_factor: int,
               scalars: report.ScalarWriter):
    self.config, self.dataset, self.workdir, self.m = config, dataset, workdir, m
    self.model, self.evaluator, self.scalars = pretrained.model, pretrained.evaluator, scalars
    self.paths = models.param_paths(self.model, dataset.input_shape)
    self.steps_per_epoch = dataset.steps_per_epoch(config.train.batch_size)
    self.pretrain = retrain.pretrain_schedule(config.train, self.steps_per_epoch)
    self.epochs_per_phase = config.retrain.epochs_per_phase * length_factor
    self._hparams = candidate_hparams(config, m, self.epochs_per_phase, self.pretrain.max_lr)
    self.schedule_kind = config.retrain.schedule
    root = jax.random.key(config.seed)
    self.data_key, self.prune_key = jax.random.fold_in(root, 1), jax.random.fold_in(root, 2)
    self.ood_key = jax.random.fold_in(root, 3)
    self._ood_sets = None  # {name: Split}, built at the first evaluation.
    self.start_sparsity = sparsity.sparsity(pretrained.masks)
    self.mesh = parallel.candidate_mesh(m, config.train.batch_size)
    self.execution = None  # parallel.candidate_execution, resolved at the first phase.

  def target(self, phase: int) -> float:
    """The sparsity after `phase`: from the initial mask's sparsity to the goal."""
    prune = self.config.prune
    return sparsity.phase_sparsity(prune.goal_sparsity, prune.n_phases, phase,
                                   start=self.start_sparsity)

  def hparams(self, phase: int) -> list[dict[str, Any]]:
    """The candidates' hyperparameters in `phase` (see `candidate_hparams`)."""
    del phase
    return self._hparams

  def first_epoch(self, phase: int) -> int:
    """The epoch (on the experiment's time axis: pretraining first) before `phase` starts."""
    return self.config.train.epochs + (phase - 1) * max(h["retrain_epochs"]
                                                        for h in self._hparams)

  def peak_scale(self, current: dict[str, Any], phase: int, norm_drop: float) -> float:
    """The factor on the candidates' peak learning rate: ALLR's for this phase, else 1."""
    if self.config.retrain.schedule != "allr":
      return 1.0
    before = sparsity.sparsity(current["masks"])
    return retrain.allr_peak(norm_drop, 1.0 - (1.0 - self.target(phase)) / (1.0 - before),
                             self.epochs_per_phase, self.config.train.epochs, 1.0)

  def first_step(self, phase: int) -> int:
    """The first count of the candidates' learning-rate schedule in `phase`."""
    del phase
    return 0

  def optimizer(self, h: dict[str, Any], phase: int, masks: Any,
                peak_scale: float) -> optax.GradientTransformation:
    """Candidate `h`'s optimizer in `phase` (fresh state: momentum 0)."""
    config = self.config
    return retrain.retrain_optimizer(
        self.schedule_kind, self.pretrain, masks,
        peak_learning_rate=self.pretrain.max_lr * peak_scale * h["learning_rate"],
        total_steps=h["retrain_epochs"] * self.steps_per_epoch, weight_decay=h["weight_decay"],
        momentum=config.train.momentum, nesterov=config.train.nesterov,
        first_step=self.first_step(phase))

  def prune(self, current: dict[str, Any], phase: int) -> tuple[Any, Any, float]:
    """This phase's masks, the pruned params, and the relative L2 norm pruning removed."""
    masks = sparsity.prune(current["params"], current["masks"], self.target(phase),
                           selector=self.config.prune.selector,
                           key=jax.random.fold_in(self.prune_key, phase))
    params = sparsity.apply_masks(current["params"], masks)
    norm = lambda tree: np.sqrt(sum(float(jnp.sum(jnp.square(x))) for x, m in zip(
        jax.tree.leaves(tree), jax.tree.leaves(masks, is_leaf=lambda x: x is None))
                                    if m is not None))
    removed = jax.tree.map(jnp.subtract, current["params"], params)
    return masks, params, norm(removed) / max(norm(current["params"]), 1e-12)

  def run_phase(self, phase: int, current: dict[str, Any]) -> tuple[dict[str, Any],
                                                                    dict[str, Any]]:
    """Prunes `current` (params, batch_stats, masks), retrains, soups and evaluates.

    Every phase starts a fresh optimizer state (momentum 0) for its candidates.
    Returns the soup as the next `current`, and the phase's record.
    """
    masks, params, norm_drop = self.prune(current, phase)
    peak_scale = self.peak_scale(current, phase, norm_drop)
    report.log(f"phase {phase}/{self.config.prune.n_phases}: pruned to sparsity "
               f"{sparsity.sparsity(masks):.4f}; training {self.m} candidate(s) for "
               f"{max(h['retrain_epochs'] for h in self.hparams(phase))} epochs")
    stacked, history, train_time = self.train(phase, params, current["batch_stats"], masks,
                                              peak_scale)
    soup, record = self.evaluate_phase(phase, stacked, masks, history[-1], train_time,
                                       peak_scale)
    record.update(relative_norm_drop=norm_drop, history=history)
    return {"params": soup.params, "batch_stats": soup.batch_stats, "masks": masks}, record

  def train(self, phase: int, params: Any, batch_stats: Any, masks: Any, peak_scale: float
            ) -> tuple[state_lib.TrainState, list[dict[str, Any]], float]:
    """Retrains the m candidates from `params`: the stacked state, its history and time."""
    config = self.config
    hparams = self.hparams(phase)
    txs = [self.optimizer(h, phase, masks, peak_scale) for h in hparams]
    stacked = candidates.stack([
        state_lib.TrainState(step=jnp.zeros((), jnp.int32), params=params,
                             batch_stats=batch_stats, opt_state=tx.init(params)) for tx in txs])
    phase_key = jax.random.fold_in(self.data_key, phase)
    keys = jnp.stack([jax.random.fold_in(phase_key, h["seed"]) for h in hparams])
    epochs = [h["retrain_epochs"] for h in hparams]
    step_kwargs = dict(model=self.model, tx=txs[0], label_smoothing=config.train.label_smoothing)
    if self.execution is None:  # Chosen once: every phase's candidates have the same shapes.
      self.execution = config.parallel.candidate_execution if self.mesh else \
          candidates.choose_execution(config.parallel.candidate_execution, stacked, self.dataset,
                                      batch_size=config.train.batch_size, log=report.log,
                                      **step_kwargs)
    run_epoch = candidates.candidate_epochs(
        stacked, self.dataset, keys, epochs, execution=self.execution,
        batch_size=config.train.batch_size, epoch_loop=config.train.epoch_loop, log=report.log,
        mesh=self.mesh, **step_kwargs)
    checkpointer = checkpoints.Checkpointer(self.candidate_dir(phase), config.checkpoint.keep)
    try:
      stacked, history, elapsed = loop.fit(
          stacked, run_epoch, epochs=max(epochs), evaluate=self.evaluate_candidates,
          checkpointer=checkpointer, every_epochs=config.checkpoint.every_epochs,
          eval_every_epochs=config.train.eval_every_epochs,
          images_per_epoch=self.m * self.steps_per_epoch * config.train.batch_size,
          scalars=self.scalars, scalar_prefix=f"phase{phase}/",
          scalar_offset=self.first_epoch(phase))
    finally:
      checkpointer.close()
    return parallel.to_local(stacked), history, elapsed

  def candidate_dir(self, phase: int) -> str:
    return os.path.join(self.workdir, "checkpoints", f"phase{phase}_candidates")

  def evaluate_candidates(self, stacked: state_lib.TrainState) -> dict[str, list[float]]:
    """Validation metrics of each candidate, as lists over the candidate axis."""
    per_candidate = [self.evaluator.evaluate(s, "val") for s in candidates.unstack(stacked)]
    return {k: [r[k] for r in per_candidate] for k in per_candidate[0]}

  def soup(self, stacked: state_lib.TrainState, indices: list[int]) -> state_lib.TrainState:
    """The uniform soup of `indices`, BatchNorm recalibrated (one ingredient: unchanged)."""
    params = soups.uniform_soup(stacked.params, indices)
    batch_stats = soups.uniform_soup(stacked.batch_stats, indices)
    if len(indices) > 1:
      batch_stats = soups.recalibrate_batch_stats(
          self.model, params, batch_stats, soups.recalibration_batches(
              self.dataset, self.config.soup.bn_recalibration_frac, self.config.train.batch_size))
    return _soup_state(params, batch_stats)

  def evaluate_phase(self, phase: int, stacked: state_lib.TrainState, masks: Any,
                     last_epoch: dict[str, Any], train_time_s: float, peak_scale: float = 1.0
                     ) -> tuple[state_lib.TrainState, dict[str, Any]]:
    """Soups the candidates and evaluates candidates, soup, best candidate and ensemble.

    `last_epoch`: the candidates' last history record, whose validation metrics (always
    computed after the last epoch) are the candidates' own.
    """
    tic = time.perf_counter()
    _check_masks(stacked, masks)
    members = candidates.unstack(stacked)
    test_logits = [self.evaluator.logits_and_labels(s, "test") for s in members]
    test_labels = test_logits[0][1]
    test_acc = [float((l.argmax(-1) == test_labels).mean()) for l, _ in test_logits]
    val_acc = last_epoch.get("val_accuracy", [0.0] * self.m)  # No val split: all equal.
    method = self.config.soup.method if self.m > 1 else "uniform"
    if method == "greedy":
      ingredients = soups.greedy_soup(
          val_acc, lambda idx: self.evaluator.evaluate(self.soup(stacked, idx), "val")["accuracy"])
    else:
      ingredients = list(range(self.m))
    soup = self.soup(stacked, ingredients)
    soup_val = self.evaluator.evaluate(soup, "val")
    soup_test = self.evaluator.evaluate(soup, "test")
    best = int(np.argmax(val_acc))
    ensemble_probs = np.mean([np.exp(metrics.log_softmax(l)) for l, _ in test_logits], axis=0)
    masks_record = sparsity_record(soup.params, masks, self.paths)
    flops = metrics.flops_summary(metrics.layer_flops(
        self.model, {"params": soup.params, "batch_stats": soup.batch_stats},
        self.dataset.input_shape))
    record = {
        "phase": phase,
        "target_sparsity": self.target(phase),
        **masks_record,
        "candidates": [{"hparams": self.describe(h, peak_scale), "val_accuracy": val_acc[k],
                        "test_accuracy": test_acc[k]}
                       for k, h in enumerate(self.hparams(phase))],
        "soup": {"method": method, "ingredients": ingredients,
                 "val_accuracy": soup_val.get("accuracy"), "val_loss": soup_val.get("loss"),
                 "test_accuracy": soup_test["accuracy"], "test_loss": soup_test["loss"],
                 "test_ece": soup_test["ece"], "test_mce": soup_test["mce"]},
        "best_candidate": {"index": best, "val_accuracy": val_acc[best],
                           "test_accuracy": test_acc[best]},
        "ensemble": {"test_accuracy": float((ensemble_probs.argmax(-1) == test_labels).mean())},
        "flops": flops,
        "distances": metrics.candidate_distances(stacked.params, soup.params),
        "ood": self.ood(soup),
        "train_time_s": train_time_s,
        "eval_time_s": time.perf_counter() - tic,
    }
    return soup, record

  def describe(self, h: dict[str, Any], peak_scale: float) -> dict[str, Any]:
    """A candidate's hyperparameters as run: the peak learning rate in absolute terms
    (`peak_scale`: ALLR's factor for this phase, else 1)."""
    return {**h, "learning_rate": h["learning_rate"] * self.pretrain.max_lr * peak_scale}

  def ood(self, soup: state_lib.TrainState) -> dict[str, float]:
    """Test accuracy of `soup` under corruptions: the dataset's own corrupted test sets when
    prepared (CIFAR-10-C: 'cifar10_corrupted/<name>'), else corruptions generated in JAX."""
    severity = self.config.ood.severity
    if not severity or self.dataset.streaming:
      return {}
    if self._ood_sets is None:
      real = self.dataset.ood_loader(severity) if self.dataset.ood_loader else None
      if real is not None:
        self._ood_sets = {f"{self.dataset.name}_corrupted/{k}": v for k, v in real.items()}
      else:
        test = self.dataset.test
        generated = corruptions.corrupted_splits(self.ood_key, jnp.asarray(test.x), severity)
        self._ood_sets = {k: Split(np.asarray(v), test.y) for k, v in generated.items()}
    return {name: float((self.evaluator.predict(soup, split.x).argmax(-1) == split.y).mean())
            for name, split in self._ood_sets.items()}


def _log_phase(record: dict[str, Any]) -> None:
  cands = [c["test_accuracy"] for c in record["candidates"]]
  report.log(f"phase {record['phase']}: sparsity {record['sparsity']:.4f} (target "
             f"{record['target_sparsity']:.4f})  soup test {record['soup']['test_accuracy']:.4f}"
             f"  candidates {min(cands):.4f}-{max(cands):.4f}  best-by-val "
             f"{record['best_candidate']['test_accuracy']:.4f}  ensemble "
             f"{record['ensemble']['test_accuracy']:.4f}")


def run(config: ml_collections.ConfigDict, dataset: Dataset, workdir: str, *, m: int,
        length_factor: int = 1, phases_type: type[Phases] = Phases,
        pretrain_epochs: int | None = None) -> dict[str, Any]:
  """Pretrains, then runs the pruning phases with m candidates each.

  Args:
    config: a validated config.
    dataset: the loaded data.
    workdir: where checkpoints, plots and scalars go.
    m: candidates per phase (1 for IMP).
    length_factor: retraining length multiplier (imp_mx: soup.m).
    phases_type: the phases (`Phases` or a subclass).
    pretrain_epochs: stop pretraining after this many epochs (default: train.epochs).
  Returns:
    The results' strategy part: pretraining `history`, `dense` (its val/test metrics),
    `phases` (one record per phase), `final` (the last soup's metrics and sparsity).
  """
  scalars = report.ScalarWriter(workdir)
  try:
    pretrained = dense.pretrain(config, dataset, workdir, scalars, epochs=pretrain_epochs)
    phases = phases_type(config, dataset, workdir, pretrained, m=m,
                         length_factor=length_factor, scalars=scalars)
    dense_metrics = dense.final_metrics(pretrained)
    state = pretrained.state
    current = {"params": state.params, "batch_stats": state.batch_stats,
               "masks": pretrained.masks}
    records, elapsed = [], pretrained.train_time_s
    phase_ckpt = checkpoints.Checkpointer(os.path.join(workdir, "checkpoints", "phases"), 1)
    try:
      restored = phase_ckpt.restore_latest(current)
      start = 0
      if restored is not None:
        start, current, meta = restored
        records, elapsed = meta["phases"], meta["elapsed_s"]
        report.log(f"resumed after phase {start} from {phase_ckpt.directory}")
      for phase in range(start + 1, config.prune.n_phases + 1):
        current, record = phases.run_phase(phase, current)
        records.append(record)
        elapsed += record["train_time_s"]
        phase_ckpt.save(phase, current, {"phases": records, "elapsed_s": elapsed})
        shutil.rmtree(phases.candidate_dir(phase), ignore_errors=True)
        _log_phase(record)
        plots.write_plots({"phases": records, "dense": dense_metrics},
                          os.path.join(workdir, "plots"))
    finally:
      phase_ckpt.close()
  finally:
    scalars.close()

  last = records[-1]
  final = {f"{k}": last["soup"][k] for k in ("val_accuracy", "val_loss", "test_accuracy",
                                             "test_loss", "test_ece", "test_mce")}
  final.update(sparsity=last["sparsity"], sparsity_all=last["sparsity_all"])
  report.log("final: " + "  ".join(f"{k} {v:.4f}" for k, v in final.items() if v is not None))
  return {"history": pretrained.history, "dense": dense_metrics, **pretrained.init_mask,
          "phases": records, "final": final, "train_time_s": elapsed,
          "num_params": state_lib.count_params(current["params"])}


def run_sms(config: ml_collections.ConfigDict, dataset: Dataset, workdir: str) -> dict[str, Any]:
  """Sparse Model Soups: soup.m candidates per phase."""
  return run(config, dataset, workdir, m=config.soup.m)


def run_imp(config: ml_collections.ConfigDict, dataset: Dataset, workdir: str) -> dict[str, Any]:
  """Plain IMP: one lineage, retrain.epochs_per_phase per phase."""
  return run(config, dataset, workdir, m=1)


def run_imp_mx(config: ml_collections.ConfigDict, dataset: Dataset,
               workdir: str) -> dict[str, Any]:
  """IMP with soup.m times longer retraining: the same compute as SMS."""
  return run(config, dataset, workdir, m=1, length_factor=config.soup.m)
