"""A phase's evaluation: soup its candidates, evaluate candidates, soup, best candidate by
validation, prediction ensemble and OOD sets, count FLOPs and measure distances.

`PhaseEvaluator` computes logits; the metrics come from the pure functions of
`sms_jax.evaluation`. It runs on a model and data of its own, so it is tested on its own.
"""

import time
from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from sms_jax import evaluation, soups
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
    dataset: its data (the soup's BatchNorm statistics are recalibrated on the first
      `bn_recalibration_frac` of the training split, `batch_size` examples a batch).
    evaluator: eval-mode logits on the val and test splits.
    ood_sets: `{name: Split}` the soup is evaluated on (corrupted test sets), maybe {}.
    paths: the model's parameter paths in forward order.
  """

  def __init__(self, model: nn.Module, dataset: Dataset, evaluator: Evaluator, *,
               bn_recalibration_frac: float, batch_size: int, ood_sets: dict[str, Split],
               paths: Sequence[str]):
    self.model, self.dataset, self.evaluator, self.ood_sets = model, dataset, evaluator, ood_sets
    self.bn_recalibration_frac, self.batch_size, self.paths = (bn_recalibration_frac,
                                                               batch_size, paths)

  def soup(self, stacked: TrainState, indices: Sequence[int]) -> TrainState:
    """The uniform soup of candidates `indices` of `stacked: [m, ...]`, its BatchNorm
    statistics recalibrated (one ingredient: that candidate, unchanged)."""
    params = soups.uniform_soup(stacked.params, indices)
    batch_stats = soups.uniform_soup(stacked.batch_stats, indices)
    if len(indices) > 1:
      batch_stats = soups.recalibrate_batch_stats(
          self.model, params, batch_stats, soups.recalibration_batches(
              self.dataset, self.bn_recalibration_frac, self.batch_size))
    return evaluation_state(params, batch_stats)

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

  def __call__(self, stacked: TrainState, masks: Any, *, val_accuracies: Sequence[float] | None,
               hparams: Sequence[dict[str, Any]],
               method: str) -> tuple[TrainState, dict[str, Any]]:
    """Soups `stacked: [m, ...]` and evaluates everything.

    Args:
      stacked: the trained candidates, all inside `masks`.
      masks: the phase's masks.
      val_accuracies: each candidate's validation accuracy (ranks them for the greedy soup
        and picks the best candidate); None without a validation split: then the record has
        no `best_candidate` (nothing ranks them) and the candidates' `val_accuracy` is None.
      hparams: each candidate's hyperparameters as run, for the record.
      method: 'uniform' or 'greedy'.
    Returns:
      The soup, and the record: the soup's `sparsity`, `sparsity_all` and `layers`;
      `candidates` (hparams, val and test accuracy), `soup`, `best_candidate`, `ensemble`,
      `flops`, `distances`, `ood` and `eval_time_s`.
    """
    tic = time.perf_counter()
    members = engine.unstack(stacked)
    test = [self.evaluator.logits_and_labels(s, "test") for s in members]
    test_logits, test_labels = np.stack([logits for logits, _ in test]), test[0][1]
    test_acc = evaluation.candidate_accuracies(test_logits, test_labels)
    ingredients = self.ingredients(stacked, val_accuracies, method)
    soup = self.soup(stacked, ingredients)
    soup_val = self.evaluator.evaluate(soup, "val")
    soup_test = self.evaluator.evaluate(soup, "test")
    val_of = (lambda k: None) if val_accuracies is None else (lambda k: val_accuracies[k])
    ood = {name: self.evaluator.predict(soup, split.x) for name, split in self.ood_sets.items()}
    record = {
        **evaluation.sparsity_record(soup.params, masks, self.paths),
        "candidates": [{"hparams": h, "val_accuracy": val_of(k), "test_accuracy": test_acc[k]}
                       for k, h in enumerate(hparams)],
        "soup": {"method": method, "ingredients": ingredients,
                 "val_accuracy": soup_val.get("accuracy"), "val_loss": soup_val.get("loss"),
                 "test_accuracy": soup_test["accuracy"], "test_loss": soup_test["loss"],
                 "test_ece": soup_test["ece"], "test_mce": soup_test["mce"]},
        "ensemble": {"test_accuracy": evaluation.ensemble_accuracy(test_logits, test_labels)},
        "flops": evaluation.flops_summary(evaluation.layer_flops(
            self.model, {"params": soup.params, "batch_stats": soup.batch_stats},
            self.dataset.input_shape)),
        "distances": evaluation.candidate_distances(stacked.params, soup.params),
        "ood": evaluation.ood_accuracies(ood, {k: s.y for k, s in self.ood_sets.items()}),
        "eval_time_s": time.perf_counter() - tic,
    }
    if val_accuracies is not None:
      best = evaluation.best_candidate(val_accuracies)
      record["best_candidate"] = {"index": best, "val_accuracy": val_accuracies[best],
                                  "test_accuracy": test_acc[best]}
    return soup, record
