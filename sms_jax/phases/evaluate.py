"""A phase's evaluation: soup its candidates, evaluate candidates, soup, best candidate by
validation, prediction ensemble and OOD sets, count FLOPs and measure distances (between the
candidates, and of each model to the pruned model the phase started from). A phase of one
candidate (m = 1: imp, imp_mx) has no soup: its record holds that one `model`.

BatchNorm statistics are recalibrated (`bn_recalibration`) before every model is evaluated
('all', the reference's: each candidate, so the greedy soup and the best candidate rank them
by their recalibrated validation accuracy; the model of m = 1, handed on recalibrated; the
soup), for soups only ('soups'), or never ('none': a soup keeps its candidates' mean
statistics).

`PhaseEvaluator` computes logits; the metrics come from the pure functions of
`sms_jax.evaluation`. It runs on a model and data of its own, so it is tested on its own.
"""

import time
from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from sms_jax import evaluation, report, soups
from sms_jax.data import Dataset, Split
from sms_jax.training import engine
from sms_jax.training.evaluator import Evaluator
from sms_jax.training.state import TrainState


def evaluation_state(params: Any, batch_stats: Any) -> TrainState:
  """A state to evaluate (no optimizer)."""
  return TrainState(step=jnp.zeros((), jnp.int32), params=params, batch_stats=batch_stats,
                    opt_state=())


