"""Devices and hosts: the mesh that spreads the m candidates of a phase, and their batches.

The mesh has two axes. `candidates` shards the leading axis of a stacked state `[m, ...]`
(m / c candidates on each slice of the mesh); `data` shards each candidate's batch over the
remaining devices. The training step runs under `jax.shard_map`, manual over `candidates`,
so each slice runs the ordinary (ungrouped) convolutions of its own candidates: under plain
jit, XLA's partitioner all-gathers the grouped convolutions of a vmapped step. It is
automatic over `data`: jit's partitioner reduces gradients and BatchNorm statistics over
the data axis only, so a candidate's batch is still one batch of `train.batch_size`.

Everything else (pruning, soups, evaluation, reports) runs on one device of each process,
on the same values in every process; `to_local` brings a tree back from the mesh.

Several processes (hosts) join one run through `jax.distributed.initialize`
(`initialize`); the mesh then spans every process's devices.
"""

import math
import os
from typing import Any, Sequence

import jax
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import Mesh, NamedSharding, PartitionSpec

CANDIDATES, DATA = "candidates", "data"

# Environment variables by which jax.distributed.initialize() finds a multi-process run:
# (variable, whether its value says there is more than one process).
_CLUSTER_HINTS = (
    ("JAX_COORDINATOR_ADDRESS", lambda v: bool(v)),
    ("SLURM_NTASKS", lambda v: v.isdigit() and int(v) > 1),
    ("OMPI_COMM_WORLD_SIZE", lambda v: v.isdigit() and int(v) > 1),
    ("TPU_WORKER_HOSTNAMES", lambda v: "," in v),
)


def cluster_detected() -> bool:
  """Whether the environment describes a run of several processes (SLURM, Open MPI, a
  multi-host TPU slice, or JAX_COORDINATOR_ADDRESS)."""
  return any(name in os.environ and more(os.environ[name]) for name, more in _CLUSTER_HINTS)


def initialize(coordinator_address: str = "", num_processes: int = 0,
               process_id: int = -1) -> bool:
  """Joins a multi-process run if one is asked for (arguments) or detected (environment).

  Args:
    coordinator_address: `host:port` of process 0; '' to let jax read the cluster's
      environment.
    num_processes, process_id: this run's process count and this process's index; 0 / -1
      to read them from the environment.
  Returns:
    True if this process joined a multi-process run.
  """
  explicit = bool(coordinator_address) or num_processes > 1
  if not explicit and not cluster_detected():
    return False
  # CPU processes exchange their collectives over gloo (accelerators use their own).
  jax.config.update("jax_cpu_collectives_implementation", "gloo")
  jax.distributed.initialize(coordinator_address=coordinator_address or None,
                             num_processes=num_processes or None,
                             process_id=None if process_id < 0 else process_id)
  return True


def mesh_shape(m: int, batch_size: int, num_devices: int) -> tuple[int, int]:
  """`(c, d)`: candidates first (the largest c dividing both m and the device count), then
  data parallelism over the rest, as far as it divides the batch. `c * d <= num_devices`."""
  c = math.gcd(m, num_devices)
  return c, math.gcd(num_devices // c, batch_size)


def candidate_mesh(m: int, batch_size: int,
                   devices: Sequence[jax.Device] | None = None) -> Mesh | None:
  """The mesh `(candidates, data)` for m candidates with batches of `batch_size`.

  Uses every device (default: all devices of all processes) when the shape allows, else
  the first `c * d`. Returns None when there is only one device.
  Raises:
    ValueError: several processes, and the shape would leave some process's devices out.
  """
  devices = list(jax.devices() if devices is None else devices)
  if len(devices) == 1:
    return None
  c, d = mesh_shape(m, batch_size, len(devices))
  if c * d < len(devices) and jax.process_count() > 1:
    raise ValueError(
        f"config key train.batch_size = {batch_size} is not allowed with {m} candidate(s) on "
        f"{len(devices)} devices of {jax.process_count()} processes (the {c}x{d} mesh would "
        f"leave devices idle); allowed: a batch size that is a multiple of {len(devices) // c}")
  return Mesh(np.asarray(devices[:c * d]).reshape(c, d), (CANDIDATES, DATA),
              axis_types=(jax.sharding.AxisType.Auto,) * 2)


def describe(mesh: Mesh | None) -> dict[str, int]:
  """`{'candidates': c, 'data': d}`, the mesh's shape (1 x 1 without a mesh)."""
  return dict(mesh.shape) if mesh is not None else {CANDIDATES: 1, DATA: 1}


def replicated(mesh: Mesh) -> NamedSharding:
  """A copy on every device of the mesh."""
  return NamedSharding(mesh, PartitionSpec())


def _is_key(x: Any) -> bool:
  return jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key)


def put(tree: Any, sharding: NamedSharding) -> Any:
  """Places every leaf of `tree` with `sharding` (a no-op for leaves placed so already).

  With several processes each must pass the same values: each places its own devices'
  shards of them.
  """

  def one(x):
    if isinstance(x, jax.Array) and x.sharding == sharding:
      return x
    if _is_key(x):
      return jax.random.wrap_key_data(one(jax.random.key_data(x)), impl=jax.random.key_impl(x))
    if jax.process_count() == 1:
      return jax.device_put(x, sharding)
    host = np.asarray(x)
    return jax.make_array_from_callback(host.shape, sharding, lambda index: host[index])

  return jax.tree.map(one, tree)


def to_local(tree: Any) -> Any:
  """Every leaf of `tree` whole on this process's first device (from the mesh, or as is)."""
  device = jax.local_devices()[0]

  def one(x):
    if not isinstance(x, jax.Array) or x.sharding.device_set == {device}:
      return x
    if _is_key(x):
      return jax.random.wrap_key_data(one(jax.random.key_data(x)), impl=jax.random.key_impl(x))
    if not x.is_fully_addressable:
      x = multihost_utils.process_allgather(x, tiled=True)
    return jax.device_put(x, device)

  return jax.tree.map(one, tree)


def to_host(tree: Any) -> Any:
  """Every leaf of `tree` whole as a NumPy array (PRNG keys as their key data); collective
  when a leaf spans several processes, so every process must call it."""

  def one(x):
    if isinstance(x, jax.Array):
      if _is_key(x):
        x = jax.random.key_data(x)
      if not x.is_fully_addressable:
        x = multihost_utils.process_allgather(x, tiled=True)
    return np.asarray(x)

  return jax.tree.map(one, tree)


def global_arrays(tree: Any) -> Any:
  """With several processes, each single-device leaf replicated over every device of the run
  (what orbax needs to write it collectively); with one process, `tree` unchanged."""
  if jax.process_count() == 1:
    return tree
  everywhere = replicated(Mesh(np.asarray(jax.devices()), ("all",)))
  return jax.tree.map(
      lambda x: put(x, everywhere) if len(getattr(x, "sharding", everywhere).device_set) == 1
      else x, tree)
