"""The device mesh: its shape, placing trees on it, and the sharded training step against the
plain one (whole runs on several devices and processes: tests/test_multidevice.py)."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from sms_jax import data, models, parallel
from sms_jax.training import engine, state as state_lib


@pytest.mark.parametrize("m, batch_size, devices, expected", [
    (4, 128, 4, (4, 1)),   # one candidate per device
    (4, 128, 8, (4, 2)),   # candidates first, then data parallel
    (2, 128, 4, (2, 2)),
    (3, 128, 4, (1, 4)),   # m shares no factor with the devices: data parallel only
    (8, 128, 4, (4, 1)),   # two candidates per device
    (4, 6, 16, (4, 2)),    # the data axis must divide the batch
    (1, 64, 4, (1, 4)),    # one model (dense pretraining): data parallel
])
def test_mesh_shape(m, batch_size, devices, expected):
  c, d = parallel.mesh_shape(m, batch_size, devices)
  assert (c, d) == expected
  assert m % c == 0 and batch_size % d == 0 and c * d <= devices


def test_one_device_has_no_mesh():
  assert parallel.candidate_mesh(4, 128, jax.devices()[:1]) is None
  assert parallel.describe(None) == {"candidates": 1, "data": 1}


def test_idle_devices_are_refused_across_processes(monkeypatch):
  """One process may leave devices idle (a 4x2 mesh of 16); several may not."""
  sixteen = jax.devices()[:1] * 16  # Only the mesh's shape is looked at before the error.
  monkeypatch.setattr(parallel.jax, "process_count", lambda: 2)
  with pytest.raises(ValueError, match="train.batch_size = 6 is not allowed .* multiple of 4"):
    parallel.candidate_mesh(4, 6, sixteen)


def test_cluster_detection(monkeypatch):
  for name in ("JAX_COORDINATOR_ADDRESS", "SLURM_NTASKS", "OMPI_COMM_WORLD_SIZE",
               "TPU_WORKER_HOSTNAMES"):
    monkeypatch.delenv(name, raising=False)
  assert not parallel.cluster_detected()
  assert not parallel.initialize()  # Nothing asked for: one process, nothing initialised.
  monkeypatch.setenv("SLURM_NTASKS", "1")
  assert not parallel.cluster_detected()  # One SLURM task is a single-process run.
  monkeypatch.setenv("SLURM_NTASKS", "4")
  assert parallel.cluster_detected()


def test_put_and_to_local_round_trip():
  mesh = Mesh(np.asarray(jax.devices()[:1]).reshape(1, 1), (parallel.CANDIDATES, parallel.DATA))
  tree = {"w": jnp.arange(6.0).reshape(3, 2), "key": jax.random.split(jax.random.key(0), 3)}
  sharding = NamedSharding(mesh, PartitionSpec(parallel.CANDIDATES))
  placed = parallel.put(tree, sharding)
  assert placed["w"].sharding == sharding
  back = parallel.to_local(placed)
  np.testing.assert_array_equal(back["w"], tree["w"])
  np.testing.assert_array_equal(jax.random.key_data(back["key"]), jax.random.key_data(tree["key"]))


@pytest.mark.parametrize("epoch_loop", ["steps", "scan"])
def test_sharded_step_equals_the_plain_one(tiny_config, epoch_loop):
  """The shard_map'd epoch (a 1x1 mesh here) trains m candidates exactly as vmap without a mesh,
  and one replicated state exactly as the plain step."""
  tiny_config.dataset.num_train = 160  # Two steps of 64.
  dataset = data.load(tiny_config.dataset)
  model = models.create_model("cnn1d", dataset.num_classes)
  tx = optax.sgd(0.05, momentum=0.9)
  one = state_lib.create_train_state(model, tx, jax.random.key(0), dataset.input_shape)
  mesh = Mesh(np.asarray(jax.devices()[:1]).reshape(1, 1), (parallel.CANDIDATES, parallel.DATA))
  kwargs = dict(batch_size=64, epoch_loop=epoch_loop, model=model, tx=tx)
  keys = jax.random.split(jax.random.key(1), 3)
  active = jnp.asarray([True, False, True])
  copy = lambda tree: jax.tree.map(jnp.copy, tree)

  stacked = engine.stack([one] * 3)
  plain, plain_metrics = engine.EpochRunner(stacked, dataset, execution="vmap", **kwargs)(
      copy(stacked), keys, active)
  sharded, sharded_metrics = engine.EpochRunner(stacked, dataset, execution="loop", mesh=mesh,
                                                **kwargs)(copy(stacked), keys, active)
  chex.assert_trees_all_close(parallel.to_local(sharded), plain, atol=1e-5)
  chex.assert_trees_all_close(sharded_metrics, plain_metrics, atol=1e-5)
  # The inactive candidate is untouched.
  chex.assert_trees_all_equal(jax.tree.map(lambda x: x[1], parallel.to_local(sharded).params),
                              one.params)

  single, _ = engine.EpochRunner(one, dataset, **kwargs)(copy(one), keys[0])
  replicated, _ = engine.EpochRunner(one, dataset, mesh=mesh, **kwargs)(copy(one), keys[0])
  chex.assert_trees_all_close(parallel.to_local(replicated), single, atol=1e-5)


class _ArrayStream(data.Stream):
  """A stream over in-memory arrays: batches in an order drawn from (seed, epoch), sharded
  between processes as `tfds_source.stream_batches` shards (contiguous equal parts)."""

  def batches(self, batch_size, *, train, seed=0, epoch=0, shard=(0, 1)):
    x, y = _STREAM_DATA
    part = len(y) // shard[1]
    order = np.random.default_rng([seed, epoch]).permutation(part) + shard[0] * part
    for i in range(part // batch_size):
      idx = order[i * batch_size:(i + 1) * batch_size]
      yield x[idx], y[idx]


_STREAM_DATA = (np.random.default_rng(0).normal(size=(256, 40, 1)).astype(np.float32),
                np.random.default_rng(1).integers(0, 10, 256).astype(np.int32))


def _streamed_mesh_difference(mesh=None) -> float:
  """The largest difference between a streamed epoch on one device and the same epoch data
  parallel over `mesh` (default: all devices), in the state and the step metrics."""
  stream = _ArrayStream("fake", "train", "", 256, 0)
  dataset = data.Dataset("fake", stream, stream, stream, 10, "none")
  model = models.create_model("cnn1d", 10)
  tx = optax.sgd(0.05, momentum=0.9)
  one = state_lib.create_train_state(model, tx, jax.random.key(0), (40, 1))
  mesh = mesh or parallel.candidate_mesh(1, 32)
  kwargs = dict(batch_size=32, model=model, tx=tx)
  copy = lambda tree: jax.tree.map(jnp.copy, tree)
  plain = engine.EpochRunner(one, dataset, **kwargs)(copy(one), jax.random.key(3))
  sharded = engine.EpochRunner(one, dataset, mesh=mesh, **kwargs)(copy(one), jax.random.key(3))
  assert plain[1]["loss"].shape == (8,)
  return max(float(jnp.max(jnp.abs(a - b))) for a, b in zip(
      jax.tree.leaves(plain), jax.tree.leaves(parallel.to_local(sharded))))


def test_streamed_epoch_on_a_mesh_equals_the_plain_one():
  """A streamed epoch, data parallel on a (1x1) mesh, trains as the plain streamed epoch."""
  mesh = Mesh(np.asarray(jax.devices()[:1]).reshape(1, 1), (parallel.CANDIDATES, parallel.DATA))
  assert _streamed_mesh_difference(mesh) < 1e-5
