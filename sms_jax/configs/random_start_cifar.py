"""Start sparse on CIFAR: the random-pruning paper's experiments with ResNet-18 and VGG-16.

Gadhikar et al. (ICML 2023) start each sparsification method from a random sparse network
(density 0.3) and compare it with the same method started dense.
`--config=random_start_cifar:DATASET,MODEL,METHOD,START[,quick]` builds that run: DATASET cifar10
(default) or cifar100, MODEL resnet18 (default) or vgg16, METHOD and START as in
configs/random_start_mnist1d.py (START dense or a distribution: uniform, er, erk, balanced
(default), pyramidal). Every method but Edge-Popup ends at 99% sparsity (density 0.01).

Training is the paper's (configs/random_start_cifar10.py): SGD, learning rate 0.1, momentum 0.9,
weight decay 5e-4, batch 128, 160 epochs, cosine schedule. Per method:
  sms, imp     160 epochs in the start mask, then 15 phases of 10 LLR epochs to 99%
  lth          lottery-ticket IMP (configs/lth_cifar10.py): 80% kept per level, rewind to
               init, 150 epochs per level with the whole schedule; 21 levels from dense,
               15 from density 0.3 (each keeps about 80%)
  snip, synflow  scored at initialisation to density 0.01 (inside the mask for a sparse
               start), then 160 epochs (strategy dense)
  rigl         160 epochs in a random mask at density 0.01; drop and regrow every 100 steps
               (RigL's CIFAR interval), alpha 0.3 falling along a cosine to 0 at 3/4 of the run
  granet       gradual magnitude pruning from epoch 0 to 120 (3/4 of the run) along the
               cubic schedule, with RigL's regrowth, every 100 steps (project's choice)
  sms_rigl, sms_granet  their soups: the updates at 4 phase starts (epochs 30, 60, 90, 120),
               soup.m candidates between them
  edge_popup   scores of frozen signed-constant weights at the distribution's layer densities
               of global density 0.5, 160 epochs at learning rate 0.1 (project's choice)
  static       160 epochs inside the 0.3 mask (dense start: dense training)
GPU jobs (lth: 160 + 21 x 150 epochs). Needs `tfds build cifar10` (or cifar100). `quick` is a
smoke test (tiny model, 2 epochs, 2 phases).
"""

import math

from sms_jax.configs import _random_start as random_start
from sms_jax.configs import lth_cifar10, random_start_cifar10

DATASETS = ("cifar10", "cifar100")
MODELS = ("resnet18", "vgg16")
GOAL_SPARSITY = 0.99
_CHOICES = (("DATASET", DATASETS, "cifar10"), ("MODEL", MODELS, "resnet18"))


def lth_levels(start_density: float, goal_density: float, keep: float = 0.8) -> int:
  """The number of levels keeping about `keep` of the weights each from one density to the
  other (the nearest whole number)."""
  return round(math.log(goal_density / start_density) / math.log(keep))


def get_config(arg: str = ""):
  """The random-pruning paper's run (see the module docstring); `arg`
  'DATASET,MODEL,METHOD,START[,quick]', each part optional."""
  (dataset, model), method, start, quick = random_start.parse(arg, _CHOICES)
  base = lth_cifar10 if method == "lth" else random_start_cifar10
  config = base.get_config("quick" if quick else "")
  config.dataset.name = dataset
  config.model.name = model
  config.strategy = {"lth": "imp", "snip": "dense", "synflow": "dense",
                     "static": "dense"}.get(method, method)
  epochs = config.train.epochs
  if method == "lth":
    if not quick:
      config.prune.n_phases = lth_levels(
          1.0 if start == "dense" else random_start.START_DENSITY, 1.0 - GOAL_SPARSITY)
  elif method in ("rigl", "granet", "sms_rigl", "sms_granet"):
    config.rigl.update_every = 100
    config.rigl.drop_fraction = 0.3
    config.rigl.end_fraction = 0.75
    config.gradual.start_epoch = 0
    config.gradual.end_epoch = max(1, round(0.75 * epochs))
    config.gradual.update_every = 100
    if method.startswith("sms_"):  # Regrowth at 4 phase starts, soups in between.
      config.prune.n_phases = 4
      if quick:  # 2 phases from epochs 1 and 2 of 3.
        config.prune.n_phases, config.train.epochs, config.gradual.end_epoch = 2, 3, 2
  elif method == "edge_popup":
    config.edge_popup.init = "signed_constant"
    config.init_mask.density = 0.5
  random_start.set_start(config, method, start, GOAL_SPARSITY)
  return config
