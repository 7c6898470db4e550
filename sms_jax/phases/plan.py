"""Phase plans: what each prune-retrain phase of a strategy does, fixed before it runs.

A strategy with phases (imp, imp_mx, sms, sms_gmp, ...) is a list of `PhasePlan`s: per phase
the sparsity to prune to, its m candidates' hyperparameters, the learning-rate schedule they
retrain with and the sparsity updater that holds their masks. `sms_jax.phases.runner` runs
any such list. The model passed between phases is a `Model`.
"""

import dataclasses
from typing import Any, NamedTuple

import numpy as np

# The candidates' hyperparameters that `soup.vary` may name, each with its `soup.<values>` key.
VARIABLE_HPARAMS = {"seed": "seeds", "weight_decay": "weight_decays",
                    "learning_rate": "learning_rates", "retrain_epochs": "retrain_epochs"}


class Model(NamedTuple):
  """The model between phases: parameters, BatchNorm statistics and its masks."""
  params: Any
  batch_stats: Any
  masks: Any


@dataclasses.dataclass(frozen=True)
class Candidate:
  """One candidate's hyperparameters.

  Attributes:
    seed: offset of its data order (phase data key folded with it).
    weight_decay: its weight decay.
    learning_rate: its peak learning rate relative to the pretraining maxLR (1 = the
      schedule's own peak).
    retrain_epochs: its epochs in the phase.
  """
  seed: int
  weight_decay: float
  learning_rate: float
  retrain_epochs: int


@dataclasses.dataclass(frozen=True)
class PhasePlan:
  """One phase.

  Attributes:
    phase: its number, from 1.
    target_sparsity: the sparsity the phase prunes to before retraining.
    candidates: the m candidates' hyperparameters.
    schedule: the retraining learning-rate schedule (`sms_jax.training.retrain`).
    retrain_epochs: the phase's nominal length (ALLR's lower bound uses it).
    first_step: the schedule's count at the phase's first step.
    first_epoch: the epoch before the phase on the experiment's time axis (TensorBoard).
    updater: the sparsity updater the candidates train with (`sparsity.registry`).
  """
  phase: int
  target_sparsity: float
  candidates: tuple[Candidate, ...]
  schedule: str
  retrain_epochs: int
  first_step: int = 0
  first_epoch: int = 0
  updater: str = "fixed"

  @property
  def epochs(self) -> int:
    """The phase's length in epochs: the longest candidate's."""
    return max(c.retrain_epochs for c in self.candidates)


def varied_names(vary: str) -> list[str]:
  """The hyperparameter names in a `soup.vary` string: 'seed,weight_decay' -> both."""
  return [name.strip() for name in vary.split(",") if name.strip()]


def candidates(config, m: int, epochs_per_phase: int, max_lr: float) -> tuple[Candidate, ...]:
  """The m candidates of a phase `epochs_per_phase` long (see `Candidate`).

  A name in `soup.vary` takes its values from `soup.<values>` (absolute learning rates
  relative to `max_lr`) or a default spread: seeds 0..m-1, weight decay
  `train.weight_decay * 2 ** linspace(-1, 1, m)`, peak `linspace(0.5, 1.5, m)`, epochs
  `epochs_per_phase * linspace(0.5, 1.5, m)`; the others are shared (seed 0,
  `train.weight_decay`, peak 1, `epochs_per_phase`). One candidate varies nothing.
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
  for name, values_key in VARIABLE_HPARAMS.items():
    given = list(config.soup[values_key])
    if name not in names:
      columns[name] = [shared[name]] * m
    elif given:
      columns[name] = [v / max_lr for v in given] if name == "learning_rate" else given
    else:
      columns[name] = defaults[name]
  return tuple(Candidate(**{name: columns[name][k] for name in VARIABLE_HPARAMS})
               for k in range(m))


def candidate_names(candidates: tuple[Candidate, ...]) -> list[str]:
  """'candidate k (learning_rate=1.5x, seed=2)' per candidate, with the hyperparameters that
  differ between them (the learning rate relative to the schedule's peak)."""
  varied = [name for name in VARIABLE_HPARAMS
            if len({getattr(c, name) for c in candidates}) > 1]

  def value(candidate: Candidate, name: str) -> str:
    return f"{getattr(candidate, name):g}{'x' if name == 'learning_rate' else ''}"

  return [f"candidate {k}" + (f" ({', '.join(f'{n}={value(c, n)}' for n in varied)})"
                              if varied else "") for k, c in enumerate(candidates)]
