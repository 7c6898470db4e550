"""The epoch engine: one train step, one way to stack candidates, one epoch runner.

* `train_step` is the only training step: dense training, IMP, SMS, gradual pruning and
  dynamic sparse training all take it (the sparsity lives in the optimizer, see
  `sms_jax.sparsity.updater`). It takes a PRNG key for the model's stochastic layers.
* `over_candidates` runs a step on m stacked states `[m, ...]` (`parallel.candidate_execution`):
    vmap  one vectorised step (convolutions become grouped convolutions);
    map   `lax.map` over the candidates inside one program;
    loop  the m single steps one after another inside one program (XLA:CPU runs them
          concurrently: on 2 cores 1.7x the throughput of m separately dispatched steps for
          the default CNN, 1.1x for ResNet-20);
    auto  'loop' on CPU; on accelerators whichever of 'vmap' and 'loop' trains these
          candidates faster, measured on the first batch (`choose_execution`).
  A candidate whose `active` flag is False keeps its state (it finished its epochs).
* `EpochRunner` runs an epoch of one state or of stacked candidates. In memory, the batch
  order and augmentation are functions of a key (`epoch_plan`), and the epoch is one
  compiled `lax.scan` or one compiled step dispatched per batch (`train.epoch_loop`); on a
  `parallel.candidate_mesh` the step runs under `shard_map`, manual over the candidates,
  automatic (data parallel) over the data axis. Streamed data (TFDS) feeds host batches to
  the same step, one candidate after another.
All forms give the same results up to floating-point reassociation.
"""

import functools
import itertools
import time
from typing import Any, Callable, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from sms_jax import metrics, parallel
from sms_jax.data import Dataset, device
from sms_jax.training.state import TrainState

EPOCH_LOOPS = ("auto", "scan", "steps")
EXECUTIONS = ("auto", "vmap", "map", "loop")
StepMetrics = dict[str, jax.Array]  # {'loss', 'accuracy'}: [steps] or [steps, m]


