"""RigL and GraNet: regrowth where the dense gradient is largest (checked against numpy on one
update), the start's layer densities kept (RigL) or the cubic schedule followed to exactly the
goal (GraNet), end to end with exact zeros at every epoch end, and resumed after a kill."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import orbax.checkpoint as ocp
import pytest

from configs import rigl_mnist1d
from conftest import make_tiny_config
from sms_jax import config as config_lib
from sms_jax import experiment, sparsity
from sms_jax.sparsity import registry

_is_none = lambda x: x is None
without_times = lambda h: [{k: v for k, v in r.items() if k != "time_s"} for r in h]


def _params(seed: int):
  """A conv kernel, a dense kernel and a bias, random normal."""
  rng = np.random.default_rng(seed)
  shapes = {"conv": {"kernel": (3, 4, 6)}, "dense": {"kernel": (30, 5), "bias": (5,)}}
  return jax.tree.map(lambda s: jnp.asarray(rng.normal(size=s), jnp.float32), shapes,
                      is_leaf=lambda x: isinstance(x, tuple))


def _random_masks(params, density: float, seed: int = 1):
  rng = np.random.default_rng(seed)
  return jax.tree.map(lambda m: None if m is None else jnp.asarray(rng.random(m.shape) < density),
                      sparsity.create_masks(params), is_leaf=_is_none)


def _kernels(tree):
  return [np.asarray(tree[name]["kernel"]) for name in ("conv", "dense")]


def _numpy_rigl(w, m, g, fraction):
  """RigL's new mask, by thresholds (the values are distinct): the alive weights above the
  d-th smallest alive magnitude, and the d largest |g| among the others."""
  drop = int(np.round(fraction * m.sum()))
  kept = m & (np.abs(w) > np.sort(np.abs(w[m]))[drop - 1]) if drop else m.copy()
  candidates = np.abs(g[~kept])
  grown = ~kept & (np.abs(g) >= np.sort(candidates)[-drop]) if drop else np.zeros_like(m)
  return kept | grown


def test_rigl_regrows_the_largest_dense_gradients_at_zero():
  params = _params(0)
  masks = _random_masks(params, 0.3)
  params = sparsity.apply_masks(params, masks)
  updater = sparsity.RigL(update_every=2, end_step=10, drop_fraction=0.5)
  tx = updater.wrap(optax.sgd(0.05, momentum=0.9), masks)
  state = tx.init(params)
  grads = lambda seed: jax.tree.map(jnp.asarray, _params(seed))  # Dense: pruned entries too.
  updates, state = tx.update(grads(1), state, params)  # Step 1: no mask update.
  params = optax.apply_updates(params, updates)
  assert sparsity.masks_equal(sparsity.masks_of(state), masks)
  before, old, g = params, sparsity.masks_of(state), grads(2)
  updates, state = tx.update(g, state, params)  # Step 2: drop and regrow.
  params = optax.apply_updates(params, updates)
  fraction = 0.5 * (1 + np.cos(np.pi * 2 / 10)) / 2
  momentum = optax.tree_utils.tree_get(state, "trace")
  for w, o, grad, n, after, mom in zip(_kernels(before), _kernels(old), _kernels(g),
                                       _kernels(sparsity.masks_of(state)), _kernels(params),
                                       _kernels(momentum)):
    np.testing.assert_array_equal(n, _numpy_rigl(w, o, grad, fraction))
    assert n.sum() == o.sum()  # The layer's density holds.
    new = n & ~o
    assert new.sum() > 0 and (after[new] == 0).all() and (mom[new] == 0).all()  # Grown at 0.
    assert (after[~n] == 0).all()


def test_rigl_schedule_from_config():
  config = make_tiny_config()
  config.rigl.update(update_every=4, drop_fraction=0.4, end_fraction=0.75)
  updater = registry.build("rigl", config, 10, None)  # 3 epochs of 10 steps: the end at 22.
  assert updater.describe() == {"name": "rigl", "update_every": 4, "end_step": 22,
                                "drop_fraction": 0.4, "decay": "cosine"}
  assert float(updater.fraction(0)) == pytest.approx(0.4)
  assert float(updater.fraction(11)) == pytest.approx(0.2)
  assert float(updater.fraction(22)) == pytest.approx(0.0, abs=1e-7)
  assert [t for t in range(1, 31) if updater.is_update_step(t)] == [4, 8, 12, 16, 20]


def test_granet_follows_the_cubic_schedule_to_exactly_the_goal_and_regrows():
  config = make_tiny_config()
  config.train.epochs, config.prune.goal_sparsity, config.rigl.drop_fraction = 5, 0.9, 0.5
  config.gradual.update(start_epoch=1, end_epoch=4, update_every=3)
  params = _params(3)
  masks = sparsity.create_masks(params)  # A dense start.
  updater = registry.build("granet", config, 4, masks)  # Updates at 7, 10, 13, 16; end 15.
  tx = updater.wrap(optax.sgd(0.05, momentum=0.9), masks)
  state, size = tx.init(params), sum(m.size for m in _kernels(masks))

  @jax.jit
  def step(params, state, key):
    grads = jax.tree.map(lambda p: jax.random.normal(key, p.shape), params)
    updates, state = tx.update(grads, state, params)
    return optax.apply_updates(params, updates), state

  grown_at = {}
  for t in range(1, 21):
    old = sparsity.masks_of(state)
    params, state = step(params, state, jax.random.key(t))
    new = sparsity.masks_of(state)
    assert sparsity.zero_outside(params, new)
    alive = sum(int(m.sum()) for m in _kernels(new))
    done = [u for u in (7, 10, 13, 16) if u <= t]
    expected = 0.9 + (0.0 - 0.9) * (1 - (done[-1] - 4) / 12) ** 3 if done else 0.0
    assert alive == round((1 - expected) * size), t  # Global: exact counts.
    grown_at[t] = sum(int((n & ~o).sum()) for n, o in zip(_kernels(new), _kernels(old)))
  assert alive == round(0.1 * size)  # Exactly the goal.
  # Regrowth (pruning alone never adds) at the updates before rigl.end_fraction's step 15
  # (at 7 the start was dense: nothing to add), none after.
  assert grown_at[10] > 0
  assert sum(grown_at.values()) == grown_at[10] + grown_at[13]  # Not at 16.


def _rigl_config():
  config = make_tiny_config()
  config.strategy = "rigl"
  config.init_mask.update(distribution="erk", density=0.2)
  config.rigl.update_every = 3  # 7 steps an epoch: updates at 3, 6, ..., 15 (end 15.75).
  config.checkpoint.keep = 3  # Every epoch's end, to check.
  return config


@pytest.fixture(scope="module")
def rigl_run(tmp_path_factory):
  workdir = tmp_path_factory.mktemp("rigl")
  return experiment.run(_rigl_config(), str(workdir)), workdir


def test_rigl_keeps_every_layer_density_and_exact_zeros_at_every_epoch_end(rigl_run):
  results, workdir = rigl_run
  start = results["init_mask"]
  assert results["final"]["sparsity"] == pytest.approx(1 - start["achieved_density"], abs=1e-12)
  assert results["updater"]["end_step"] == 16  # round(0.75 * 21).
  start_alive = {layer["name"]: layer["nonzero"] for layer in start["layers"]}
  assert {layer["name"]: layer["alive"] for layer in results["layers"]} == start_alive
  with ocp.CheckpointManager(str(workdir / "checkpoints" / "pretrain")) as manager:
    assert list(manager.all_steps()) == [1, 2, 3]
    saved = [manager.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore()))[
        "state"] for step in (1, 2, 3)]
  for epoch in saved:
    masks, params = epoch["opt_state"]["masks"], epoch["params"]
    alive = jax.tree_util.tree_flatten_with_path(masks)[0]
    assert {"/".join(k.key for k in path): int(np.sum(m)) for path, m in alive} == start_alive
    assert sparsity.zero_outside(params, masks)
  moved = [np.sum(a & ~b) for a, b in zip(jax.tree.leaves(saved[2]["opt_state"]["masks"]),
                                           jax.tree.leaves(saved[0]["opt_state"]["masks"]))]
  assert sum(moved) > 0  # Drops and regrowth happened in epochs 2 and 3.


def test_rigl_killed_after_an_epoch_resumes_identically(rigl_run, tmp_path, die_after_save):
  reference, _ = rigl_run
  die_after_save(lambda directory, step: step == 1)  # Masks moved at steps 3 and 6.
  with pytest.raises(KeyboardInterrupt):
    experiment.run(_rigl_config(), str(tmp_path))
  die_after_save.restore()
  resumed = experiment.run(_rigl_config(), str(tmp_path))
  assert without_times(resumed["history"]) == without_times(reference["history"])
  assert resumed["final"] == reference["final"]
  assert resumed["layers"] == reference["layers"]


@pytest.mark.parametrize("key, value, message", [
    ("init_mask.distribution", "none", "config key init_mask.distribution = 'none' is not "
     "allowed with strategy 'rigl'; allowed: a sparse start"),
    ("rigl.end_fraction", 1.5, r"config key rigl.end_fraction = 1.5 .*allowed: a number in "
     r"\(0, 1\]"),
    ("rigl.drop_fraction", 0.0, "config key rigl.drop_fraction = 0.0 "),
    ("rigl.update_every", 0, "config key rigl.update_every = 0 "),
])
def test_bad_rigl_values_are_refused_in_one_line(key, value, message):
  config = rigl_mnist1d.get_config("quick")
  section, name = key.split(".")
  setattr(config[section], name, value)
  with pytest.raises(config_lib.ConfigError, match=message) as error:
    config_lib.validate(config)
  assert "\n" not in str(error.value)


def test_rigl_config_and_its_granet_variant_are_valid():
  for arg in ("", "quick"):
    config = rigl_mnist1d.get_config(arg)
    config_lib.validate(config)
    assert (config.strategy, config.init_mask.distribution) == ("rigl", "erk")
    assert config.init_mask.density == 0.05
    granet = rigl_mnist1d.get_config(",".join(["granet", arg]).rstrip(","))
    config_lib.validate(granet)
    assert (granet.strategy, granet.init_mask.distribution) == ("granet", "none")
    config.update_from_flattened_dict({"strategy": "granet", "init_mask.distribution": "none"})
    assert config == granet
  assert rigl_mnist1d.get_config("quick").train.epochs == 3
  with pytest.raises(ValueError, match="unknown config argument 'fast'"):
    rigl_mnist1d.get_config("fast")
