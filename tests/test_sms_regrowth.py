"""sms_rigl and sms_granet end to end on tiny MNIST-1D runs: each phase's drop and regrowth
recomputed independently (plain jax.grad at the pruned params, numpy top-k) from the model the
phase started with, regrown weights at 0, RigL's layer counts kept and GraNet's goal reached
exactly, the regrown masks the ones the candidates and their soup hold, a resume after a phase
identical, and a dense start refused for sms_rigl. (Plots are not written: tests/test_plots.py.)"""

import shutil

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from configs import rigl_mnist1d
from conftest import make_tiny_config
from sms_jax import checkpoints, data, experiment, models, plots
from sms_jax import config as config_lib
from sms_jax.phases import gradual
from sms_jax.strategies import sms_rigl

_is_none = lambda x: x is None


def _config(strategy: str):
  """512 examples, 3 epochs, 7 steps each; phases at epochs 1 and 2 (steps 7 and 14), 2
  candidates. sms_rigl: a random ERK start at density 0.2, regrowth ending at step 21 (both
  phases regrow); sms_granet: a random ERK start at density 0.5 pruned to 90%, regrowth ending
  at step round(2/3 * 21) = 14 (the last phase regrows nothing, as GraNet at its last
  update)."""
  config = make_tiny_config()
  config.strategy = strategy
  config.train.epochs = 3
  config.init_mask.update(distribution="erk", method="random",
                          density=0.2 if strategy == "sms_rigl" else 0.5)
  config.prune.update(goal_sparsity=0.9, n_phases=2)
  config.gradual.update(start_epoch=0, end_epoch=2)
  config.rigl.update(drop_fraction=0.5, end_fraction=1.0 if strategy == "sms_rigl" else 2 / 3)
  config.soup.update(m=2, vary="seed,weight_decay")
  config.ood.severity = 0  # No OOD sets: not what these tests check.
  return config


def _host(tree):
  """A copy on the host (training donates the device buffers)."""
  return jax.tree.map(lambda x: None if x is None else np.array(x), tree, is_leaf=_is_none)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
  """Per strategy: results, workdir, and each phase's (plan, model it started with, the
  masks and params `prune` returned, with its norm drop)."""
  out = {}
  real_prune = sms_rigl.RegrowthPhaseRunner.prune
  with pytest.MonkeyPatch.context() as patch:
    patch.setattr(plots, "write_plots", lambda *args: [])  # 1.5 s a run; tested elsewhere.
    for name in ("sms_rigl", "sms_granet"):
      seen = []

      def spy(self, current, plan, seen=seen):
        masks, params, drop = real_prune(self, current, plan)
        seen.append((plan, _host(current), _host(masks), _host(params), drop))
        return masks, params, drop

      patch.setattr(sms_rigl.RegrowthPhaseRunner, "prune", spy)
      workdir = tmp_path_factory.mktemp(name)
      out[name] = experiment.run(_config(name), str(workdir)), workdir, seen
  return out


def _prunable(tree, masks):
  """The leaves of `tree` whose mask is not None, with their '/'-joined paths."""
  flat = jax.tree_util.tree_flatten_with_path(masks, is_leaf=_is_none)[0]
  leaves = jax.tree.leaves(tree, is_leaf=_is_none)
  return {"/".join(k.key for k in path): np.asarray(leaf)
          for (path, mask), leaf in zip(flat, leaves) if mask is not None}


def _top(scores, k):
  """Bool mask of the k largest of the flat `scores`, ties to the lower index."""
  keep = np.zeros(scores.size, bool)
  keep[np.argsort(-scores, kind="stable")[:k]] = True
  return keep


