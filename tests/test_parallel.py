"""The device mesh: its shape, the sharded training step, and whole runs on simulated devices
and on two processes, compared with the same run on one device."""

import json
import os
import subprocess
import sys

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from sms_jax import data, experiment, models, parallel
from sms_jax.training import engine, state as state_lib

from conftest import ROOT


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


# A short SMS run: 2 epochs of pretraining, 1 phase of 1 epoch, m candidates.
_RUN_OVERRIDES = {"strategy": "sms", "dataset.num_train": 320, "train.epochs": 2,
                  "train.batch_size": 64, "train.eval_batch_size": 256,
                  "retrain.epochs_per_phase": 1, "prune.n_phases": 1, "ood.severity": 0}


def _config(m):
  from configs import default  # pylint: disable=g-import-not-at-top
  config = default.get_config()
  config.update_from_flattened_dict({**_RUN_OVERRIDES, "soup.m": m})
  return config


def _accuracies(results):
  """Per phase: the candidates' and the soup's test accuracies, and the final one."""
  return ([([c["test_accuracy"] for c in p["candidates"]], p["soup"]["test_accuracy"])
           for p in results["phases"]], results["final"]["test_accuracy"])


def _assert_same_accuracies(results, baseline, tolerance=0.003):
  """Within 0.3 points, candidate by candidate, soup by soup."""
  (phases, final), (base_phases, base_final) = _accuracies(results), _accuracies(baseline)
  assert len(phases) == len(base_phases)
  for (cands, soup), (base_cands, base_soup) in zip(phases, base_phases):
    np.testing.assert_allclose(cands, base_cands, atol=tolerance)
    assert abs(soup - base_soup) <= tolerance
  assert abs(final - base_final) <= tolerance


@pytest.fixture(scope="module")
def one_device_runs(tmp_path_factory):
  """{m: results} of the short run on this process's one device, for m = 2."""
  assert len(jax.devices()) == 1
  return {m: experiment.run(_config(m), str(tmp_path_factory.mktemp(f"one_device_m{m}")))
          for m in (2,)}


_SIMULATED = """
import json, sys
sys.path.insert(0, {tests!r})
from test_parallel import _config, _streamed_mesh_difference
from sms_jax import experiment
run = experiment.run(_config(2), {workdir!r})
print(json.dumps({{"run": run, "stream_difference": _streamed_mesh_difference()}}))
"""


def _env(devices):
  return {**os.environ, "XLA_FLAGS": f"--xla_force_host_platform_device_count={devices}",
          "PYTHONPATH": ROOT}


@pytest.mark.xdist_group("one_device_runs")  # They share the fixture's runs.
def test_four_simulated_devices_equal_one(one_device_runs, tmp_path):
  """m = 2 on 4 devices (2 candidates x 2-way data parallel, after data-parallel
  pretraining on all 4) gives the accuracies of the 1-device run, and a streamed epoch 4-way
  data parallel the 1-device epoch; results.json reports the mesh."""
  code = _SIMULATED.format(tests=os.path.join(ROOT, "tests"), workdir=str(tmp_path))
  out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=_env(4), capture_output=True,
                       text=True, timeout=600)
  assert out.returncode == 0, out.stderr[-2000:]
  reply = json.loads(out.stdout.strip().splitlines()[-1])
  assert reply["stream_difference"] < 1e-4
  assert "2x2 mesh" in out.stdout and "1x4 mesh" in out.stdout
  results = reply["run"]
  assert results["devices"]["count"] == 4 and results["devices"]["platform"] == "cpu"
  assert results["devices"]["mesh"] == {"candidates": 2, "data": 2}
  assert one_device_runs[2]["devices"]["mesh"] == {"candidates": 1, "data": 1}
  _assert_same_accuracies(results, one_device_runs[2])
  assert results["final"]["sparsity"] == pytest.approx(0.9, abs=1e-3)


@pytest.mark.xdist_group("one_device_runs")
def test_two_processes_equal_one(one_device_runs, tmp_path):
  """Two processes with two CPU devices each (jax.distributed over gloo) run one m = 2 run
  on a 2x2 mesh across them (each process one candidate, data parallel over its devices):
  process 0 alone prints and writes results.json, equal to the 1-device run."""
  workdir = str(tmp_path / "run")
  flags = [f"--config.{k}={v}" for k, v in {**_RUN_OVERRIDES, "soup.m": 2}.items()]
  port = 20000 + os.getpid() % 20000
  procs = [subprocess.Popen(
      [sys.executable, "-m", "sms_jax.main", "--config=configs/default.py", f"--workdir={workdir}",
       *flags, f"--coordinator_address=localhost:{port}", "--num_processes=2",
       f"--process_id={pid}"], cwd=ROOT, env=_env(2), stdout=subprocess.PIPE,
      stderr=subprocess.PIPE, text=True) for pid in (0, 1)]
  outputs = [p.communicate(timeout=600) for p in procs]
  for p, (_, err) in zip(procs, outputs):
    assert p.returncode == 0, err[-2000:]
  assert "wrote" in outputs[0][0] and "epoch" not in outputs[1][0]
  with open(os.path.join(workdir, "results.json")) as f:
    results = json.load(f)
  assert results["devices"]["processes"] == 2 and results["devices"]["count"] == 4
  assert results["devices"]["mesh"] == {"candidates": 2, "data": 2}
  _assert_same_accuracies(results, one_device_runs[2])


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
