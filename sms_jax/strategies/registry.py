"""The strategy registry: name -> what runs it, its candidates per phase, its config check,
the epochs it plans to train.

Strategy modules register themselves at import (`register`); `sms_jax.strategies` imports
them all. A strategy never imports another: each is built from the shared parts
(`sms_jax.pretraining`, `sms_jax.phases`).
"""

import dataclasses
from typing import Any, Callable

import ml_collections

from sms_jax.data import Dataset

RunFn = Callable[[ml_collections.ConfigDict, Dataset, str], dict[str, Any]]


@dataclasses.dataclass(frozen=True)
class Strategy:
  """A registered strategy.

  Attributes:
    name: its `strategy` config value.
    run: `(config, dataset, workdir) -> results` (the strategy's part of results.json).
    candidates: `config -> m`, the candidates it trains together per phase (1: none).
    check: `(config, start_sparsity=None) -> message or None`: why the config cannot run it
      (one line); asked again with the sparsity a sparse start achieved once its mask is made
      (`pretraining.check_start`).
    phase_epochs: `config -> epochs`, the longest retraining phase after pretraining, whose
      steps count from 0 (0: none), for the step-count bound (`config.check_against_dataset`).
    planned_epochs: `config -> [(epochs, candidates)]`, the stages it trains in order
      (pretraining, then each phase), for the run's progress and ETA
      (`report.RunProgress`); default: one model for train.epochs.
    shares_pretraining: its first stage is `pretraining.pretrain` over all of train.epochs
      with the start mask fixed, so it may start from another such run's pretraining
      (`config.pretrained`) and serve as one.
    rewinds: it takes `retrain.rewind`: its phases rewind the weights (`dense`: it keeps the
      rewind point for the runs that share its pretraining).
    help: one line for the README, `--help` and errors.
  """
  name: str
  run: RunFn
  candidates: Callable[[ml_collections.ConfigDict], int] = lambda config: 1
  check: Callable[..., str | None] = lambda config, start_sparsity=None: None
  phase_epochs: Callable[[ml_collections.ConfigDict], int] = lambda config: 0
  planned_epochs: Callable[[ml_collections.ConfigDict], list[tuple[int, int]]] = (
      lambda config: [(config.train.epochs, 1)])
  shares_pretraining: bool = False
  rewinds: bool = False
  help: str = ""


STRATEGIES: dict[str, Strategy] = {}


def register(strategy: Strategy) -> Strategy:
  """Adds `strategy` under its name (a name registers once)."""
  if strategy.name in STRATEGIES:
    raise ValueError(f"strategy {strategy.name!r} is registered twice")
  STRATEGIES[strategy.name] = strategy
  return strategy


def candidates_per_phase(config: ml_collections.ConfigDict) -> int:
  """m, the candidates the config's strategy trains together (1 for strategies without soups)."""
  return STRATEGIES[config.strategy].candidates(config)
