"""The train state: a pytree of arrays only (parameters, BatchNorm statistics, optimizer)."""

from typing import Any

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import optax


@flax.struct.dataclass
class TrainState:
  """Everything that changes during training; the model and optimizer stay outside.

  Attributes:
    step: scalar int32, optimizer steps taken.
    params: the model's 'params' collection.
    batch_stats: the model's 'batch_stats' collection ({} for models without BatchNorm).
    opt_state: the optax state of `tx`.
  """
  step: jax.Array
  params: Any
  batch_stats: Any
  opt_state: optax.OptState


def create_train_state(model: nn.Module, tx: optax.GradientTransformation, key: jax.Array,
                       input_shape: tuple[int, ...]) -> TrainState:
  """Initialises `model` on a zero batch `[1, *input_shape]` and `tx` on its parameters.

  Runs as one jitted program: eager initialisation would compile every operation separately.
  """

  @jax.jit
  def init(key):
    variables = model.init(key, jnp.zeros((1, *input_shape), jnp.float32), train=False)
    params = variables["params"]
    return TrainState(step=jnp.zeros((), jnp.int32), params=params,
                      batch_stats=variables.get("batch_stats", {}), opt_state=tx.init(params))

  return init(key)


def count_params(params: Any) -> int:
  """Total number of parameter entries."""
  return sum(int(x.size) for x in jax.tree.leaves(params))
