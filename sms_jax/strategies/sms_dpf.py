"""Sparse Model Soups on dynamic pruning with feedback (sms_dpf).

The phases of `sms_jax.phases.gradual` (those of sms_gmp) with DPF's dense weights carried
through them. One model trains densely up to the first of `prune.n_phases` mask updates of
the cubic schedule. Phase k:
  1. chooses its masks from the dense weights it inherits: the largest, at the schedule's
     sparsity at its epoch, among the start mask (every prunable weight for a dense start),
     so a weight pruned in an earlier phase may come back (DPF's feedback; the record's
     `revived` counts them);
  2. trains soup.m candidates from `masks * dense` to the next update with those masks fixed
     (`sparsity.dpf.FixedFeedback`): forward and backward on the masked weights, whose
     gradients update each candidate's dense weights, pruned ones included;
  3. soups the candidates (the masked models: the soup is evaluated and handed on) and
     their dense weights: the next phase's dense weights are the soup's params inside the
     masks and the mean of the ingredients' dense weights outside them (so the mean of the
     ingredients' dense weights throughout), 0 outside the start mask.
The last phase's masks have exactly `prune.goal_sparsity`.

The dense weights handed on live in `<workdir>/checkpoints/dpf_dense` (one checkpoint per
phase, beside the phase checkpoints that hold the soups), so a resumed run goes on exactly;
a resume checks that they mask to the saved soup.
"""

import dataclasses
import functools
import os
import shutil
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from sms_jax import checkpoints, pretraining, soups, sparsity
from sms_jax import config as config_lib
from sms_jax.data import Dataset
from sms_jax.phases import gradual, runner
from sms_jax.phases.plan import Model, PhasePlan
from sms_jax.sparsity import dpf, masks as masks_lib
from sms_jax.strategies.registry import Strategy, register
from sms_jax.training import state as state_lib


def soup_dense(stacked_dense: Any, soup_params: Any, masks: Any, scope: Any,
               ingredients: Sequence[int]) -> Any:
  """The dense weights a phase hands on.

  Args:
    stacked_dense: the candidates' dense weights `[m, ...]`.
    soup_params: the soup's params (no candidate axis), 0 outside `masks`.
    masks: the phase's masks; scope: the masks of the weights that may be alive.
    ingredients: the candidates in the soup.
  Returns:
    `soup_params` inside `masks` (the soup, bit for bit), the ingredients' mean dense weight
    outside them within `scope`, 0 outside `scope`.
  """
  mean = soups.uniform_soup(stacked_dense, ingredients)
  return jax.tree.map(
      lambda p, d, m, s: p if m is None else jnp.where(m, p, jnp.where(s, d, 0)),
      soup_params, mean, masks_lib.masks_like(soup_params, masks),
      masks_lib.masks_like(soup_params, scope))