def _expected_phase(config, plan, current, batch, num_classes):
  """The phase's masks by numpy and plain jax.grad: magnitude pruning (global) to the plan's
  target, then per layer the alive - d largest |w| and the d largest |grad| of the rest,
  d = round(alpha_t * alive). Returns (pruned masks, masks, alpha_t, the weights dropped and
  regrown) by prunable path."""
  params, masks = _prunable(current.params, current.masks), _prunable(current.masks,
                                                                       current.masks)
  scores = np.concatenate([np.where(masks[p], np.abs(params[p]), -1.0).ravel() for p in masks])
  total = scores.size
  keep = _top(scores, round((1 - plan.target_sparsity) * total))
  splits = np.split(keep, np.cumsum([m.size for m in masks.values()])[:-1])
  pruned = {p: s.reshape(masks[p].shape) & masks[p] for p, s in zip(masks, splits)}
  # Plain gradient at the pruned params: BatchNorm in training mode, one batch.
  model = models.create_model(config.model.name, num_classes)
  flat_masks = jax.tree.leaves(current.masks, is_leaf=_is_none)
  pruned_list = iter(pruned.values())
  pruned_params = jax.tree.unflatten(jax.tree.structure(current.params), [
      p if m is None else p * next(pruned_list)
      for p, m in zip(jax.tree.leaves(current.params), flat_masks)])

  def loss(p):
    logits, _ = model.apply({"params": p, "batch_stats": current.batch_stats}, batch[0],
                            train=True, mutable=["batch_stats"])
    return optax.softmax_cross_entropy_with_integer_labels(logits, batch[1]).mean()

  grads = _prunable(jax.jit(jax.grad(loss))(pruned_params), current.masks)
  steps = config.train.epochs * 7
  end = round(config.rigl.end_fraction * steps)
  t = plan.first_step
  alpha = config.rigl.drop_fraction * 0.5 * (1 + np.cos(np.pi * t / end)) if t < end else 0.0
  new, back = {}, {}
  for p, mask in pruned.items():
    alive = int(mask.sum())
    d = int(np.round(alpha * alive))
    kept = _top(np.where(mask, np.abs(params[p]), -1.0).ravel(), alive - d)
    grown = _top(np.where(kept, -1.0, np.abs(grads[p]).ravel()), d)
    new[p] = (kept | grown).reshape(mask.shape)
    back[p] = (mask.ravel() & ~kept & grown).reshape(mask.shape)
  return pruned, new, alpha, back


@pytest.mark.parametrize("name", ["sms_rigl", "sms_granet"])
def test_each_phase_regrows_as_computed_independently_from_the_model_it_starts(runs, name):
  results, _, seen = runs[name]
  config = _config(name)
  dataset = data.load(config.dataset)
  assert dataset.steps_per_epoch(config.train.batch_size) == 7
  batch = (jnp.asarray(dataset.train.x[:64]), jnp.asarray(dataset.train.y[:64]))
  assert [plan.first_step for plan, *_ in seen] == [7, 14]
  dropped_and_regrown = 0
  for (plan, current, masks, params, _), record in zip(seen, results["phases"]):
    pruned, expected, alpha, back = _expected_phase(config, plan, current, batch,
                                                    dataset.num_classes)
    got = _prunable(masks, masks)
    assert got.keys() == expected.keys()
    for path in got:
      np.testing.assert_array_equal(got[path], expected[path], err_msg=f"{name} {path}")
    assert record["regrowth_fraction"] == pytest.approx(alpha, rel=1e-6)
    assert record["regrown"] == sum(int(np.sum(expected[p] & ~pruned[p])) for p in expected)
    # The candidates start from the pruned model inside the new masks: regrown weights at 0,
    # one dropped and regrown keeping its value, unpruned leaves (biases, BatchNorm) as they were.
    start = _prunable(params, masks)
    before = _prunable(current.params, current.masks)
    for path in got:
      np.testing.assert_array_equal(start[path], before[path] * pruned[path] * expected[path])
    dropped_and_regrown += sum(int(np.sum(b)) for b in back.values())
    assert all(np.all(start[p][back[p]] == before[p][back[p]]) for p in back)
    others = [(a, b) for a, b, m in zip(jax.tree.leaves(params), jax.tree.leaves(current.params),
                                        jax.tree.leaves(current.masks, is_leaf=_is_none))
              if m is None]
    assert others and all(np.array_equal(a, b) for a, b in others)
    old, new = jax.tree.leaves(current.params), jax.tree.leaves(params)
    assert record["relative_norm_drop"] == pytest.approx(np.sqrt(
        sum(np.sum((a - b) ** 2) for a, b in zip(old, new)) / sum(np.sum(a ** 2) for a in old)),
        rel=1e-5)
  # Regrowth happened where the fraction is positive, and not where it is 0.
  regrown = [record["regrown"] for record in results["phases"]]
  assert regrown[0] > 0
  assert (regrown[1] > 0) if name == "sms_rigl" else (regrown[1] == 0)
  assert dropped_and_regrown > 0  # Weights that keep their value were there to check.


def test_phase_two_starts_from_the_soup_of_phase_one(runs):
  for name in ("sms_rigl", "sms_granet"):
    _, workdir, seen = runs[name]
    _, soup, _ = checkpoints.read_verified(str(workdir / "checkpoints" / "phases"), 1)
    started = seen[1][1]
    for a, b in zip(jax.tree.leaves(soup["params"]), jax.tree.leaves(started.params)):
      np.testing.assert_array_equal(a, b)


