"""SGD with momentum and coupled (L2) weight decay, as PyTorch's `torch.optim.SGD`."""

import optax

from sms_jax.training import schedules


def sgd(learning_rate, weight_decay: float, momentum: float,
        nesterov: bool) -> optax.GradientTransformation:
  """`g + weight_decay * w`, then heavy-ball (or Nesterov) momentum, then `-learning_rate`."""
  return optax.chain(optax.add_decayed_weights(weight_decay),
                     optax.sgd(learning_rate, momentum=momentum, nesterov=nesterov))


def make_optimizer(train_config, steps_per_epoch: int) -> optax.GradientTransformation:
  """SGD from `train_config`; its hyperparameters are arrays in the optimizer state.

  `optax.inject_hyperparams` keeps learning rate, weight decay and momentum in
  `opt_state.hyperparams`, so they can be read for logging and differ between stacked
  runs without recompiling.
  """
  return optax.inject_hyperparams(sgd, static_args=("nesterov",))(
      learning_rate=schedules.make_schedule(train_config, steps_per_epoch),
      weight_decay=train_config.weight_decay,
      momentum=train_config.momentum,
      nesterov=train_config.nesterov)