class PhaseEvaluator:
  """Soups and evaluates the stacked candidates of a phase.

  Args:
    model: the Flax model.
    dataset: its data (BatchNorm statistics are recalibrated on the first
      `bn_recalibration_frac` of the training split, `batch_size` examples a batch).
    evaluator: eval-mode logits on the val and test splits.
    ood_sets: `{name: Split}` the soup is evaluated on (corrupted test sets), maybe {}.
    paths: the model's parameter paths in forward order.
    bn_recalibration: which models are recalibrated: 'all', 'soups' or 'none'.
    bn_average: 'cumulative' (the exact mean over unaugmented batches) or 'ema' (the
      reference's exponential average over augmented batches, keyed by `key`).
    key: the augmentation key of the 'ema' recalibration.
  """

  def __init__(self, model: nn.Module, dataset: Dataset, evaluator: Evaluator, *,
               bn_recalibration_frac: float, batch_size: int, ood_sets: dict[str, Split],
               paths: Sequence[str], bn_recalibration: str = "all",
               bn_average: str = "cumulative", key: jax.Array | None = None):
    if bn_recalibration not in soups.BN_RECALIBRATIONS or bn_average not in soups.BN_AVERAGES:
      raise ValueError(f"BatchNorm recalibration {bn_recalibration!r} with average "
                       f"{bn_average!r} is not allowed; allowed: one of "
                       f"{', '.join(soups.BN_RECALIBRATIONS)} with one of "
                       f"{', '.join(soups.BN_AVERAGES)}")
    self.model, self.dataset, self.evaluator, self.ood_sets = model, dataset, evaluator, ood_sets
    self.bn_recalibration_frac, self.batch_size, self.paths = (bn_recalibration_frac,
                                                               batch_size, paths)
    self.bn_recalibration, self.bn_average = bn_recalibration, bn_average
    self.key = jax.random.key(0) if key is None else key

  def _batches(self):
    """The recalibration batches (augmented for the 'ema' average)."""
    return soups.recalibration_batches(
        self.dataset, self.bn_recalibration_frac, self.batch_size,
        augment_key=self.key if self.bn_average == "ema" else None)

  def _momentum(self) -> float | None:
    return soups.EMA_MOMENTUM if self.bn_average == "ema" else None

  def soup(self, stacked: TrainState, indices: Sequence[int]) -> TrainState:
    """The uniform soup of candidates `indices` of `stacked: [m, ...]`, its BatchNorm
    statistics recalibrated unless `bn_recalibration` is 'none' (one ingredient: that
    candidate, unchanged)."""
    batches = None if self.bn_recalibration == "none" else self._batches()
    soup = soups.soup_variables(
        self.model, {"params": stacked.params, "batch_stats": stacked.batch_stats}, indices,
        batches, momentum=self._momentum())
    return evaluation_state(soup["params"], soup["batch_stats"])

  def recalibrated(self, stacked: TrainState) -> TrainState:
    """`stacked: [m, ...]` with each candidate's BatchNorm statistics recalibrated when
    `bn_recalibration` is 'all' (else unchanged)."""
    if self.bn_recalibration != "all" or not jax.tree.leaves(stacked.batch_stats):
      return stacked
    members = engine.unstack(stacked)
    stats = [soups.recalibrate_batch_stats(self.model, s.params, s.batch_stats, self._batches(),
                                           momentum=self._momentum()) for s in members]
    return stacked.replace(batch_stats=engine.stack(stats))

  def ingredients(self, stacked: TrainState, val_accuracies: Sequence[float] | None,
                  method: str) -> list[int]:
    """The candidates the soup averages: all ('uniform'), or those a greedy soup accepts
    (it needs their validation accuracies)."""
    if method == "uniform":
      return list(range(jax.tree.leaves(stacked.params)[0].shape[0]))
    if method == "greedy" and val_accuracies is None:
      raise ValueError("a greedy soup ranks candidates by validation accuracy; there is no "
                       "validation split (dataset.val_fraction = 0)")
    if method == "greedy":
      return soups.greedy_soup(val_accuracies, lambda idx: self.evaluator.evaluate(
          self.soup(stacked, idx), "val")["accuracy"])
    raise ValueError(f"unknown soup method {method!r}; allowed: {', '.join(soups.SOUP_METHODS)}")

  def metrics(self, state: TrainState, start_params: Any) -> dict[str, float | None]:
    """`val_accuracy`, `val_loss` (None without a validation split), `test_accuracy`,
    `test_loss`, `test_ece`, `test_mce`, `test_worst_class_accuracy` of one model, and its
    L2 `distance_to_start` from `start_params`."""
    val, test = self.evaluator.evaluate(state, "val"), self.evaluator.evaluate(state, "test")
    (distance,) = evaluation.distances_to(jax.tree.map(lambda p: p[None], state.params),
                                          start_params)
    return {"val_accuracy": val.get("accuracy"), "val_loss": val.get("loss"),
            "test_accuracy": test["accuracy"], "test_loss": test["loss"],
            "test_ece": test["ece"], "test_mce": test["mce"],
            "test_worst_class_accuracy": test["worst_class_accuracy"],
            "distance_to_start": distance}

  def __call__(self, stacked: TrainState, masks: Any, *, start_params: Any,
               val_accuracies: Sequence[float] | None, hparams: Sequence[dict[str, Any]],
               method: str) -> tuple[TrainState, dict[str, Any]]:
    """Soups `stacked: [m, ...]` and evaluates everything; with m = 1 evaluates the one model.

    Args:
      stacked: the trained candidates, all inside `masks`.
      masks: the phase's masks.
      start_params: the pruned parameters the candidates started from (no candidate axis).
      val_accuracies: each candidate's validation accuracy as trained (ranks them for the
        greedy soup and picks the best candidate, unless `bn_recalibration` is 'all': then
        their recalibrated ones do); None without a validation split: then the record has
        no `best_candidate` (nothing ranks them) and the candidates' `val_accuracy` is None.
      hparams: each candidate's hyperparameters as run, for the record.
      method: 'uniform' or 'greedy' (unused for m = 1).
    Returns:
      The model the phase hands on (the soup; for m = 1 the one model), and the record: its
      `sparsity`, `sparsity_all` and `layers`; for m > 1 `candidates` (hparams, val and test
      accuracy, worst-class test accuracy, distance to the start), `soup` (method,
      ingredients and `metrics`), `ensemble`, `distances` and `best_candidate`; for m = 1
      `model` (hparams and `metrics`) instead; then `flops`, `ood` (of the model handed on)
      and `eval_time_s`.
    """
    tic = time.perf_counter()
    stacked = self.recalibrated(stacked)
    if self.bn_recalibration == "all" and val_accuracies is not None:
      val_accuracies = [self.evaluator.evaluate(s, "val")["accuracy"]
                        for s in engine.unstack(stacked)]
    if engine.num_candidates(stacked.params) == 1:
      (member,) = engine.unstack(stacked)
      model = evaluation_state(member.params, member.batch_stats)
      record = {"model": {"hparams": hparams[0], **self.metrics(model, start_params)}}
    else:
      model, record = self.soup_and_candidates(stacked, start_params, val_accuracies, hparams,
                                               method)
    ood = {name: self.evaluator.predict(model, split.x) for name, split in report.ticked(
        list(self.ood_sets.items()), "evaluating on the OOD sets", "sets")}
    record = {
        **evaluation.sparsity_record(model.params, masks, self.paths), **record,
        "flops": evaluation.flops_summary(evaluation.layer_flops(
            self.model, {"params": model.params, "batch_stats": model.batch_stats},
            self.dataset.input_shape)),
        "ood": evaluation.ood_accuracies(ood, {k: s.y for k, s in self.ood_sets.items()}),
        "eval_time_s": time.perf_counter() - tic,
    }
    return model, record

  def soup_and_candidates(self, stacked: TrainState, start_params: Any,
                          val_accuracies: Sequence[float] | None,
                          hparams: Sequence[dict[str, Any]],
                          method: str) -> tuple[TrainState, dict[str, Any]]:
    """The soup of `stacked: [m, ...]` (m > 1), and the record's `candidates`, `soup`,
    `ensemble`, `distances` and `best_candidate` (see `__call__`)."""
    members = engine.unstack(stacked)
    test = [self.evaluator.logits_and_labels(s, "test")
            for s in report.ticked(members, "evaluating the candidates", "candidates")]
    test_logits, test_labels = np.stack([logits for logits, _ in test]), test[0][1]
    test_acc = evaluation.candidate_accuracies(test_logits, test_labels)
    ingredients = self.ingredients(stacked, val_accuracies, method)
    soup = self.soup(stacked, ingredients)
    val_of = (lambda k: None) if val_accuracies is None else (lambda k: val_accuracies[k])
    to_start = evaluation.distances_to(stacked.params, start_params)
    record = {
        "candidates": [{"hparams": h, "val_accuracy": val_of(k), "test_accuracy": test_acc[k],
                        "test_worst_class_accuracy": evaluation.worst_class_accuracy(
                            test_logits[k], test_labels),
                        "distance_to_start": to_start[k]} for k, h in enumerate(hparams)],
        "soup": {"method": method, "ingredients": ingredients,
                 **self.metrics(soup, start_params)},
        "ensemble": {"test_accuracy": evaluation.ensemble_accuracy(test_logits, test_labels)},
        "distances": evaluation.candidate_distances(stacked.params, soup.params),
    }
    if val_accuracies is not None:
      best = evaluation.best_candidate(val_accuracies)
      record["best_candidate"] = {"index": best, "val_accuracy": val_accuracies[best],
                                  "test_accuracy": test_acc[best]}
    return soup, record


def outcome(record: dict[str, Any]) -> dict[str, Any]:
  """The metrics of the model a phase record hands on: its `soup`, or for m = 1 its `model`."""
  return record["soup"] if "soup" in record else record["model"]
