"""A phase on its own: the evaluation of scripted candidates against independent computations,
and the candidates' training (their learning rates and data orders) against single runs.

Each test here fails for one plausible bug in the phase: the soup's BatchNorm statistics not
recalibrated, the greedy selection skipped, the OOD sets left clean, the ensemble replaced
by a candidate, the best candidate not chosen by validation, the candidates' learning rates
or seeds ignored in training.
"""

import types

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import default
from sms_jax import evaluation, models, pretraining, report, sparsity
from sms_jax.data import Dataset, Split, corruptions, signal_corruptions
from sms_jax.phases import plan as plan_lib
from sms_jax.phases.evaluate import PhaseEvaluator, evaluation_state, outcome
from sms_jax.phases.runner import PhaseRunner, phase_scalars
from sms_jax.training import engine, optimizers, retrain, state as state_lib
from sms_jax.training.evaluator import Evaluator


BATCH = 32


def _dataset() -> Dataset:
  """Learnable signals: the class is the 4-sample window with the largest sum."""
  rng = np.random.default_rng(0)

  def split(n):
    x = rng.normal(size=(n, 40, 1)).astype(np.float32)
    return Split(x, x[:, :, 0].reshape(n, 10, 4).sum(-1).argmax(-1).astype(np.int32))
  return Dataset("synthetic", split(320), split(128), split(128), 10, "none")


def _train(model, state, tx, dataset, epochs, seed):
  runner = engine.EpochRunner(state, dataset, model=model, tx=tx, batch_size=BATCH)
  for epoch in range(epochs):
    state, _ = runner(state, jax.random.fold_in(jax.random.key(seed), epoch))
  return state


@pytest.fixture(scope="module")
def phase():
  """Three candidates sharing a 50% mask: two trained (the second one epoch longer, in
  another order) and one untrained (chance accuracy)."""
  model, dataset = models.create_model("cnn1d", 10), _dataset()
  tx = optimizers.make_optimizer(default.get_config().train, lambda count: 0.05)
  good = _train(model, state_lib.create_train_state(model, tx, jax.random.key(0), (40, 1)),
                tx, dataset, 8, seed=1)
  masks = sparsity.prune(good.params, sparsity.create_masks(good.params), 0.5)
  good = good.replace(params=sparsity.apply_masks(good.params, masks))
  masked_tx = sparsity.FixedMasks().wrap(tx, masks)
  second = _train(model, jax.tree.map(jnp.copy, good.replace(  # Training donates its input.
      opt_state=masked_tx.init(good.params))), masked_tx, dataset, 1, seed=2)
  fresh = model.init(jax.random.key(7), jnp.zeros((1, 40, 1)))
  members = [evaluation_state(s.params, s.batch_stats) for s in (good, second)]
  members.append(evaluation_state(sparsity.apply_masks(fresh["params"], masks),
                                  fresh["batch_stats"]))
  evaluator = Evaluator(model, dataset, 64)
  ood_key = jax.random.key(3)
  make_evaluator = lambda recalibration="soups", average="cumulative": PhaseEvaluator(
      model, dataset, evaluator, bn_recalibration_frac=0.5, batch_size=BATCH,
      ood_sets=corruptions.ood_sets(dataset, 3, ood_key), paths=models.param_paths(model, (40, 1)),
      bn_recalibration=recalibration, bn_average=average)
  logits = lambda s, x: np.asarray(model.apply(
      {"params": s.params, "batch_stats": s.batch_stats}, x, train=False))
  val = [evaluation.accuracy(logits(s, dataset.val.x), dataset.val.y) for s in members]
  # Most tests here recalibrate soups only, so that candidates are evaluated as trained;
  # the tests of `bn_recalibration='all'` and 'none' make their own evaluator.
  evaluate = make_evaluator()
  start = jax.tree.map(lambda p: p + 0.01, good.params)  # A stand-in for the pruned start.
  return types.SimpleNamespace(model=model, dataset=dataset, masks=masks, members=members,
                               stacked=engine.stack(members), evaluate=evaluate, val=val,
                               logits=logits, ood_key=ood_key, make_evaluator=make_evaluator,
                               start=start)


