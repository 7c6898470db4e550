"""Collectives in the compiled candidate step on a simulated 4-device mesh.

Counts the all-gather and all-reduce ops in the optimised HLO of one training step of m
stacked candidates, sharded over the mesh's `candidates` axis, in three forms:
  gspmd           jit of the vmapped step (`engine.over_candidates(step, 'vmap')`) with the
                  state placed by NamedSharding (the partitioner decides);
  shard_map loop  the project's form: `jax.shard_map`, manual over `candidates`, automatic
                  over `data`, each slice running its own candidates one after another
                  (`engine.over_candidates(step, 'loop')`);
  shard_map vmap  the same with vmap among a slice's candidates (two or more per slice);
and checks that each form's new state equals the unsharded vmapped step on one device. The
step is `engine.train_step`.

    python bench/mesh_collectives.py            # cnn1d and resnet20, meshes 4x1, 2x2, 1x4
"""

import argparse
import os
import sys

os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=4"
os.environ.setdefault("JAX_PLATFORMS", "cpu")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # pylint: disable=g-import-not-at-top
import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
import numpy as np  # pylint: disable=g-import-not-at-top
import optax  # pylint: disable=g-import-not-at-top
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P  # pylint: disable=g-import-not-at-top

from sms_jax import models, parallel  # pylint: disable=g-import-not-at-top
from sms_jax.training import engine, state as state_lib  # pylint: disable=g-import-not-at-top

SHAPES = {"cnn1d": (40, 1), "resnet20": (8, 8, 3)}


def count(hlo: str) -> dict[str, int]:
  return {op: hlo.count(f" {op}(") + hlo.count(f" {op}-start(") for op in ("all-gather",
                                                                           "all-reduce")}


def measure(model_name: str, m: int, c: int, d: int, batch: int = 16) -> list[dict]:
  model = models.create_model(model_name, 10)
  tx = optax.sgd(0.1, momentum=0.9)
  shape = SHAPES[model_name]
  one = state_lib.create_train_state(model, tx, jax.random.key(0), shape)
  stacked = jax.tree.map(lambda x: jnp.stack([x] * m), one)
  x = jax.random.normal(jax.random.key(1), (m, batch, *shape))
  y = jax.random.randint(jax.random.key(2), (m, batch), 0, 10)
  keys, active = jax.random.split(jax.random.key(3), m), jnp.ones((m,), bool)
  step = lambda s, key, x, y: engine.train_step(s, x, y, key, model=model, tx=tx)
  stacked_as = lambda execution: engine.over_candidates(step, execution, num_shared=0)
  reference, _ = jax.jit(stacked_as("vmap"))(stacked, active, keys, x, y)

  mesh = Mesh(np.asarray(jax.devices()).reshape(c, d), (parallel.CANDIDATES, parallel.DATA),
              axis_types=(jax.sharding.AxisType.Auto,) * 2)
  per_candidate = NamedSharding(mesh, P(parallel.CANDIDATES))
  batch_sharding = NamedSharding(mesh, P(parallel.CANDIDATES, parallel.DATA))
  args = (parallel.put(stacked, per_candidate), parallel.put(active, per_candidate),
          parallel.put(keys, per_candidate), parallel.put(x, batch_sharding),
          parallel.put(y, batch_sharding))
  sharded = lambda local: jax.jit(jax.shard_map(
      local, mesh=mesh, in_specs=(P(parallel.CANDIDATES),) * 5, out_specs=P(parallel.CANDIDATES),
      axis_names={parallel.CANDIDATES}))
  forms = {"gspmd": jax.jit(stacked_as("vmap")), "shard_map loop": sharded(stacked_as("loop"))}
  if m // c > 1:
    forms["shard_map vmap"] = sharded(stacked_as("vmap"))
  rows = []
  for name, fn in forms.items():
    hlo = fn.lower(*args).compile().as_text()
    new, _ = fn(*args)
    diff = max(float(jnp.max(jnp.abs(a - b))) for a, b in zip(
        jax.tree.leaves(parallel.to_local(new)), jax.tree.leaves(reference)))
    rows.append({"model": model_name, "m": m, "mesh": f"{c}x{d}", "form": name, **count(hlo),
                 "max_diff": diff})
  return rows


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--models", default="cnn1d,resnet20")
  args = parser.parse_args()
  print("| model | m | mesh | form | all-gather | all-reduce | max abs diff vs 1 device |")
  print("|---|---|---|---|---|---|---|")
  for model_name in args.models.split(","):
    for m, c, d in ((4, 4, 1), (2, 2, 2), (4, 2, 2), (1, 1, 4)):
      for row in measure(model_name, m, c, d):
        print(f"| {row['model']} | {row['m']} | {row['mesh']} | {row['form']} | "
              f"{row['all-gather']} | {row['all-reduce']} | {row['max_diff']:.1e} |", flush=True)


if __name__ == "__main__":
  main()