def train_step(state: TrainState, inputs: jax.Array, labels: jax.Array, key: jax.Array, *,
               model: nn.Module, tx: optax.GradientTransformation,
               label_smoothing: float = 0.0) -> tuple[TrainState, dict[str, jax.Array]]:
  """One optimizer step on `inputs: [b, ...]`, `labels: [b]`; `key` seeds dropout.

  Returns the new state and the batch's `loss` and `accuracy` (scalars).
  """

  def loss_fn(params):
    logits, updates = model.apply({"params": params, "batch_stats": state.batch_stats},
                                  inputs, train=True, mutable=["batch_stats"],
                                  rngs={"dropout": key})
    loss = metrics.cross_entropy(logits, labels, label_smoothing)
    return loss, (logits, updates.get("batch_stats", state.batch_stats))

  (loss, (logits, batch_stats)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
  updates, opt_state = tx.update(grads, state.opt_state, state.params)
  new_state = state.replace(step=state.step + 1, params=optax.apply_updates(state.params, updates),
                            batch_stats=batch_stats, opt_state=opt_state)
  return new_state, {"loss": loss, "accuracy": metrics.accuracy(logits, labels)}


class EpochPlan(NamedTuple):
  """An in-memory epoch, from its key alone: `batches: [steps, b]` example indices, the
  augmentation key and the dropout key (step i folds i into each)."""
  batches: jax.Array
  augment_key: jax.Array
  dropout_key: jax.Array


def epoch_plan(key: jax.Array, num_examples: int, batch_size: int) -> EpochPlan:
  """The plan of the epoch with data key `key` (a random order cut into full batches)."""
  order_key, augment_key = jax.random.split(key)
  return EpochPlan(device.epoch_batches(order_key, num_examples, batch_size), augment_key,
                   jax.random.fold_in(key, 2))


def in_memory_step(state: TrainState, plan: EpochPlan, index: jax.Array, inputs: jax.Array,
                   labels: jax.Array, *, augment: str, batch_spec: PartitionSpec | None = None,
                   **step_kwargs) -> tuple[TrainState, dict[str, jax.Array]]:
  """Step `index` of `plan` on in-memory `inputs: [n, ...]`, `labels: [n]`.

  Gathers the batch, augments it with `fold_in(plan.augment_key, index)` and takes one
  `train_step` (`step_kwargs`: model, tx, label_smoothing). `batch_spec` (inside a mesh)
  shards the batch, e.g. over the mesh's data axis.
  """
  idx = plan.batches[index]
  batch = device.augment(jax.random.fold_in(plan.augment_key, index), inputs[idx], augment)
  batch_labels = labels[idx]
  if batch_spec is not None:
    batch, batch_labels = jax.lax.with_sharding_constraint((batch, batch_labels), batch_spec)
  return train_step(state, batch, batch_labels, jax.random.fold_in(plan.dropout_key, index),
                    **step_kwargs)


def resolve_epoch_loop(epoch_loop: str) -> str:
  """'auto' is 'steps' on CPU and 'scan' on accelerators (no per-step dispatch).

  XLA:CPU runs the backward convolutions of a loop body through its generic emitter: a
  `lax.scan` epoch was 7-31x slower than dispatched steps (bench/RESULTS.md).
  """
  if epoch_loop not in EPOCH_LOOPS:
    raise ValueError(f"unknown epoch loop {epoch_loop!r}; allowed: {', '.join(EPOCH_LOOPS)}")
  if epoch_loop != "auto":
    return epoch_loop
  return "steps" if jax.default_backend() == "cpu" else "scan"


def resolve_execution(execution: str) -> str:
  """'auto' is 'loop' on CPU and 'vmap' on accelerators (without measuring: see
  `choose_execution`); other values pass through."""
  if execution not in EXECUTIONS:
    raise ValueError(f"unknown candidate execution {execution!r}; allowed: "
                     f"{', '.join(EXECUTIONS)}")
  if execution != "auto":
    return execution
  return "loop" if jax.default_backend() == "cpu" else "vmap"


def over_candidates(step: Callable[..., tuple[Any, Any]], execution: str,
                    num_shared: int) -> Callable[..., tuple[Any, Any]]:
  """`step(state, *per_candidate, *shared)` for stacked candidates, as `execution`.

  Returns `stacked(states, active, *per_candidate, *shared)`: `states` and every
  per-candidate argument have a leading axis `[m, ...]`, `active: [m]` bool; the last
  `num_shared` arguments are the same for all. Inactive candidates keep their state (their
  outputs are computed and returned all the same).
  """

  def guarded(state, active, *args):
    new, out = step(state, *args)
    return jax.tree.map(lambda a, b: jnp.where(active, a, b), new, state), out

  def stacked(states, active, *args):
    per, shared = args[:len(args) - num_shared], args[len(args) - num_shared:]
    if execution == "vmap":
      return jax.vmap(guarded, in_axes=(0, 0, *[0] * len(per), *[None] * num_shared))(
          states, active, *per, *shared)
    if execution == "map":
      return jax.lax.map(lambda c: guarded(*c, *shared), (states, active, *per))
    if execution == "loop":
      outputs = [guarded(*jax.tree.map(lambda t, k=k: t[k], (states, active, *per)), *shared)
                 for k in range(active.shape[0])]
      return jax.tree.map(lambda *leaves: jnp.stack(leaves), *outputs)
    raise ValueError(f"unknown stacked execution {execution!r}; allowed: vmap, map, loop")

  return stacked


def measure_execution(state: TrainState, inputs: jax.Array, labels: jax.Array, *,
                      repeats: int = 3, **step_kwargs) -> dict[str, float]:
  """Seconds per training step of the candidates `state: [m, ...]` on one batch `inputs:
  [b, ...]`, `labels: [b]`, stacked as 'vmap' and as 'loop' (`over_candidates`).

  Median of `repeats` timed calls after a compiling one; `state` is not consumed.
  `step_kwargs`: model, tx, label_smoothing for `train_step`.
  """
  step = lambda s, key, x, y: train_step(s, x, y, key, **step_kwargs)
  m = num_candidates(state)
  active, keys = jnp.ones((m,), bool), jax.random.split(jax.random.key(0), m)
  times = {}
  for name in ("vmap", "loop"):
    run = jax.jit(over_candidates(step, name, num_shared=2))
    call = lambda: run(state, active, keys, inputs, labels)  # pylint: disable=cell-var-from-loop
    jax.block_until_ready(call())
    samples = []
    for _ in range(repeats):
      tic = time.perf_counter()
      jax.block_until_ready(call())
      samples.append(time.perf_counter() - tic)
    times[name] = float(np.median(samples))
  return times


def choose_execution(execution: str, state: TrainState, dataset: Dataset, *,
                     mesh: Mesh | None, batch_size: int, log: Callable[[str], None],
                     **step_kwargs) -> str:
  """`execution` resolved for the candidates `state: [m, ...]`.

  On a mesh, 'auto' is 'loop' when the mesh has a data axis or one candidate per slice
  (vmapped convolutions would make XLA all-gather activations, bench/mesh_collectives.py),
  else as on one device (unmeasured). On one accelerator, 'auto' with m > 1 in-memory
  candidates measures 'vmap' against 'loop' on the first training batch
  (`measure_execution`) and takes the faster, so that stacking is used only where it wins;
  elsewhere it is `resolve_execution`'s choice.
  """
  m = num_candidates(state)
  if mesh is not None and execution == "auto" and (
      mesh.shape[parallel.DATA] > 1 or m == mesh.shape[parallel.CANDIDATES]):
    return "loop"
  if (execution != "auto" or mesh is not None or jax.default_backend() == "cpu" or m == 1
      or dataset.streaming):
    return resolve_execution(execution)
  times = measure_execution(state, jnp.asarray(dataset.train.x[:batch_size]),
                            jnp.asarray(dataset.train.y[:batch_size]), **step_kwargs)
  choice = min(times, key=times.get)
  log(f"candidate execution auto: one step of {m} candidates takes "
      f"{times['vmap'] * 1e3:.1f} ms as vmap, {times['loop'] * 1e3:.1f} ms as a loop: {choice}")
  return choice


@jax.jit
def stack(trees: list[Any]) -> Any:
  """One tree with leaves `[m, ...]` from m trees of the same structure."""
  return jax.tree.map(lambda *leaves: jnp.stack(leaves), *trees)


def unstack(tree: Any) -> list[Any]:
  """The m trees of a stacked tree `[m, ...]`, on this process's device (from a mesh too)."""
  return _unstack(parallel.to_local(tree))


@jax.jit
def _unstack(tree: Any) -> list[Any]:
  return [jax.tree.map(lambda x, k=k: x[k], tree) for k in range(num_candidates(tree))]


def num_candidates(tree: Any) -> int:
  """m, the leading axis of a stacked tree."""
  return jax.tree.leaves(tree)[0].shape[0]


def _stack_metrics(step_metrics: list[StepMetrics]) -> StepMetrics:
  return jax.tree.map(lambda *xs: jnp.stack(xs), *step_metrics)


class EpochRunner:
  """Compiled epochs of one state or of m stacked candidates: `runner(state, keys, active)`.

  For one state `keys` is the epoch's data key and `active` None; for candidates `keys: [m]`
  and `active: [m]` bool. Returns the new state (on the mesh, if any) and the step metrics
  `{'loss', 'accuracy'}` of shape `[steps]` or `[steps, m]`, on this process.
  """

  def __init__(self, state: TrainState, dataset: Dataset, *, model: nn.Module,
               tx: optax.GradientTransformation, batch_size: int, label_smoothing: float = 0.0,
               epoch_loop: str = "auto", execution: str | None = None,
               mesh: Mesh | None = None, log: Callable[[str], None] = lambda _: None,
               log_every: int = 0):
    """Compiles the epoch.

    Args:
      state: the state to train (`[m, ...]` leaves with an `execution`), for shapes only.
      dataset: the data; in memory, or streamed (`log_every` steps between progress lines,
        0: ten a streamed epoch).
      model, tx, label_smoothing: for `train_step`.
      batch_size: examples per step.
      epoch_loop: one of EPOCH_LOOPS, for in-memory data.
      execution: None for one state; 'vmap', 'map' or 'loop' for stacked candidates.
      mesh: a `parallel.candidate_mesh`, or None for one device. Stacked candidates are
        sharded over its `candidates` axis, one state is replicated, and every batch is
        sharded over its `data` axis. Streamed candidates train one after another, each
        data parallel over the mesh's devices.
      log: progress lines.
    """
    self._step_kwargs = dict(model=model, tx=tx, label_smoothing=label_smoothing)
    self._dataset, self._batch_size, self._mesh, self._log = dataset, batch_size, mesh, log
    self._execution = execution
    self.steps_per_epoch = dataset.steps_per_epoch(batch_size)
    if dataset.streaming:
      self._log_every = log_every or max(1, self.steps_per_epoch // 10)
      self._compile_streamed()
    else:
      self._compile_in_memory(state, resolve_epoch_loop(epoch_loop))

  def __call__(self, state: TrainState, keys: jax.Array,
               active: jax.Array | None = None) -> tuple[TrainState, StepMetrics]:
    if not self._dataset.streaming:
      return self._run(state, keys, active)
    if self._execution is None:
      return self._run_stream(state, keys)
    states, outs = unstack(state), []
    for k in range(len(states)):  # Each candidate reads its own order from the stream.
      if bool(active[k]):
        states[k], step_metrics = self._run_stream(states[k], keys[k])
        outs.append(step_metrics)
      else:
        outs.append(None)
    shape = next(np.shape(o["loss"]) for o in outs if o is not None)
    idle = {"loss": np.full(shape, np.nan), "accuracy": np.full(shape, np.nan)}
    merged = {name: np.stack([np.asarray((o or idle)[name]) for o in outs], axis=1)
              for name in ("loss", "accuracy")}
    return stack(states), merged

  def _compile_in_memory(self, state: TrainState, epoch_loop: str) -> None:
    dataset, mesh, stacked = self._dataset, self._mesh, self._execution is not None
    step = functools.partial(
        in_memory_step, augment=dataset.augment,
        batch_spec=None if mesh is None else PartitionSpec(parallel.DATA), **self._step_kwargs)
    plan = functools.partial(epoch_plan, num_examples=dataset.train.num_examples,
                             batch_size=self._batch_size)
    if stacked:
      step, plan = over_candidates(step, self._execution, num_shared=3), jax.vmap(plan)
    else:
      step = (lambda s, active, *args, one=step: one(s, *args))
    per, whole = PartitionSpec(parallel.CANDIDATES) if stacked else PartitionSpec(), \
        PartitionSpec()
    place, to_host, state_like = (lambda tree, spec: tree), (lambda tree: tree), state
    if mesh is not None:
      step = jax.shard_map(step, mesh=mesh, in_specs=(per, per, per, whole, whole, whole),
                           out_specs=per, axis_names={parallel.CANDIDATES})
      place = lambda tree, spec: parallel.put(tree, NamedSharding(mesh, spec))
      to_host = parallel.to_local
      state_like = jax.tree.map(lambda x: jax.ShapeDtypeStruct(
          x.shape, x.dtype, sharding=NamedSharding(mesh, per)), state)
    train_x, train_y = place((jnp.asarray(dataset.train.x), jnp.asarray(dataset.train.y)), whole)
    num_steps = self.steps_per_epoch

    tic = time.perf_counter()
    keys = jax.random.split(jax.random.key(0), num_candidates(state)) if stacked \
        else jax.random.key(0)
    active = jnp.ones(keys.shape, bool)
    if epoch_loop == "scan":
      def epoch(s, keys, active, x, y):
        p = plan(keys)
        return jax.lax.scan(lambda s, i: step(s, active, p, i, x, y), s, jnp.arange(num_steps))
      compiled = jax.jit(epoch, donate_argnums=0).lower(
          state_like, *place((keys, active), per), train_x, train_y).compile()

      def run(s, keys, active):
        s, keys, active = place((s, keys, active if stacked else jnp.ones((), bool)), per)
        s, step_metrics = compiled(s, keys, active, train_x, train_y)
        return s, to_host(step_metrics)
    else:
      plan = jax.jit(plan)
      compiled = jax.jit(step, donate_argnums=0).lower(
          state_like, *place((active, plan(keys)), per), 0, train_x, train_y).compile()

      def run(s, keys, active):
        active = active if stacked else jnp.ones((), bool)
        s, active, p = place((s, active, plan(keys)), per)
        step_metrics = []
        for i in range(num_steps):
          s, m = compiled(s, active, p, i, train_x, train_y)
          step_metrics.append(m)
        return s, to_host(_stack_metrics(step_metrics))
    self._run = run
    on_mesh = "" if mesh is None else f" on a {'x'.join(map(str, mesh.shape.values()))} mesh"
    self._log(f"compiled the training {'epoch' if epoch_loop == 'scan' else 'step'}"
              f"{f' of {keys.shape[0]} stacked candidates ({self._execution})' if stacked else ''}"
              f"{on_mesh} in {time.perf_counter() - tic:.1f} s")

  def _compile_streamed(self) -> None:
    """One jitted `train_step` for host batches; with a mesh, data parallel over all its
    devices: each process reads its own `1 / process_count` shard of the split,
    `batch_size / process_count` examples per step, which together form the global batch."""
    mesh = None if self._mesh is None else parallel.candidate_mesh(1, self._batch_size)
    self._step = jax.jit(functools.partial(train_step, **self._step_kwargs), donate_argnums=0)
    self._shard, self._local_batch = (0, 1), self._batch_size
    self._place, self._to_global, self._to_host = (lambda t: t), (lambda b: b), (lambda t: t)
    if mesh is not None:
      self._shard = (jax.process_index(), jax.process_count())
      self._local_batch = self._batch_size // jax.process_count()
      self._place = lambda tree: parallel.put(tree, parallel.replicated(mesh))
      batch_sharding = NamedSharding(mesh, PartitionSpec(tuple(mesh.axis_names)))
      self._to_global = lambda batch: jax.tree.map(
          lambda x: jax.make_array_from_process_local_data(batch_sharding, x), batch)
      self._to_host = parallel.to_local

  def _run_stream(self, state: TrainState, key: jax.Array) -> tuple[TrainState, StepMetrics]:
    """One streamed epoch of one state; the order is a function of `key` (its seed)."""
    seed = int(jax.random.randint(key, (), 0, np.iinfo(np.int32).max))
    state, step_metrics, tic = self._place(state), [], time.perf_counter()
    steps_per_epoch, log_every = self.steps_per_epoch, self._log_every
    stream = self._dataset.train.batches(self._local_batch, train=True, seed=seed,
                                         shard=self._shard)
    for i, batch in enumerate(itertools.islice(stream, steps_per_epoch), start=1):
      state, m = self._step(state, *self._to_global(batch), jax.random.fold_in(key, i))
      step_metrics.append(m)
      if i % log_every == 0 and i < steps_per_epoch:
        loss = float(np.mean([x["loss"] for x in self._to_host(step_metrics[-log_every:])]))
        self._log(f"  step {i}/{steps_per_epoch}  loss {loss:.4f}  "
                  f"{i * self._batch_size / (time.perf_counter() - tic):,.0f} img/s")
    return state, self._to_host(_stack_metrics(step_metrics))