def _run(phase, method="uniform", val=None, evaluate=None):
  hparams = [{"seed": k} for k in range(3)]
  return (evaluate or phase.evaluate)(phase.stacked, phase.masks, start_params=phase.start,
                                      val_accuracies=val or phase.val, hparams=hparams,
                                      method=method)


def test_the_scripted_candidates_are_as_intended(phase):
  assert phase.val[0] > 0.5 and phase.val[1] > 0.5 and phase.val[2] < 0.3


def test_candidates_and_the_ensemble_match_their_logits(phase):
  _, record = _run(phase)
  test = phase.dataset.test
  logits = [phase.logits(s, test.x) for s in phase.members]
  accuracies = [float((l.argmax(-1) == test.y).mean()) for l in logits]
  assert [c["test_accuracy"] for c in record["candidates"]] == pytest.approx(accuracies)
  probabilities = np.mean([np.exp(l - l.max(-1, keepdims=True)) /
                           np.exp(l - l.max(-1, keepdims=True)).sum(-1, keepdims=True)
                           for l in logits], 0)
  expected = float((probabilities.argmax(-1) == test.y).mean())
  assert record["ensemble"]["test_accuracy"] == pytest.approx(expected)
  assert expected != accuracies[0]  # So the first candidate cannot stand in for it.
  for l in logits:  # Nor could any other: its predictions differ from each member's.
    assert (probabilities.argmax(-1) != l.argmax(-1)).any()


def test_best_candidate_is_chosen_by_validation(phase):
  _, record = _run(phase, val=[0.2, 0.1, 0.9])  # Scripted: the untrained one "wins" on val.
  assert record["best_candidate"]["index"] == 2
  assert record["best_candidate"]["test_accuracy"] == record["candidates"][2]["test_accuracy"]


def test_without_validation_nothing_is_ranked(phase):
  """No validation split: no best candidate (not candidate 0 at accuracy 0.0), no candidate
  validation accuracies, a uniform soup of all, and a greedy soup refused."""
  _, record = phase.evaluate(phase.stacked, phase.masks, start_params=phase.start,
                             val_accuracies=None, hparams=[{"seed": k} for k in range(3)],
                             method="uniform")
  _, with_val = _run(phase)
  assert "best_candidate" not in record
  assert [c["val_accuracy"] for c in record["candidates"]] == [None] * 3
  assert record["soup"]["ingredients"] == [0, 1, 2]
  assert record["soup"]["test_accuracy"] == with_val["soup"]["test_accuracy"]
  with pytest.raises(ValueError, match="no validation split"):
    phase.evaluate(phase.stacked, phase.masks, start_params=phase.start, val_accuracies=None,
                   hparams=[{"seed": k} for k in range(3)], method="greedy")


def test_greedy_soup_leaves_out_the_untrained_candidate(phase):
  soup, record = _run(phase, method="greedy")
  order = sorted(range(2), key=lambda k: -phase.val[k])
  assert record["soup"]["ingredients"] == order
  assert record["soup"]["val_accuracy"] >= max(phase.val)
  _, uniform = _run(phase)
  assert uniform["soup"]["ingredients"] == [0, 1, 2]
  assert record["soup"]["test_accuracy"] > uniform["soup"]["test_accuracy"]
  np.testing.assert_allclose(soup.params["dense"]["kernel"], np.mean(
      [np.asarray(phase.members[k].params["dense"]["kernel"]) for k in order], 0), rtol=1e-6)


