"""Sparse Evolutionary Training (SET, Mocanu et al. 2018) as a sparsity updater.

Every `update_every` steps until `end_step`, each prunable layer drops the fraction
`drop_fraction` of its alive weights with the smallest magnitudes and regrows as many at
random positions that were not alive before the update; grown weights start at 0 (and their
momentum at 0). Every layer keeps its number of alive weights, so the sparsity of the start
mask holds throughout. `decay='cosine'` lowers the fraction along
`drop_fraction * (1 + cos(pi * t / end_step)) / 2`, as RigL does.
"""

import dataclasses
from typing import Any, ClassVar

import jax
import jax.numpy as jnp

from sms_jax.sparsity import masks as masks_lib
from sms_jax.sparsity.pruning import alive_scores, keep_top_k
from sms_jax.sparsity.updater import Updater

DECAYS = ("constant", "cosine")


@dataclasses.dataclass(frozen=True)
class SET(Updater):
  """Drop the smallest alive weights per layer, regrow as many at random, every k steps."""
  name: ClassVar[str] = "set"
  changes_masks: ClassVar[bool] = True
  regrows: ClassVar[bool] = True
  update_every: int
  end_step: int
  drop_fraction: float
  decay: str = "constant"
  seed: int = 0

  def __post_init__(self):
    name = type(self).__name__
    if self.update_every < 1:
      raise ValueError(f"{name} update_every = {self.update_every} is not allowed; allowed: "
                       "an integer >= 1 (steps between mask updates)")
    if not 0.0 <= self.drop_fraction <= 1.0:
      raise ValueError(f"{name} drop_fraction = {self.drop_fraction} is not allowed; "
                       "allowed: a number in [0, 1]")
    if self.decay not in DECAYS:
      raise ValueError(f"{name} decay = {self.decay!r} is not allowed; allowed: "
                       f"{', '.join(DECAYS)}")

  @classmethod
  def from_config(cls, config, steps_per_epoch: int, masks: Any) -> "SET":
    """`regrow.*` (`end_epoch` 0: `train.epochs`) and the run's seed."""
    del masks
    end_epoch = config.regrow.end_epoch or config.train.epochs
    return cls(update_every=config.regrow.update_every, end_step=end_epoch * steps_per_epoch,
               drop_fraction=config.regrow.drop_fraction, decay=config.regrow.decay,
               seed=config.seed)

  def fraction(self, steps: jax.Array) -> jax.Array:
    """The fraction of alive weights dropped at the update that ends step `steps`."""
    if self.decay == "constant":
      return jnp.asarray(self.drop_fraction, jnp.float32)
    progress = jnp.minimum(steps / max(self.end_step, 1), 1.0)
    return self.drop_fraction * 0.5 * (1.0 + jnp.cos(jnp.pi * progress))

  def is_update_step(self, steps: jax.Array) -> jax.Array:
    return (steps % self.update_every == 0) & (steps < self.end_step)

  def new_masks(self, masks: Any, params: Any, grads: Any, steps: jax.Array) -> Any:
    del grads
    key = jax.random.fold_in(jax.random.key(self.seed), steps)
    new = []
    for i, (_, param, mask) in enumerate(masks_lib.leaf_pairs(params, masks)):
      if mask is None:
        new.append(None)
        continue
      alive = jnp.sum(mask)
      drop = jnp.minimum(jnp.round(self.fraction(steps) * alive).astype(jnp.int32),
                         mask.size - alive)  # Never more than can be regrown.
      kept = keep_top_k(alive_scores(jnp.abs(param), mask).ravel(), alive - drop)
      grow_scores = jax.random.uniform(jax.random.fold_in(key, i), (mask.size,))
      grown = keep_top_k(jnp.where(mask.ravel(), -1.0, grow_scores), drop)
      new.append((kept | grown).reshape(mask.shape))
    return jax.tree.unflatten(jax.tree.structure(masks, is_leaf=lambda x: x is None), new)

  def describe(self) -> dict[str, Any]:
    return {"name": self.name, "update_every": self.update_every, "end_step": self.end_step,
            "drop_fraction": self.drop_fraction, "decay": self.decay}


def sparse_start_error(config) -> str | None:
  """Why `config` cannot run a strategy that keeps its start mask's density (a dense start),
  or None: SET's and RigL's check."""
  if config.init_mask.distribution == "none":
    return (f"config key init_mask.distribution = 'none' is not allowed with strategy "
            f"{config.strategy!r}; allowed: a sparse start whose density it keeps (e.g. "
            "--config.init_mask.distribution=erk --config.init_mask.density=0.1)")
  return None


def check_config(config, start_sparsity: float | None = None) -> str | None:
  """Why `config` cannot run SET (it needs a sparse start to keep, of any sparsity), or None."""
  del start_sparsity
  if error := sparse_start_error(config):
    return error
  if config.regrow.end_epoch > config.train.epochs:
    return (f"config key regrow.end_epoch = {config.regrow.end_epoch} is not allowed; allowed: "
            f"0 (train.epochs) to train.epochs = {config.train.epochs}")
  return None
