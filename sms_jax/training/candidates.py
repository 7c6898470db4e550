"""The m candidates of a phase: one stacked state, trained by one compiled program.

Every leaf of a stacked state has a leading candidate axis `[m, ...]`. The candidates'
differing hyperparameters (weight decay, peak learning rate, retraining budget) are arrays
in their optimizer states, and their data orders differ by key, so one compiled step trains
all m. How the candidate axis executes (`parallel.candidate_execution`):
  vmap  one vectorised step (convolutions become grouped convolutions);
  map   `lax.map` over the candidates inside one compiled step;
  loop  one compiled single-candidate step called for each candidate in turn;
  auto  'loop' on CPU, where for conv nets vmap measured up to 2.7x and lax.map 7-23x
        slower than a loop (bench/RESULTS.md); on accelerators whichever of 'vmap' and
        'loop' trains these candidates faster, measured on one batch (`choose_execution`).
All give the same results up to floating-point reassociation.

On several devices the candidates are sharded over a `parallel.candidate_mesh`: each slice
of the mesh trains its own m / c candidates in one program, with the execution above among
them ('loop': one after another inside the program). There 'auto' is 'loop' when the mesh
has a data axis (vmapped convolutions would make XLA all-gather activations,
bench/mesh_collectives.py) and otherwise as on one device, unmeasured.
"""

import functools
import time
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh

from sms_jax import parallel
from sms_jax.data import Dataset
from sms_jax.training import loop, steps
from sms_jax.training.state import TrainState

EXECUTIONS = ("auto", "vmap", "map", "loop")


def resolve_execution(execution: str) -> str:
  """'auto' is 'loop' on CPU and 'vmap' on accelerators (without measuring: see
  `choose_execution`); other values pass through."""
  if execution not in EXECUTIONS:
    raise ValueError(f"unknown candidate execution {execution!r}; allowed: "
                     f"{', '.join(EXECUTIONS)}")
  if execution != "auto":
    return execution
  return "loop" if jax.default_backend() == "cpu" else "vmap"


def measure_execution(state: TrainState, inputs: jax.Array, labels: jax.Array, *,
                      repeats: int = 3, **step_kwargs) -> dict[str, float]:
  """Seconds per training step of the candidates `state: [m, ...]` on one batch `inputs:
  [b, ...]`, `labels: [b]`: as 'vmap' (one vectorised step) and as 'loop' (m single steps).

  Median of `repeats` timed calls after a compiling one; `state` is not consumed.
  `step_kwargs`: model, tx, label_smoothing for `steps.train_step`.
  """
  step = functools.partial(steps.train_step, **step_kwargs)
  single, stacked = jax.jit(step), jax.jit(jax.vmap(step, in_axes=(0, None, None)))
  first = unstack(state)[0]
  runs = {"vmap": lambda: stacked(state, inputs, labels),
          "loop": lambda: [single(first, inputs, labels) for _ in range(num_candidates(state))]}
  times = {}
  for name, run in runs.items():
    jax.block_until_ready(run())
    samples = []
    for _ in range(repeats):
      tic = time.perf_counter()
      jax.block_until_ready(run())
      samples.append(time.perf_counter() - tic)
    times[name] = float(np.median(samples))
  return times


def choose_execution(execution: str, state: TrainState, dataset: Dataset, *, batch_size: int,
                     log: Callable[[str], None], **step_kwargs) -> str:
  """`execution` resolved for these candidates `state: [m, ...]`.

  'auto' on an accelerator, with m > 1 in-memory candidates, measures 'vmap' against 'loop'
  on the first training batch (`measure_execution`) and takes the faster, so that stacking
  is used only where it wins; elsewhere it is `resolve_execution`'s choice.
  """
  if (execution != "auto" or jax.default_backend() == "cpu" or num_candidates(state) == 1
      or dataset.streaming):
    return resolve_execution(execution)
  times = measure_execution(state, jnp.asarray(dataset.train.x[:batch_size]),
                            jnp.asarray(dataset.train.y[:batch_size]), **step_kwargs)
  choice = min(times, key=times.get)
  log(f"candidate execution auto: one step of {num_candidates(state)} candidates takes "
      f"{times['vmap'] * 1e3:.1f} ms as vmap, {times['loop'] * 1e3:.1f} ms as a loop: {choice}")
  return choice


def stack(trees: Sequence[Any]) -> Any:
  """One tree with leaves `[m, ...]` from m trees of the same structure."""
  return jax.tree.map(lambda *leaves: jnp.stack(leaves), *trees)