class DPFPhaseRunner(runner.PhaseRunner):
  """Runs sms_dpf's phases (see the module docstring): the phase runner, with the dense
  weights carried from each phase to the next."""

  def __init__(self, config: ml_collections.ConfigDict, dataset: Dataset, workdir: str,
               pretrained: pretraining.Pretrained, **kwargs: Any):
    super().__init__(config, dataset, workdir, pretrained, **kwargs)
    self.scope = pretrained.masks  # The start mask: all alive for a dense start.
    self._carried = None  # (phase, dense weights) handed on by the last phase run here.
    self._start_dense = None  # The dense weights the phase being run starts from.
    self._trained_dense = None  # Its candidates' dense weights after training, [m, ...].

  def dense_directory(self) -> str:
    """Where the dense weights each phase hands on are saved."""
    return os.path.join(self.workdir, "checkpoints", "dpf_dense")

  def dense_before(self, phase: int, current: Model) -> Any:
    """The dense weights phase `phase` starts from: the pretrained model's for the first,
    else those the previous phase handed on (saved, if it ran in an earlier process).

    Raises:
      checkpoints.CheckpointError: the saved ones do not mask to `current` (the soup).
    """
    if phase == 1:
      return current.params
    if self._carried is not None and self._carried[0] == phase - 1:
      return self._carried[1]
    _, saved, _ = checkpoints.read_verified(self.dense_directory(), phase - 1)
    dense = jax.tree.unflatten(jax.tree.structure(current.params),
                               [jnp.asarray(x) for x in jax.tree.leaves(saved)])
    masked = sparsity.apply_masks(dense, current.masks)
    if not all(np.array_equal(a, b) for a, b in zip(jax.tree.leaves(masked),
                                                    jax.tree.leaves(current.params))):
      raise checkpoints.CheckpointError(
          f"the dense weights of phase {phase - 1} in {self.dense_directory()} do not mask to "
          "that phase's saved soup; remove the workdir's checkpoints to start afresh")
    return dense

  def prune(self, current: Model, plan: PhasePlan) -> tuple[Any, Any, float]:
    """The largest inherited dense weights at the plan's sparsity among the start mask; the
    masked dense weights; the relative L2 norm of the dense weights left out."""
    self._start_dense = self.dense_before(plan.phase, current)
    return super().prune(Model(self._start_dense, current.batch_stats, self.scope), plan)

  def train(self, plan: PhasePlan, start: Model, updater: sparsity.Updater, *args: Any,
            **kwargs: Any) -> tuple[state_lib.TrainState, list[dict[str, Any]], float]:
    """The base runner's training, the candidates' dense weights starting from the phase's
    (`updater`, `dpf_fixed`, given them); keeps their dense weights after it."""
    updater = dataclasses.replace(updater, dense=self._start_dense)
    stacked, history, elapsed = super().train(plan, start, updater, *args, **kwargs)
    self._trained_dense = dpf.dense_of(stacked.opt_state)
    return stacked, history, elapsed

  def run_phase(self, plan: PhasePlan, current: Model) -> tuple[Model, dict[str, Any]]:
    """The phase of the base runner; its record adds `revived`, the weights alive in its
    masks that the previous phase's masks had pruned. Saves the dense weights it hands on."""
    model, record = super().run_phase(plan, current)
    ingredients = record["soup"]["ingredients"] if "soup" in record else [0]
    dense = soup_dense(self._trained_dense, model.params, model.masks, self.scope, ingredients)
    record["revived"] = int(sum(np.count_nonzero(np.asarray(m) & ~np.asarray(o)) for m, o in zip(
        jax.tree.leaves(model.masks), jax.tree.leaves(current.masks))))
    self._save_dense(plan.phase, dense)
    self._carried, self._start_dense, self._trained_dense = (plan.phase, dense), None, None
    return model, record

  def _save_dense(self, phase: int, dense: Any) -> None:
    """Saves `dense` as step `phase`, replacing one left by a run killed after saving it
    but before its phase's checkpoint."""
    directory = self.dense_directory()
    if jax.process_index() == 0:
      shutil.rmtree(os.path.join(directory, str(phase)), ignore_errors=True)
    saver = checkpoints.Checkpointer(directory, None, config_lib.run_identity(self.config))
    try:
      saver.save(phase, dense, {"phase": phase})
    finally:
      saver.close()


def _run(config: ml_collections.ConfigDict, dataset: Dataset, workdir: str) -> dict[str, Any]:
  return runner.run(config, dataset, workdir, m=config.soup.m,
                    plans=functools.partial(gradual.plans, m=config.soup.m,
                                            updater="dpf_fixed"),
                    pretrain_epochs=gradual.phase_epochs(config)[0],
                    phase_runner=DPFPhaseRunner)


register(Strategy(
    "sms_dpf", _run, candidates=lambda config: config.soup.m, **gradual.strategy_fields(),
    help="SMS between the mask updates of dynamic pruning with feedback (dense weights kept)"))