def test_the_soups_batch_norm_statistics_are_recomputed_for_its_weights(phase):
  """The running statistics of each BatchNorm layer are the mean over the first half of the
  training split (in batches of 32) of its inputs' batch means and variances, computed here
  from the conv outputs of train-mode forward passes of the averaged weights."""
  soup, _ = _run(phase)
  expected = _batch_statistics(phase, soup)
  for i in range(3):
    stats = soup.batch_stats[f"bn{i}"]
    np.testing.assert_allclose(stats["mean"], np.mean(expected[i][0], 0), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(stats["var"], np.mean(expected[i][1], 0), rtol=1e-4, atol=1e-5)
    averaged = np.mean([np.asarray(m.batch_stats[f"bn{i}"]["var"]) for m in phase.members], 0)
    assert not np.allclose(stats["var"], averaged, rtol=1e-2)  # Not merely averaged.


def _batch_statistics(phase, state):
  """Per BatchNorm layer i: `(means, variances)`, each `[5, channels]`: of its inputs (the
  conv outputs) in train-mode passes of `state` over the first half of the training split
  in batches of 32, computed from the captured intermediates."""
  x = phase.dataset.train.x[:160]
  stats = {i: ([], []) for i in range(3)}
  for start in range(0, 160, BATCH):
    _, out = phase.model.apply({"params": state.params, "batch_stats": state.batch_stats},
                               x[start:start + BATCH], train=True, capture_intermediates=True,
                               mutable=["batch_stats", "intermediates"])
    for i in range(3):
      conv = np.asarray(out["intermediates"][f"conv{i}"]["__call__"][0], np.float64)
      stats[i][0].append(conv.mean((0, 1)))
      stats[i][1].append(conv.var((0, 1)))
  return stats


def test_ood_accuracies_are_the_soups_on_the_corrupted_test_sets(phase):
  soup, record = _run(phase)
  test = phase.dataset.test
  assert list(record["ood"]) == list(corruptions.CORRUPTIONS)
  clean = float((phase.logits(soup, test.x).argmax(-1) == test.y).mean())
  for i, name in enumerate(corruptions.CORRUPTIONS):
    x = np.asarray(signal_corruptions.corrupt(jax.random.fold_in(phase.ood_key, i), test.x, name, 3))
    assert np.abs(x - test.x).mean() > 0.05  # Really corrupted.
    expected = float((phase.logits(soup, x).argmax(-1) == test.y).mean())
    assert record["ood"][name] == pytest.approx(expected)
  assert any(acc != clean for acc in record["ood"].values())


def test_the_record_counts_the_masks(phase):
  _, record = _run(phase)
  assert record["sparsity"] == pytest.approx(0.5, abs=1e-3)
  for layer in record["layers"]:
    assert layer["nonzero"] <= layer["alive"] < layer["size"]
  assert record["flops"]["nonzero"] < record["flops"]["dense"]


def test_one_candidate_is_recorded_as_the_model(phase):
  """m = 1: the record holds the one model's metrics (as its logits give them) under
  `model`, and no soup, candidates, ensemble, best candidate or distances."""
  model, record = phase.evaluate(engine.stack(phase.members[:1]), phase.masks,
                                 start_params=phase.start, val_accuracies=phase.val[:1],
                                 hparams=[{"seed": 5}], method="greedy")
  assert set(record) == {"sparsity", "sparsity_all", "layers", "model", "flops", "ood",
                         "eval_time_s"}
  assert outcome(record) is record["model"]
  assert set(record["model"]) == {"hparams", "val_accuracy", "val_loss", "test_accuracy",
                                  "test_loss", "test_ece", "test_mce",
                                  "test_worst_class_accuracy", "distance_to_start"}
  assert record["model"]["hparams"] == {"seed": 5}
  for split in ("val", "test"):
    data = getattr(phase.dataset, split)
    expected = evaluation.evaluate_logits(phase.logits(phase.members[0], data.x), data.y)
    assert record["model"][f"{split}_accuracy"] == pytest.approx(expected["accuracy"])
    assert record["model"][f"{split}_loss"] == pytest.approx(expected["loss"], rel=1e-5)
  chex.assert_trees_all_equal(model.params, phase.members[0].params)  # Handed on unchanged.
  chex.assert_trees_all_equal(model.batch_stats, phase.members[0].batch_stats)
  assert list(record["ood"]) == list(corruptions.CORRUPTIONS)


def test_phase_scalars_name_the_model_handed_on_and_each_comparison(phase):
  _, souped = _run(phase)
  scalars = phase_scalars(souped)
  assert scalars["phases/test_accuracy"] == souped["soup"]["test_accuracy"]
  assert scalars["phases/val_accuracy"] == souped["soup"]["val_accuracy"]
  assert scalars["phases/test_ece"] == souped["soup"]["test_ece"]
  assert scalars["phases/sparsity"] == souped["sparsity"]
  assert scalars["phases/best_candidate_test_accuracy"] == (
      souped["best_candidate"]["test_accuracy"])
  assert scalars["phases/ensemble_test_accuracy"] == souped["ensemble"]["test_accuracy"]
  assert {k: v for k, v in scalars.items() if k.startswith("phases/ood/")} == {
      f"phases/ood/{name}": value for name, value in souped["ood"].items()}
  _, single = phase.evaluate(engine.stack(phase.members[:1]), phase.masks,
                             start_params=phase.start, val_accuracies=phase.val[:1],
                             hparams=[{}], method="uniform")
  scalars = phase_scalars(single)
  assert scalars["phases/test_accuracy"] == single["model"]["test_accuracy"]
  assert not any("best_candidate" in k or "ensemble" in k for k in scalars)


@pytest.fixture(scope="module")
def runner(tmp_path_factory):
  """A phase runner of two candidates on the synthetic data, from a briefly trained model."""
  config = default.get_config()
  config.train.batch_size, config.train.epochs, config.ood.severity = BATCH, 4, 0
  dataset = _dataset()
  model = models.create_model("cnn1d", 10)
  tx = optimizers.make_optimizer(config.train, lambda count: 0.05)
  state = _train(model, state_lib.create_train_state(model, tx, jax.random.key(0), (40, 1)),
                 tx, dataset, 2, seed=1)
  masks = sparsity.create_masks(state.params)
  pretrained = pretraining.Pretrained(model, state, [], 0.0, Evaluator(model, dataset, 64), masks,
                                      sparsity.FixedMasks(), {}, {})
  workdir = str(tmp_path_factory.mktemp("phase_runner"))
  run = PhaseRunner(config, dataset, workdir, pretrained, m=2, scalars=report.ScalarWriter(workdir))
  pruned = sparsity.prune(state.params, masks, 0.5)
  start = plan_lib.Model(sparsity.apply_masks(state.params, pruned), state.batch_stats, pruned)
  return types.SimpleNamespace(run=run, config=config, dataset=dataset, model=model, start=start)


def _train_candidates(runner, candidates, phase=1):
  plan = plan_lib.PhasePlan(phase=phase, target_sparsity=0.5, candidates=tuple(candidates),
                            schedule="llr", retrain_epochs=2)
  stacked, history, _ = runner.run.train(plan, runner.start, sparsity.FixedMasks(),
                                        [1.0] * len(candidates))
  return engine.unstack(stacked), history


def test_candidates_train_with_their_own_learning_rates(runner):
  candidates = [plan_lib.Candidate(0, 5e-4, 0.2, 2), plan_lib.Candidate(0, 5e-4, 1.0, 2)]
  trained, history = _train_candidates(runner, candidates)
  pretrain, steps = runner.run.pretrain, runner.dataset.steps_per_epoch(BATCH)
  for epoch, record in enumerate(history, start=1):  # The last step's rate of each epoch.
    assert record["learning_rate"] == pytest.approx([float(retrain.learning_rate(
        "llr", epoch * steps - 1, 2 * steps, pretrain.max_lr * c.learning_rate, pretrain))
                                                     for c in candidates], rel=1e-6)
  # Each candidate equals a single run of its own optimizer and data order.
  phase_key = jax.random.fold_in(runner.run.data_key, 1)
  for candidate, got in zip(candidates, trained):
    tx = sparsity.FixedMasks().wrap(retrain.retrain_optimizer(
        runner.config.train, "llr", pretrain, total_steps=2 * steps,
        peak_learning_rate=pretrain.max_lr * candidate.learning_rate,
        weight_decay=candidate.weight_decay), runner.start.masks)
    single = jax.tree.map(jnp.copy, state_lib.TrainState(  # Training donates its input.
        jnp.zeros((), jnp.int32), runner.start.params, runner.start.batch_stats,
        tx.init(runner.start.params)))
    epochs = engine.EpochRunner(single, runner.dataset, model=runner.model, tx=tx,
                                batch_size=BATCH)
    for epoch in range(2):
      single, _ = epochs(single, jax.random.fold_in(jax.random.fold_in(phase_key, 0), epoch))
    for a, b in zip(jax.tree.leaves(got.params), jax.tree.leaves(single.params)):
      np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)


