"""Budgeted IMP (bimp; Zimmer, Spiegel & Pokutta, ICLR 2023) and SMS on top of it (sms_bimp).

The budget. imp and sms train E = `train.epochs` dense, then n = `prune.n_phases` phases of
e = `retrain.epochs_per_phase`: B = E + n * e epochs per model. BIMP spends the same B:
  - a dense run of P = `bimp.pretrain_epochs` <= E epochs whose whole `train.schedule` is
    compressed into those P epochs (its warmup and step decays scaled by P / E, milestones
    being fractions already), so that it decays to its end (0 for linear and cosine) within
    them; not the first P epochs of the E-epoch schedule;
  - then n IMP phases of L = e + (E - P) / n epochs (the E - P epochs cut from the dense run
    go equally to the phases), each pruning to `1 - (1 - goal) ** (k / n)` (from a sparse
    start: geometric from its sparsity) and retraining with ALLR, whose lower bound
    `min(L / P, 1) * maxLR` takes P as the pretraining length.
So B = P + n * L. P must leave (E - P) divisible by n; `bimp.pretrain_epochs = 0` gives the
phases about half the budget, `L = max(e, round(B / (2 n)))`, P = B - n * L. BIMP's phases
always retrain with ALLR, whatever `retrain.schedule` says (as sms_gmp's always continue the
training schedule); results.json's `budget` says so.
  bimp      one model per phase (m = 1), as the paper's BIMP;
  sms_bimp  soup.m candidates per phase that differ in `soup.vary`, souped; the next phase
            starts from the soup.

Both run `runner.run` on the config as BIMP runs it (`budgeted`: train.epochs = P, the
compressed schedule, retrain.epochs_per_phase = L, retrain.schedule = 'allr'), which alone
determines the run: its checkpoints carry that config's `run_identity`, the same whenever the
experiment's config is, so a killed run resumes; results.json keeps the experiment's config
and adds `budget` (B, P, L). Parameters not from the paper: the paper's split of the budget
for these datasets could not be checked here, so P is a key (default: half the budget).
"""

import functools
import math
from typing import Any

import ml_collections

from sms_jax.phases import plan as plan_lib, runner
from sms_jax.sparsity import pruning
from sms_jax.strategies import prune_retrain
from sms_jax.strategies.registry import Strategy, register

SCHEDULE = "allr"


def budget(config: ml_collections.ConfigDict) -> int:
  """B: the epochs per model of imp and sms with `config`, E + n * e."""
  return config.train.epochs + config.prune.n_phases * config.retrain.epochs_per_phase


def pretrain_epochs(config: ml_collections.ConfigDict) -> int:
  """P: `bimp.pretrain_epochs`, or for 0 the budget less n phases of
  `max(e, round(B / (2 n)))` epochs (at least 1, at most E)."""
  if config.bimp.pretrain_epochs:
    return config.bimp.pretrain_epochs
  n = config.prune.n_phases
  length = max(config.retrain.epochs_per_phase, math.floor(budget(config) / (2 * n) + 0.5))
  return budget(config) - n * length


def phase_length(config: ml_collections.ConfigDict) -> int:
  """L: each phase's epochs, `(B - P) / n`."""
  return (budget(config) - pretrain_epochs(config)) // config.prune.n_phases


def budgeted(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """The config as BIMP runs it: `train.epochs` = P with `train.warmup_epochs` and
  `train.step_epochs` scaled by P / E, `retrain.epochs_per_phase` = L,
  `retrain.schedule` = 'allr'; everything else as in `config` (a copy)."""
  run_config = config.copy_and_resolve_references()
  p, scale = pretrain_epochs(config), pretrain_epochs(config) / config.train.epochs
  run_config.train.epochs = p
  run_config.train.warmup_epochs = config.train.warmup_epochs * scale
  run_config.train.step_epochs = max(1, round(config.train.step_epochs * scale))
  run_config.retrain.epochs_per_phase = phase_length(config)
  run_config.retrain.schedule = SCHEDULE
  return run_config


def check(config: ml_collections.ConfigDict, start_sparsity: float | None = None) -> str | None:
  """Why `config` cannot run BIMP (one line), or None: a dense run of at most train.epochs
  that leaves equal phases, a goal above the start's sparsity."""
  p, epochs, n = config.bimp.pretrain_epochs, config.train.epochs, config.prune.n_phases
  if p and (p > epochs or (epochs - p) % n):
    fits = [q for q in range(epochs % n or n, epochs + 1, n)]
    near = sorted(fits, key=lambda q: abs(q - p))[:2]
    return (f"config key bimp.pretrain_epochs = {p} is not allowed with train.epochs = "
            f"{epochs} and prune.n_phases = {n}; allowed: 0 (auto) or P <= {epochs} with "
            f"{epochs} - P divisible by {n} (the epochs cut from the dense run go equally to "
            f"the phases), e.g. {' or '.join(map(str, sorted(near)))}")
  return pruning.check_goal_sparsity(config, start_sparsity)


def _register(name: str, m, help_: str) -> None:
  """Registers `name`: BIMP with m (`config -> int`) candidates per phase."""

  def run(config: ml_collections.ConfigDict, dataset, workdir: str) -> dict[str, Any]:
    """runner.run's results for `budgeted(config)`, and `budget`: B, P, L, the schedule."""
    run_config = budgeted(config)
    results = runner.run(run_config, dataset, workdir, m=m(config), plans=functools.partial(
        prune_retrain.plans, m=m(config), length_factor=1))
    return {**results, "budget": {
        "epochs": budget(config), "pretrain_epochs": run_config.train.epochs,
        "phase_epochs": run_config.retrain.epochs_per_phase, "schedule": SCHEDULE}}

  def phase_epochs(config: ml_collections.ConfigDict) -> int:
    return max(c.retrain_epochs for c in plan_lib.candidates(
        config, m(config), phase_length(config), 1.0))

  def planned_epochs(config: ml_collections.ConfigDict) -> list[tuple[int, int]]:
    return ([(pretrain_epochs(config), 1)]
            + [(phase_epochs(config), m(config))] * config.prune.n_phases)

  register(Strategy(name, run, candidates=m, check=check, phase_epochs=phase_epochs,
                    planned_epochs=planned_epochs, help=help_))


_register("bimp", lambda config: 1,
          "budgeted IMP: a shortened dense run, then ALLR phases in the same total epochs")
_register("sms_bimp", lambda config: config.soup.m,
          "SMS on budgeted IMP: soup.m candidates per ALLR phase, souped")