def test_soups_hold_the_regrown_masks_rigl_keeps_layer_counts_granet_reaches_the_goal(runs):
  for name in ("sms_rigl", "sms_granet"):
    results, workdir, seen = runs[name]
    start = {layer["name"]: layer["nonzero"] for layer in results["init_mask"]["layers"]}
    start_masks = seen[0][1].masks
    assert {p: int(m.sum()) for p, m in _prunable(start_masks, start_masks).items()} == start
    for k, (plan, _, masks, _, _) in enumerate(seen, start=1):
      _, soup, _ = checkpoints.read_verified(str(workdir / "checkpoints" / "phases"), k)
      got, held = _prunable(masks, masks), _prunable(soup["masks"], masks)
      assert all(np.array_equal(got[p], held[p].astype(bool)) for p in got)  # Fixed in training.
      weights = _prunable(soup["params"], masks)
      assert all(np.all(weights[p][~got[p]] == 0) for p in got)  # Exact zeros outside.
      counts = {p: int(m.sum()) for p, m in got.items()}
      total, alive = sum(m.size for m in got.values()), sum(counts.values())
      if name == "sms_rigl":
        assert plan.target_sparsity == pytest.approx(1 - results["init_mask"]["achieved_density"])
        assert counts == start  # Every layer keeps its count ...
        moved = sum(int(np.sum(got[p] & ~start_masks_p))
                    for p, start_masks_p in _prunable(start_masks, start_masks).items())
        assert moved > 0  # ... while the mask moves outside the start, as RigL's does.
      else:
        assert alive == round((1 - plan.target_sparsity) * total)
    if name == "sms_granet":
      assert alive == round(0.1 * total)  # Exactly the goal at the last phase.
      assert results["final"]["sparsity"] == 1 - alive / total
    last = results["phases"][-1]["layers"]
    assert {layer["name"]: layer["alive"] for layer in last} == counts


def _phase_numbers(results):
  """Everything a phase reports except timings."""
  without_times = lambda record: {k: v for k, v in record.items() if not k.endswith("time_s")}
  return [{**without_times(p), "history": [without_times(r) for r in p["history"]]}
          for p in results["phases"]]


def test_sms_rigl_stopped_after_a_phase_resumes_with_the_same_regrowth(runs, tmp_path,
                                                                       monkeypatch, capsys):
  """The reference run's workdir as a run stopped after phase 1's checkpoint leaves it (its
  pretraining and phase 1 saved; phase 2, plots and results not): the resumed run redoes
  phase 2's regrowth from the restored soup, exactly."""
  reference, workdir, _ = runs["sms_rigl"]
  shutil.copytree(workdir / "checkpoints", tmp_path / "checkpoints")
  shutil.rmtree(tmp_path / "checkpoints" / "phases" / "2")
  monkeypatch.setattr(plots, "write_plots", lambda *args: [])
  capsys.readouterr()
  resumed = experiment.run(_config("sms_rigl"), str(tmp_path))
  assert "resumed after phase 1" in capsys.readouterr().out
  assert _phase_numbers(resumed) == _phase_numbers(reference)  # `regrown` of phase 2 included.
  assert resumed["final"] == reference["final"]


def test_sms_rigl_needs_a_sparse_start_but_no_goal_above_it():
  config = rigl_mnist1d.get_config("sms,quick")
  config_lib.validate(config)  # Goal 0.95 = the start's sparsity: sms_rigl prunes nothing.
  config.init_mask.distribution = "none"
  with pytest.raises(config_lib.ConfigError, match="config key init_mask.distribution = 'none' "
                     "is not allowed with strategy 'sms_rigl'; allowed: a sparse start") as error:
    config_lib.validate(config)
  assert "\n" not in str(error.value)
  granet = rigl_mnist1d.get_config("granet,sms,quick")
  config_lib.validate(granet)  # sms_granet: dense start ...
  granet.init_mask.distribution = "erk"  # ... or sparse, below the goal only.
  with pytest.raises(config_lib.ConfigError, match="config key prune.goal_sparsity = 0.95 is "
                     "not allowed with init_mask.density = 0.05"):
    config_lib.validate(granet)


def test_rigl_config_sms_variants():
  for arg, strategy in (("sms", "sms_rigl"), ("granet,sms", "sms_granet")):
    config = rigl_mnist1d.get_config(arg)
    assert (config.strategy, config.prune.n_phases, config.soup.m) == (strategy, 4, 4)
    assert gradual.phase_epochs(config) == [11, 22, 34, 45]
    assert rigl_mnist1d.get_config(arg + ",quick").prune.n_phases == 2