def test_candidates_seeds_set_their_data_order(runner):
  differ, _ = _train_candidates(runner, [plan_lib.Candidate(s, 5e-4, 1.0, 1) for s in (0, 1)],
                                phase=2)
  # Another phase: each phase resumes from its own candidate checkpoints.
  same, _ = _train_candidates(runner, [plan_lib.Candidate(3, 5e-4, 1.0, 1)] * 2, phase=3)
  first = lambda s: np.asarray(s.params["conv0"]["kernel"])
  assert not np.allclose(first(differ[0]), first(differ[1]), atol=1e-4)
  np.testing.assert_array_equal(first(same[0]), first(same[1]))


def test_norm_drop_is_relative_to_all_parameters(runner):
  # ALLR's relative norm drop, as the reference computes it: the removed weights' L2 norm
  # over the norm of every parameter (kernels, biases, BatchNorm scales and shifts).
  current = runner.start
  plan = plan_lib.PhasePlan(phase=2, target_sparsity=0.75,
                            candidates=(plan_lib.Candidate(0, 5e-4, 1.0, 2),),
                            schedule="allr", retrain_epochs=2)
  masks, pruned, norm_drop = runner.run.prune(current, plan)
  before = [np.asarray(p, np.float64) for p in jax.tree.leaves(current.params)]
  after = [np.asarray(p, np.float64) for p in jax.tree.leaves(pruned)]
  removed = np.sqrt(sum(np.sum((a - b) ** 2) for a, b in zip(before, after)))
  every = np.sqrt(sum(np.sum(a ** 2) for a in before))
  kernels = np.sqrt(sum(np.sum(np.asarray(p, np.float64) ** 2) for _, p, m in
                        sparsity.masks.leaf_pairs(current.params, masks) if m is not None))
  assert norm_drop == pytest.approx(removed / every, rel=1e-5)
  assert removed / kernels > norm_drop * 1.001  # Not the prunable kernels' norm.


