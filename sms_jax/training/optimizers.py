"""Optimizers by name (`train.optimizer`), and the learning-rate transform they end with.

An optimizer is its direction followed by the learning rate:
  sgd    `g + weight_decay * w` (coupled, L2), then heavy-ball or Nesterov momentum:
         PyTorch's `torch.optim.SGD`;
  adamw  Adam's moments (b1 = `train.momentum`, b2 = 0.999, eps = 1e-8), then decoupled
         weight decay `+ weight_decay * w`: `optax.adamw`.
then `scale_by_learning_rate`: `-schedule(count, **args)` with the schedule's array
arguments (a candidate's peak and budget) in its state. Weight decay is an array in the
state too (`optax.inject_hyperparams`), so the update of one optimizer serves every stacked
candidate, whatever their weight decays, peaks and budgets; only `init` differs.
Sparsity updaters wrap the whole optimizer (`sms_jax.sparsity.updater`).
"""

from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import optax


def sgd(weight_decay: float, momentum: float, nesterov: bool) -> optax.GradientTransformation:
  """SGD's direction: coupled weight decay, then momentum (Nesterov if asked)."""
  return optax.chain(optax.inject_hyperparams(optax.add_decayed_weights)(weight_decay=weight_decay),
                     optax.trace(decay=momentum, nesterov=nesterov))


def adamw(weight_decay: float, momentum: float, nesterov: bool) -> optax.GradientTransformation:
  """AdamW's direction: Adam's moments (b1 = `momentum`), then decoupled weight decay."""
  del nesterov
  return optax.chain(optax.scale_by_adam(b1=momentum, b2=0.999, eps=1e-8),
                     optax.inject_hyperparams(optax.add_decayed_weights)(weight_decay=weight_decay))


OPTIMIZERS: dict[str, Callable[[float, float, bool], optax.GradientTransformation]] = {
    "sgd": sgd, "adamw": adamw}


class LearningRateState(NamedTuple):
  """`count`: iterations (from `first_step`); `args`: the schedule's array arguments;
  `learning_rate`: the rate of the last update (for logging)."""
  count: jax.Array
  args: dict[str, jax.Array]
  learning_rate: jax.Array


def scale_by_learning_rate(schedule: Callable[..., jax.Array], first_step: int = 0,
                           **args: float) -> optax.GradientTransformation:
  """Scales updates by `-schedule(count, **args)`; `args` become float32 state arrays."""

  def init_fn(params):
    del params
    return LearningRateState(jnp.asarray(first_step, jnp.int32),
                             {k: jnp.asarray(v, jnp.float32) for k, v in args.items()},
                             jnp.zeros((), jnp.float32))

  def update_fn(updates, state, params=None):
    del params
    lr = jnp.asarray(schedule(state.count, **state.args), jnp.float32)
    updates = jax.tree.map(lambda u: -lr.astype(u.dtype) * u, updates)
    return updates, state._replace(count=state.count + 1, learning_rate=lr)

  return optax.GradientTransformation(init_fn, update_fn)


def make_optimizer(train_config, schedule: Callable[..., jax.Array], *,
                   weight_decay: float | None = None, first_step: int = 0,
                   **schedule_args: float) -> optax.GradientTransformation:
  """`train_config.optimizer` with the learning rate `schedule(count, **schedule_args)`.

  Args:
    train_config: the config's `train` block (optimizer, weight_decay, momentum, nesterov).
    schedule: the learning rate of iteration `count` (traceable).
    weight_decay: overrides `train_config.weight_decay` (a candidate's own).
    first_step: the count of the first update.
    **schedule_args: the schedule's array arguments, kept in the state.
  """
  if train_config.optimizer not in OPTIMIZERS:
    raise ValueError(f"unknown train.optimizer {train_config.optimizer!r}; allowed: "
                     f"{', '.join(OPTIMIZERS)}")
  wd = train_config.weight_decay if weight_decay is None else weight_decay
  direction = OPTIMIZERS[train_config.optimizer](wd, train_config.momentum, train_config.nesterov)
  return optax.chain(direction, scale_by_learning_rate(schedule, first_step, **schedule_args))


def learning_rate_of(opt_state: Any) -> jax.Array:
  """The learning rate of the last update (`[m]` for stacked states)."""
  return optax.tree_utils.tree_get(opt_state, "learning_rate")
