"""The epoch loop: train, evaluate, log, checkpoint, stop on a non-finite loss, resume."""

import functools
import itertools
import time
from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from jax.sharding import Mesh, NamedSharding, PartitionSpec

from sms_jax import checkpoints, metrics, parallel, report, sparsity
from sms_jax.data import Dataset, Split, Stream
from sms_jax.training import retrain, steps
from sms_jax.training.state import TrainState

# (state, epoch) -> (state, {'loss': [steps], 'accuracy': [steps]})
EpochFn = Callable[[TrainState, int], tuple[TrainState, dict[str, jax.Array]]]


class NonFiniteLossError(RuntimeError):
  """The training loss became NaN or infinite; the last good checkpoint is kept."""


EPOCH_LOOPS = ("auto", "scan", "steps")


def resolve_epoch_loop(epoch_loop: str) -> str:
  """'auto' is 'steps' on CPU and 'scan' on accelerators (no per-step dispatch).

  XLA:CPU runs the backward convolutions of a loop body through its generic emitter: a
  `lax.scan` epoch was 7-31x slower than dispatched steps (bench/RESULTS.md).
  """
  if epoch_loop != "auto":
    return epoch_loop
  return "steps" if jax.default_backend() == "cpu" else "scan"


# (state, keys, active) -> (state, {'loss': [steps(, m)], 'accuracy': [steps(, m)]})
KeyedEpochFn = Callable[[TrainState, jax.Array, Any], tuple[TrainState, dict[str, jax.Array]]]


def epoch_runner(state: TrainState, dataset: Dataset, *, batch_size: int, epoch_loop: str,
                 log: Callable[[str], None], stacked: str | None = None,
                 mesh: Mesh | None = None, **step_kwargs) -> KeyedEpochFn:
  """Compiles one in-memory epoch of `state` (or of stacked candidates) as a function of keys.

  Args:
    state: the state to train (`[m, ...]` leaves when `stacked`), used for shapes only.
    dataset: in-memory data; the epoch's batches and augmentation are functions of a key.
    batch_size: examples per step.
    epoch_loop: 'scan' runs the epoch as one compiled `lax.scan`; 'steps' dispatches one
      compiled step per batch (same batches, same results); 'auto' picks per backend.
    log: progress lines.
    stacked: None for one state; 'vmap', 'map' or 'loop' for m stacked candidates, whose
      steps run as `jax.vmap`, as `lax.map`, or one after another in one program.
    mesh: a `parallel.candidate_mesh`, or None for one device. Stacked candidates are
      sharded over its `candidates` axis (each slice runs `stacked` over its own), one
      state is replicated, and every batch is sharded over its `data` axis.
    **step_kwargs: model, tx, label_smoothing for `steps.train_step`.
  Returns:
    `run(state, keys, active)`: one epoch. For one state `keys` is the epoch's key and
    `active` is None; for candidates `keys: [m]` and `active: [m]` bool (inactive
    candidates keep their state; their metrics are computed but not applied). With a mesh,
    the state it returns stays on the mesh and the metrics come back to this process.
  """
  num_steps = dataset.steps_per_epoch(batch_size)
  one_step = functools.partial(steps.train_epoch_step, augment=dataset.augment,
                               batch_spec=None if mesh is None else PartitionSpec(parallel.DATA),
                               **step_kwargs)
  plan = functools.partial(steps.epoch_plan, num_examples=dataset.train.num_examples,
                           batch_size=batch_size)
  if stacked is None:
    step = lambda s, active, aug, i, batches, x, y: one_step(s, aug, i, batches, x, y)
  else:
    def guarded(s, active, aug, i, batches, x, y):
      new, step_metrics = one_step(s, aug, i, batches, x, y)
      return jax.tree.map(lambda a, b: jnp.where(active, a, b), new, s), step_metrics
    if stacked == "vmap":
      step = jax.vmap(guarded, in_axes=(0, 0, 0, None, 0, None, None))
    elif stacked == "map":
      step = lambda s, active, aug, i, batches, x, y: jax.lax.map(
          lambda c: guarded(c[0], c[1], c[2], i, c[3], x, y), (s, active, aug, batches))
    elif stacked == "loop":
      def step(s, active, aug, i, batches, x, y):
        outputs = [guarded(*jax.tree.map(lambda t, k=k: t[k], (s, active, aug)), i, batches[k],
                           x, y) for k in range(active.shape[0])]
        return jax.tree.map(lambda *leaves: jnp.stack(leaves), *outputs)
    else:
      raise ValueError(f"unknown stacked execution {stacked!r}; allowed: vmap, map, loop")
    plan = jax.vmap(plan)
  per_state, whole = PartitionSpec(parallel.CANDIDATES) if stacked else PartitionSpec(), \
      PartitionSpec()
  state_like, place, to_host = state, lambda tree, spec: tree, lambda tree: tree
  if mesh is not None:
    step = jax.shard_map(step, mesh=mesh, in_specs=(per_state, per_state, per_state, whole,
                                                    per_state, whole, whole),
                         out_specs=per_state, axis_names={parallel.CANDIDATES})
    place = lambda tree, spec: parallel.put(tree, NamedSharding(mesh, spec))
    to_host = parallel.to_local
    state_like = jax.tree.map(lambda x: jax.ShapeDtypeStruct(
        x.shape, x.dtype, sharding=NamedSharding(mesh, per_state)), state)
  train_x, train_y = place((jnp.asarray(dataset.train.x), jnp.asarray(dataset.train.y)), whole)

  tic = time.perf_counter()
  keys = jax.random.split(jax.random.key(0), jax.tree.leaves(state)[0].shape[0]) if stacked \
      else jax.random.key(0)
  active = jnp.ones(keys.shape, bool) if stacked else None
  if resolve_epoch_loop(epoch_loop) == "scan":
    def epoch(s, keys, active, x, y):
      batches, aug = plan(keys)
      return jax.lax.scan(lambda s, i: step(s, active, aug, i, batches, x, y), s,
                          jnp.arange(num_steps))
    compiled = jax.jit(epoch, donate_argnums=0).lower(
        state_like, *place((keys, active), per_state), train_x, train_y).compile()

    def run(s, keys, active):
      s, keys, active = place((s, keys, active), per_state)
      s, step_metrics = compiled(s, keys, active, train_x, train_y)
      return s, to_host(step_metrics)
  else:
    plan = jax.jit(plan)
    batches, aug = plan(keys)
    compiled = jax.jit(step, donate_argnums=0).lower(
        state_like, *place((active, aug), per_state), 0, place(batches, per_state), train_x,
        train_y).compile()

    def run(s, keys, active):
      s, active, (batches, aug) = place((s, active, plan(keys)), per_state)
      step_metrics = []
      for i in range(num_steps):
        s, m = compiled(s, active, aug, i, batches, train_x, train_y)
        step_metrics.append(m)
      return s, to_host(_stack(step_metrics))
  on_mesh = "" if mesh is None else f" on a {'x'.join(map(str, mesh.shape.values()))} mesh"
  log(f"compiled the training {'epoch' if resolve_epoch_loop(epoch_loop) == 'scan' else 'step'}"
      f"{f' of {keys.shape[0]} stacked candidates ({stacked})' if stacked else ''}{on_mesh} in "
      f"{time.perf_counter() - tic:.1f} s")
  return run