def test_allr_lower_bound_uses_each_candidates_own_length(runner):
  # With nothing removed, ALLR's peak is its lower bound min(e / E, 1) * maxLR, with e each
  # candidate's own retraining length (E = train.epochs = 4).
  candidates = (plan_lib.Candidate(0, 5e-4, 1.0, 1), plan_lib.Candidate(0, 5e-4, 1.0, 3),
                plan_lib.Candidate(0, 5e-4, 1.0, 8))
  plan = plan_lib.PhasePlan(phase=2, target_sparsity=0.75, candidates=candidates,
                            schedule="allr", retrain_epochs=2)
  assert runner.run.peak_scales(runner.start, plan, 0.0) == pytest.approx([0.25, 0.75, 1.0])
  llr = plan_lib.PhasePlan(phase=2, target_sparsity=0.75, candidates=candidates,
                           schedule="llr", retrain_epochs=2)
  assert runner.run.peak_scales(runner.start, llr, 0.0) == [1.0, 1.0, 1.0]


def _recalibrated(phase, member):
  """`member` with the BatchNorm statistics `_batch_statistics` gives (the cumulative mean)."""
  stats = _batch_statistics(phase, member)
  return evaluation_state(member.params, {f"bn{i}": {"mean": np.mean(stats[i][0], 0),
                                                     "var": np.mean(stats[i][1], 0)}
                                          for i in range(3)})


def test_recalibrating_all_evaluates_and_ranks_every_candidate_recalibrated(phase):
  # 'all' (the reference's): each candidate is recalibrated before it is evaluated, and
  # the validation accuracies that rank candidates are the recalibrated ones, not the
  # accuracies as trained (here scripted so that the untrained candidate would win).
  _, record = _run(phase, val=[0.2, 0.1, 0.9], evaluate=phase.make_evaluator("all"))
  test, val = phase.dataset.test, phase.dataset.val
  recalibrated = [_recalibrated(phase, m) for m in phase.members]
  accuracy = lambda s, split: evaluation.accuracy(phase.logits(s, split.x), split.y)
  assert [c["test_accuracy"] for c in record["candidates"]] == pytest.approx(
      [accuracy(s, test) for s in recalibrated], abs=1e-9)
  assert [c["test_accuracy"] for c in record["candidates"]] != pytest.approx(
      [accuracy(s, test) for s in phase.members], abs=1e-9)  # Really changed.
  val_recalibrated = [accuracy(s, val) for s in recalibrated]
  assert [c["val_accuracy"] for c in record["candidates"]] == pytest.approx(val_recalibrated)
  assert record["best_candidate"]["index"] == int(np.argmax(val_recalibrated)) != 2
  _, greedy = _run(phase, method="greedy", val=[0.2, 0.1, 0.9],
                   evaluate=phase.make_evaluator("all"))
  assert greedy["soup"]["ingredients"][0] == int(np.argmax(val_recalibrated))