def unstack(tree: Any) -> list[Any]:
  """The m trees of a stacked tree `[m, ...]`, on this process's device (from a mesh too)."""
  tree = parallel.to_local(tree)
  m = jax.tree.leaves(tree)[0].shape[0]
  return [jax.tree.map(lambda x, k=k: x[k], tree) for k in range(m)]


def num_candidates(tree: Any) -> int:
  """m, the leading axis of a stacked tree."""
  return jax.tree.leaves(tree)[0].shape[0]


def candidate_epochs(state: TrainState, dataset: Dataset, keys: jax.Array,
                     epochs: Sequence[int], *, execution: str, batch_size: int, epoch_loop: str,
                     log: Callable[[str], None], mesh: Mesh | None = None,
                     **step_kwargs) -> loop.EpochFn:
  """Epochs of m stacked candidates (streamed data: one candidate after the other).

  Candidate k trains for `epochs[k]` epochs, epoch `e` drawing its data from
  `fold_in(keys[k], e)`; after its last epoch it stays unchanged while the others go on.

  Args:
    state: the stacked state `[m, ...]` (for shapes).
    dataset: in-memory data.
    keys: `[m]` data keys.
    epochs: the m candidates' numbers of epochs.
    execution: one of EXECUTIONS.
    mesh: a `parallel.candidate_mesh` to shard the candidates over, or None to train them on
      one device. Streamed candidates train one after another, each data parallel over
      all devices.
    batch_size, epoch_loop, log, **step_kwargs: as for `loop.epoch_runner`.
  Returns:
    `run(state, epoch) -> (state, metrics)`, metrics `{'loss', 'accuracy': [steps, m],
    'active': [m]}` (candidates that did not train this epoch have `active` False). With a
    mesh the returned state stays sharded over it.
  """
  m = num_candidates(state)
  runner_kwargs = dict(batch_size=batch_size, epoch_loop=epoch_loop, log=log, **step_kwargs)
  if mesh is not None and not dataset.streaming:
    # With a data axis, vmapped (grouped) convolutions make XLA all-gather activations
    # (bench/mesh_collectives.py): 'auto' runs a slice's candidates one after another.
    if execution == "auto" and (mesh.shape[parallel.DATA] > 1 or
                                m == mesh.shape[parallel.CANDIDATES]):
      execution = "loop"
    run_stacked = loop.epoch_runner(state, dataset, stacked=resolve_execution(execution),
                                    mesh=mesh, **runner_kwargs)
    return _with_active(run_stacked, keys, epochs)
  execution = resolve_execution(execution)
  if dataset.streaming:  # Each candidate reads its own order from the stream, in turn,
    # data parallel over every device.
    run_stream = loop.streamed_runner(
        dataset, batch_size=batch_size, log=log,
        mesh=None if mesh is None else parallel.candidate_mesh(1, batch_size), **step_kwargs)
    run_one = lambda s, k, epoch: run_stream(s, keys[k], epoch)
    execution = "loop"
  elif execution == "loop":
    run_keyed = loop.epoch_runner(unstack(state)[0], dataset, **runner_kwargs)
    run_one = lambda s, k, epoch: run_keyed(s, jax.random.fold_in(keys[k], epoch), None)
  if execution == "loop":

    def run(state, epoch):
      states, active = unstack(state), np.asarray([epoch < e for e in epochs])
      per_candidate = []
      for k in range(m):
        if active[k]:
          states[k], step_metrics = run_one(states[k], k, epoch)
          per_candidate.append(step_metrics)
      steps_ = np.asarray(per_candidate[0]["loss"]).shape[0] if per_candidate else 0
      filled = iter(per_candidate)
      merged = [next(filled) if a else {"loss": np.full(steps_, np.nan),
                                        "accuracy": np.full(steps_, np.nan)} for a in active]
      step_metrics = {name: np.stack([np.asarray(c[name]) for c in merged], axis=1)
                      for name in ("loss", "accuracy")}
      return stack(states), {**step_metrics, "active": active}
    return run

  return _with_active(loop.epoch_runner(state, dataset, stacked=execution, **runner_kwargs),
                      keys, epochs)


def _with_active(run_stacked: loop.KeyedEpochFn, keys: jax.Array,
                 epochs: Sequence[int]) -> loop.EpochFn:
  """Epoch `epoch` of the stacked runner: candidate k draws from `fold_in(keys[k], epoch)`
  and trains while `epoch < epochs[k]`."""

  def run(state, epoch):
    active = np.asarray([epoch < e for e in epochs])
    state, step_metrics = run_stacked(state, jax.vmap(jax.random.fold_in, (0, None))(keys, epoch),
                                      jnp.asarray(active))
    return state, {**step_metrics, "active": active}
  return run
