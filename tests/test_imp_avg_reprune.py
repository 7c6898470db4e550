"""imp_avg_reprune: lineages with different masks, their denser average, re-pruned to exactly
the phase's sparsity and retrained; the mask arithmetic on scripted masks; a refusal."""

import jax.numpy as jnp
import pytest

from conftest import make_tiny_config
from sms_jax import config as config_lib, experiment
from sms_jax.strategies import imp_avg_reprune


def test_union_and_overlap_of_scripted_masks():
  stacked = {"a": {"kernel": jnp.asarray([[1, 1, 0, 0], [1, 0, 1, 0], [1, 1, 0, 0]], bool)},
             "b": {"bias": None}}
  assert imp_avg_reprune.union(stacked)["a"]["kernel"].tolist() == [True, True, True, False]
  assert imp_avg_reprune.union(stacked)["b"]["bias"] is None
  # Pairs (0, 1), (0, 2), (1, 2) share 1, 2, 1 of their 2 weights; each pair counted twice.
  assert imp_avg_reprune.mask_overlap(stacked) == pytest.approx((0.5 + 1.0 + 0.5) / 3)


def _config():
  """3 dense epochs, then 2 phases to 90%: 2 lineages diverge 1 epoch, prune themselves and
  retrain 1; their average is re-pruned and retrained 1 epoch."""
  config = make_tiny_config()
  config.strategy, config.soup.m = "imp_avg_reprune", 2
  config.prune.n_phases, config.prune.goal_sparsity = 2, 0.9
  config.retrain.epochs_per_phase = 1
  config.avg_reprune.diverge_epochs, config.avg_reprune.retrain_epochs = 1, 1
  config.ood.severity = 0
  return config


@pytest.fixture(scope="module")
def run(tmp_path_factory):
  return experiment.run(_config(), str(tmp_path_factory.mktemp("avg_reprune")))


def test_lineages_differ_their_average_is_denser_and_is_pruned_back_to_the_target(run):
  for k, phase in enumerate(run["phases"], 1):
    target, layers = phase["target_sparsity"], phase["layers"]
    assert target == pytest.approx(1 - 0.1 ** (k / 2))
    size = sum(layer["size"] for layer in layers)
    alive = round((1 - target) * size)
    lineages = phase["lineages"]
    # Each lineage pruned itself to the target, after 1 epoch (7 steps), to masks that differ.
    assert lineages["sparsity"] == [1 - alive / size] * 2
    assert lineages["updater"]["step"] == 7
    assert lineages["mask_overlap"] < 1.0
    # The average lives on the union of the 2 masks: |M1| + |M2| - |M1 and M2| weights.
    union = 2 * alive - lineages["mask_overlap"] * alive
    assert phase["average"]["sparsity"] == pytest.approx(1 - union / size, abs=1e-9)
    assert phase["average"]["sparsity"] < target
    # Pruned back to exactly the target, and the retrained model stays inside that mask.
    assert phase["repruned"]["sparsity"] == 1 - alive / size
    assert sum(layer["alive"] for layer in layers) == alive
    assert all(layer["nonzero"] <= layer["alive"] for layer in layers)
    assert [r["epoch"] for r in phase["history"]] == [1, 2, 3]  # Lineages 2, retraining 1.
    assert phase["model"]["hparams"]["retrain_epochs"] == 1
  assert run["final"]["sparsity"] == pytest.approx(0.9, abs=1e-4)


def test_one_lineage_is_refused_in_one_line():
  config = _config()
  config.soup.m = 1
  with pytest.raises(config_lib.ConfigError) as info:
    config_lib.validate(config)
  assert str(info.value) == ("config key soup.m = 1 is not allowed with strategy "
                             "'imp_avg_reprune'; allowed: 2 or more (the lineages it averages)")