def test_recalibrating_all_hands_on_the_one_model_recalibrated(phase):
  model, record = phase.make_evaluator("all")(
      engine.stack(phase.members[:1]), phase.masks, start_params=phase.start,
      val_accuracies=phase.val[:1], hparams=[{}], method="uniform")
  expected = _recalibrated(phase, phase.members[0])
  chex.assert_trees_all_close(model.batch_stats, expected.batch_stats, rtol=1e-4, atol=1e-5)
  chex.assert_trees_all_equal(model.params, phase.members[0].params)
  test = phase.dataset.test
  assert record["model"]["test_accuracy"] == pytest.approx(
      evaluation.accuracy(phase.logits(expected, test.x), test.y))


def test_without_recalibration_a_soup_keeps_its_candidates_mean_statistics(phase):
  soup, _ = _run(phase, evaluate=phase.make_evaluator("none"))
  chex.assert_trees_all_close(soup.batch_stats, jax.tree.map(
      lambda *s: np.mean(s, 0), *[m.batch_stats for m in phase.members]), rtol=1e-6)


def test_ema_recalibration_is_the_references_exponential_average(phase):
  # From reset statistics (mean 0, variance 1), each of the 5 batches moves them by 0.1
  # towards its own (PyTorch's BatchNorm with momentum 0.1); the synthetic data has no
  # augmentation, so the batches are those of the cumulative average.
  soup, _ = _run(phase, evaluate=phase.make_evaluator("soups", "ema"))
  stats = _batch_statistics(phase, soup)
  for i in range(3):
    mean, var = np.zeros_like(stats[i][0][0]), np.ones_like(stats[i][1][0])
    for batch_mean, batch_var in zip(*stats[i]):
      mean, var = 0.9 * mean + 0.1 * batch_mean, 0.9 * var + 0.1 * batch_var
    np.testing.assert_allclose(soup.batch_stats[f"bn{i}"]["mean"], mean, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(soup.batch_stats[f"bn{i}"]["var"], var, rtol=1e-4, atol=1e-5)


def test_worst_class_accuracy_and_distances_to_the_start(phase):
  soup, record = _run(phase)
  test = phase.dataset.test
  for k, (member, candidate) in enumerate(zip(phase.members, record["candidates"])):
    predicted = phase.logits(member, test.x).argmax(-1)
    per_class = [np.mean(predicted[test.y == c] == c) for c in np.unique(test.y)]
    assert candidate["test_worst_class_accuracy"] == pytest.approx(min(per_class))
    assert candidate["test_worst_class_accuracy"] < candidate["test_accuracy"]
    distance = np.sqrt(sum(np.sum((np.asarray(a, np.float64) - np.asarray(b, np.float64)) ** 2)
                           for a, b in zip(jax.tree.leaves(member.params),
                                           jax.tree.leaves(phase.start))))
    assert candidate["distance_to_start"] == pytest.approx(distance, rel=1e-6)
  soup_distance = np.sqrt(sum(np.sum((np.asarray(a, np.float64) - np.asarray(b)) ** 2)
                              for a, b in zip(jax.tree.leaves(soup.params),
                                              jax.tree.leaves(phase.start))))
  assert record["soup"]["distance_to_start"] == pytest.approx(soup_distance, rel=1e-6)
  predicted = phase.logits(soup, test.x).argmax(-1)
  assert record["soup"]["test_worst_class_accuracy"] == pytest.approx(
      min(np.mean(predicted[test.y == c] == c) for c in np.unique(test.y)))


def test_worst_class_accuracy_counts_only_classes_present():
  logits = np.eye(4)[[0, 0, 1, 1, 1, 3]]  # Predictions 0 0 1 1 1 3.
  labels = np.asarray([0, 1, 1, 1, 1, 3])  # Class 0: 1/1, class 1: 3/4, class 3: 1/1.
  assert evaluation.worst_class_accuracy(logits, labels) == pytest.approx(0.75)
  assert evaluation.evaluate_logits(logits, labels)["worst_class_accuracy"] == pytest.approx(0.75)