def in_memory_epochs(state: TrainState, dataset: Dataset, key: jax.Array, *, batch_size: int,
                     epoch_loop: str, log: Callable[[str], None], mesh: Mesh | None = None,
                     **step_kwargs) -> EpochFn:
  """Epochs of one state over in-memory data, epoch `e` drawing its data from `fold_in(key, e)`.

  See `epoch_runner` for the arguments.
  """
  run = epoch_runner(state, dataset, batch_size=batch_size, epoch_loop=epoch_loop, log=log,
                     mesh=mesh, **step_kwargs)
  return lambda state, epoch: run(state, jax.random.fold_in(key, epoch), None)


def _stack(step_metrics: list[dict[str, jax.Array]]) -> dict[str, jax.Array]:
  return jax.tree.map(lambda *xs: jnp.stack(xs), *step_metrics)


def streamed_runner(dataset: Dataset, *, batch_size: int, log: Callable[[str], None],
                    log_every: int = 0, mesh: Mesh | None = None,
                    **step_kwargs) -> Callable[..., Any]:
  """Epochs over a TFDS stream: one jitted step per batch, order a function of (key, epoch).

  Returns `run(state, key, epoch) -> (state, metrics)`; one compiled step serves every key
  (e.g. every candidate). Logs the running loss and images/s every `log_every` steps (0: ten
  times an epoch), since a streamed epoch (ImageNet) is long. With a `mesh`, training is data
  parallel over all its devices: the state is replicated, and each process reads its own
  `1 / process_count` shard of the split, `batch_size / process_count` examples per step,
  which together form the step's global batch.
  """
  step_fn = jax.jit(functools.partial(steps.train_step, **step_kwargs), donate_argnums=0)
  steps_per_epoch = dataset.steps_per_epoch(batch_size)
  log_every = log_every or max(1, steps_per_epoch // 10)
  shard, local_batch = (0, 1), batch_size
  place, to_global, to_host = (lambda tree: tree), (lambda batch: batch), (lambda tree: tree)
  if mesh is not None:
    shard, local_batch = (jax.process_index(), jax.process_count()), \
        batch_size // jax.process_count()
    place = lambda tree: parallel.put(tree, parallel.replicated(mesh))
    batch_sharding = NamedSharding(mesh, PartitionSpec(tuple(mesh.axis_names)))
    to_global = lambda batch: jax.tree.map(
        lambda x: jax.make_array_from_process_local_data(batch_sharding, x), batch)
    to_host = parallel.to_local

  def run(state, key, epoch):
    seed = int(jax.random.randint(key, (), 0, np.iinfo(np.int32).max))
    state, step_metrics, tic = place(state), [], time.perf_counter()
    stream = dataset.train.batches(local_batch, train=True, seed=seed, epoch=epoch, shard=shard)
    for i, batch in enumerate(itertools.islice(stream, steps_per_epoch), start=1):
      state, m = step_fn(state, *to_global(batch))
      step_metrics.append(m)
      if i % log_every == 0 and i < steps_per_epoch:
        loss = float(np.mean([x["loss"] for x in to_host(step_metrics[-log_every:])]))
        log(f"  step {i}/{steps_per_epoch}  loss {loss:.4f}  "
            f"{i * batch_size / (time.perf_counter() - tic):,.0f} img/s")
    return state, to_host(_stack(step_metrics))

  return run


def streamed_epochs(dataset: Dataset, key: jax.Array, **kwargs) -> EpochFn:
  """Epochs of one state over a stream, with data key `key` (see `streamed_runner`)."""
  run = streamed_runner(dataset, **kwargs)
  return lambda state, epoch: run(state, key, epoch)


class Evaluator:
  """Eval-mode logits of a state on the val and test splits of one dataset."""

  def __init__(self, model: nn.Module, dataset: Dataset, batch_size: int):
    self._batch_size = batch_size
    self._predict = jax.jit(functools.partial(steps.predict, model=model, batch_size=batch_size))
    self._splits = {name: (jax.device_put(split.x), split.y) if isinstance(split, Split) else split
                    for name, split in (("val", dataset.val), ("test", dataset.test))
                    if split.num_examples}

  def logits_and_labels(self, state: TrainState, split: str) -> tuple[np.ndarray, np.ndarray]:
    """`([n, num_classes] logits, [n] labels)` of `split` ('val' or 'test')."""
    data, state = self._splits[split], parallel.to_local(state)
    if not isinstance(data, Stream):
      return np.asarray(self._predict(state, data[0])), data[1]
    batches = [(np.asarray(self._predict(state, x)), y)
               for x, y in data.batches(self._batch_size, train=False)]
    return np.concatenate([b[0] for b in batches]), np.concatenate([b[1] for b in batches])

  def predict(self, state: TrainState, inputs: np.ndarray) -> np.ndarray:
    """Eval-mode logits `[n, num_classes]` of in-memory `inputs: [n, ...]`."""
    return np.asarray(self._predict(parallel.to_local(state), inputs))

  def evaluate(self, state: TrainState, split: str) -> dict[str, float]:
    """Loss, accuracy, ECE and MCE on `split`; {} if the split is empty."""
    if split not in self._splits:
      return {}
    return metrics.evaluate_logits(*self.logits_and_labels(state, split))


def _summarise(values: Any) -> float | list[float | None]:
  """A JSON value: a float, or a list per candidate with None for NaN (inactive) entries."""
  values = np.asarray(values, np.float64)
  if values.ndim == 0:
    return float(values)
  return [None if np.isnan(v) else float(v) for v in values]


def epoch_record(epoch: int, step_metrics: dict[str, Any], opt_state: Any) -> dict[str, Any]:
  """One history record from an epoch's per-step metrics `[steps]` or `[steps, m]`.

  A metrics entry 'active' (`[m]` bool) marks candidates that did not train this epoch;
  their values are None. Under gradual pruning the record has the mask's `sparsity`.
  """
  active = step_metrics.get("active")
  record = {"epoch": epoch}
  for name in ("loss", "accuracy"):
    values = np.asarray(step_metrics[name], np.float64).mean(0)
    if active is not None:
      values = np.where(active, values, np.nan)
    record[f"train_{name}"] = _summarise(values)
  record["learning_rate"] = _summarise(parallel.to_local(retrain.current_learning_rate(opt_state)))
  gradual = sparsity.gradual_sparsity(opt_state)
  if gradual is not None:
    record["sparsity"] = gradual
  return record


def _finite_loss(step_metrics: dict[str, Any]) -> bool:
  """True if the mean training loss of every (active) candidate is finite."""
  losses = np.asarray(step_metrics["loss"], np.float64).mean(0)
  active = step_metrics.get("active")
  return bool(np.isfinite(losses if active is None else losses[np.asarray(active)]).all())


def fit(state: TrainState, run_epoch: EpochFn, *, epochs: int,
        evaluate: Callable[[TrainState], dict[str, Any]],
        checkpointer: checkpoints.Checkpointer, every_epochs: int, eval_every_epochs: int,
        images_per_epoch: int, scalars: report.ScalarWriter | None = None,
        scalar_prefix: str = "", scalar_offset: int = 0,
        log: Callable[[str], None] = report.log) -> tuple[TrainState, list[dict[str, Any]], float]:
  """Trains `state` for `epochs` epochs of `run_epoch`, resuming from `checkpointer` if it can.

  `run_epoch(state, e)` must draw epoch `e`'s data from `e` alone (see `in_memory_epochs`),
  so a resumed run replays exactly the batches of an uninterrupted one. The validation
  metrics (`evaluate(state)`: floats, or lists per stacked candidate) are recorded every
  `eval_every_epochs` epochs and after the last. A checkpoint is written every
  `every_epochs` epochs and after the last; its metadata holds the history and the elapsed
  training time. TensorBoard scalars go to `scalar_prefix + name` at step
  `scalar_offset + epoch`.

  Returns:
    (state, history, elapsed_s): the final state, one record per epoch, and the wall time
    spent in this function summed over all (resumed) invocations.
  Raises:
    NonFiniteLossError: the training loss of an epoch was NaN or infinite.
  """
  history, elapsed_before, start_epoch = [], 0.0, 0
  restored = checkpointer.restore_latest(state)
  if restored is not None:
    start_epoch, state, meta = restored
    history, elapsed_before = meta["history"], meta["elapsed_s"]
    log(f"resumed from checkpoint at epoch {start_epoch} in {checkpointer.directory}")
  if start_epoch >= epochs:
    return state, history, elapsed_before

  begin, epoch_times = time.perf_counter(), []
  for epoch in range(start_epoch, epochs):
    tic = time.perf_counter()
    state, step_metrics = run_epoch(state, epoch)
    record = epoch_record(epoch + 1, step_metrics, state.opt_state)
    epoch_times.append(time.perf_counter() - tic)
    if not _finite_loss(step_metrics):
      kept = (f"the last good checkpoint (epoch {history[-1]['epoch']}) stays in "
              f"{checkpointer.directory}" if history else "no checkpoint was written")
      raise NonFiniteLossError(
          f"training loss became {record['train_loss']} in epoch {epoch + 1}; {kept}; try a "
          "lower train.learning_rate in a new --workdir")
    if (epoch + 1) % eval_every_epochs == 0 or epoch + 1 == epochs:
      record.update({f"val_{k}": v for k, v in evaluate(state).items()})
    record["time_s"] = time.perf_counter() - tic
    history.append(record)
    eta = np.mean(epoch_times) * (epochs - epoch - 1)
    log(report.epoch_line(epoch + 1, epochs, record, images_per_epoch / epoch_times[-1], eta))
    if scalars is not None:
      scalars.write(scalar_offset + epoch + 1,
                    {scalar_prefix + k: v for k, v in record.items() if k != "epoch"})
    if (epoch + 1) % every_epochs == 0 or epoch + 1 == epochs:
      elapsed = elapsed_before + time.perf_counter() - begin
      checkpointer.save(epoch + 1, state, {"history": history, "elapsed_s": elapsed})
  return state, history, elapsed_before + time.perf_counter() - begin


def train_epochs(state: TrainState, dataset: Dataset, key: jax.Array, train_config, *,
                 model: nn.Module, tx: optax.GradientTransformation, mesh: Mesh | None = None,
                 log: Callable[[str], None] = report.log) -> EpochFn:
  """The epochs of one model on `dataset`: streamed, or in memory (see `in_memory_epochs`;
  with a `mesh`, data parallel over it)."""
  step_kwargs = dict(model=model, tx=tx, label_smoothing=train_config.label_smoothing,
                     batch_size=train_config.batch_size)
  if dataset.streaming:
    return streamed_epochs(dataset, key, log=log, mesh=mesh, **step_kwargs)
  return in_memory_epochs(state, dataset, key, epoch_loop=train_config.epoch_loop, log=log,
                          mesh=mesh, **step_kwargs)
