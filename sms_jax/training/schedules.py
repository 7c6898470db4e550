"""Learning-rate schedules (per iteration) built on optax, with optional linear warmup."""

import optax

SCHEDULES = ("constant", "linear", "cosine", "step", "multistep")


def _decays(peak: float, boundaries, factor: float, warmup: int) -> optax.Schedule:
  """`peak` times `factor` at each of `boundaries` (iterations counted from the start of the
  run, warmup included); decays that fall on the same iteration multiply."""
  scales = {}
  for boundary in boundaries:
    scales[boundary - warmup] = scales.get(boundary - warmup, 1.0) * factor
  return optax.piecewise_constant_schedule(peak, scales)


def make_schedule(train_config, steps_per_epoch: int) -> optax.Schedule:
  """The schedule named by `train_config.schedule`, stepping once per iteration.

  Warmup rises linearly from 0 to `learning_rate` over `warmup_epochs`; the named schedule
  then runs over the remaining iterations: constant, linear decay to 0, cosine decay to 0,
  step (times `decay_factor` every `step_epochs`) or multistep (times `decay_factor` at each
  of `milestones`, fractions of the whole run); step and multistep count from the start of
  the run, warmup included.
  """
  peak = train_config.learning_rate
  total = max(1, int(round(train_config.epochs * steps_per_epoch)))
  warmup = min(total - 1, int(round(train_config.warmup_epochs * steps_per_epoch)))
  decay_steps = total - warmup
  name = train_config.schedule
  if name == "constant":
    main = optax.constant_schedule(peak)
  elif name == "linear":
    main = optax.linear_schedule(peak, 0.0, decay_steps)
  elif name == "cosine":
    main = optax.cosine_decay_schedule(peak, decay_steps)
  elif name == "step":
    every = int(round(train_config.step_epochs * steps_per_epoch))
    main = _decays(peak, range(every, total, every), train_config.decay_factor, warmup)
  elif name == "multistep":
    boundaries = [int(round(m * total)) for m in train_config.milestones]
    main = _decays(peak, boundaries, train_config.decay_factor, warmup)
  else:
    raise ValueError(f"unknown train.schedule {name!r}; allowed: {', '.join(SCHEDULES)}")
  if warmup == 0:
    return main
  return optax.join_schedules([optax.linear_schedule(0.0, peak, warmup), main], [warmup])
