"""A standalone sparsity updater as a strategy: SET trains inside a start mask's density."""

import os

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
import pytest

from sms_jax import data, experiment, models, pretraining, sparsity
from sms_jax import config as config_lib


def test_set_keeps_the_start_density_and_moves_the_mask(tiny_config, tmp_path):
  config = tiny_config
  config.strategy = "set"
  config.init_mask.update(distribution="erk", density=0.2)
  config.regrow.update_every = 3  # 7 steps an epoch: 6 updates in 3 epochs.
  results = experiment.run(config, str(tmp_path))
  start = results["init_mask"]
  sparsity_at_start = 1 - start["achieved_density"]
  assert results["final"]["sparsity"] == pytest.approx(sparsity_at_start, abs=1e-12)
  assert [r["sparsity"] for r in results["history"]] == pytest.approx([sparsity_at_start] * 3)
  assert [l["alive"] for l in results["layers"]] == [l["nonzero"] for l in start["layers"]]
  assert results["updater"] == {"name": "set", "update_every": 3, "end_step": 21,
                                "drop_fraction": 0.3, "decay": "constant"}
  assert sorted(os.listdir(tmp_path / "plots")) == ["layer_sparsity.png", "training.png"]
  # The mask moved: the final one keeps the counts, not the positions, of the start mask.
  model = models.create_model("cnn1d", 10)
  params = model.init(jax.random.key(0), jnp.zeros((1, 40, 1)))
  start_masks, _ = pretraining.start_masks(config, model, params["params"],
                                           params["batch_stats"], data.load(config.dataset))
  with ocp.CheckpointManager(str(tmp_path / "checkpoints" / "pretrain")) as manager:
    saved = manager.restore(manager.latest_step(), args=ocp.args.Composite(
        state=ocp.args.StandardRestore()))["state"]
  final_masks = saved["opt_state"]["masks"]
  moved = [int(np.sum(np.asarray(final_masks[name]["kernel"]) & ~np.asarray(
      start_masks[name]["kernel"]))) for name in ("conv1", "dense")]
  assert all(count > 0 for count in moved)
  kernel = np.asarray(saved["params"]["dense"]["kernel"])
  assert (kernel[~np.asarray(final_masks["dense"]["kernel"])] == 0).all()


def test_set_needs_a_sparse_start(tiny_config):
  tiny_config.strategy = "set"
  with pytest.raises(config_lib.ConfigError, match="a sparse start whose density it keeps"):
    config_lib.validate(tiny_config)


def test_standalone_updaters_are_strategies():
  from sms_jax import strategies  # pylint: disable=g-import-not-at-top
  standalone = {n for n, r in sparsity.UPDATERS.items() if r.standalone}
  assert {"gmp", "set"} <= standalone <= set(strategies.STRATEGIES)
