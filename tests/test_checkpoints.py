"""Checkpoints: exact round trip, and falling back past an unreadable latest checkpoint."""

import os
import shutil

import chex
import jax.numpy as jnp
import pytest

from sms_jax import checkpoints


def _state(value):
  return {"params": {"w": jnp.full((3, 2), value, jnp.float32)}, "step": jnp.int32(value)}


def test_round_trip_and_keep(tmp_path):
  ckpt = checkpoints.Checkpointer(str(tmp_path / "ck"), keep=2)
  assert ckpt.restore_latest(_state(0)) is None
  for step in (1, 2, 3):
    ckpt.save(step, _state(step), {"history": [step], "elapsed_s": 0.5})
  step, state, meta = ckpt.restore_latest(_state(0))
  assert step == 3 and meta == {"history": [3], "elapsed_s": 0.5}
  chex.assert_trees_all_equal(state, _state(3))
  assert sorted(os.listdir(tmp_path / "ck")) == ["2", "3"]
  ckpt.close()


def test_unreadable_latest_falls_back_with_a_warning(tmp_path):
  directory = tmp_path / "ck"
  ckpt = checkpoints.Checkpointer(str(directory), keep=3)
  for step in (1, 2):
    ckpt.save(step, _state(step), {"history": [step], "elapsed_s": 0.0})
  ckpt.close()
  for root, _, files in os.walk(directory / "2" / "state"):
    for name in files:  # Truncate every file of the latest state: a corrupt checkpoint.
      open(os.path.join(root, name), "w").close()
  ckpt = checkpoints.Checkpointer(str(directory), keep=3)
  with pytest.warns(UserWarning, match="checkpoint 2 .* is unreadable"):
    step, state, _ = ckpt.restore_latest(_state(0))
  assert step == 1
  chex.assert_trees_all_equal(state, _state(1))
  assert os.path.isdir(str(directory) + ".corrupt/2")
  ckpt.save(2, _state(5), {"history": [], "elapsed_s": 0.0})  # The step can be written anew.
  ckpt.close()


def test_a_save_killed_midway_is_ignored(tmp_path):
  """Orbax writes into a temporary folder and renames it when complete: a kill leaves only that."""
  directory = tmp_path / "ck"
  ckpt = checkpoints.Checkpointer(str(directory), keep=3)
  ckpt.save(1, _state(1), {"history": [1], "elapsed_s": 0.0})
  ckpt.close()
  partial = directory / "2.orbax-checkpoint-tmp-1234567"
  (partial / "state").mkdir(parents=True)
  (partial / "state" / "manifest.ocdbt").write_bytes(b"\x00" * 10)
  ckpt = checkpoints.Checkpointer(str(directory), keep=3)
  step, state, _ = ckpt.restore_latest(_state(0))
  assert step == 1
  chex.assert_trees_all_equal(state, _state(1))
  assert not partial.exists()
  ckpt.save(2, _state(2), {"history": [2], "elapsed_s": 0.0})  # The resumed run saves step 2.
  assert ckpt.restore_latest(_state(0))[0] == 2
  ckpt.close()


def test_a_state_of_another_layout_is_refused_and_kept(tmp_path):
  directory = tmp_path / "ck"
  ckpt = checkpoints.Checkpointer(str(directory), keep=3)
  ckpt.save(1, _state(1), {"history": [], "elapsed_s": 0.0})
  other = {**_state(0), "mask": jnp.zeros((3, 2))}
  with pytest.raises(checkpoints.CheckpointError, match="another state layout .* mask"):
    ckpt.restore_latest(other)
  wider = {"params": {"w": jnp.zeros((4, 2))}, "step": jnp.int32(0)}
  with pytest.raises(checkpoints.CheckpointError, match=r"saved \(3, 2\), expected \(4, 2\)"):
    ckpt.restore_latest(wider)
  assert ckpt.restore_latest(_state(0))[0] == 1  # Nothing was discarded.
  ckpt.close()


def test_no_readable_checkpoint_is_an_error(tmp_path):
  directory = tmp_path / "ck"
  ckpt = checkpoints.Checkpointer(str(directory), keep=3)
  ckpt.save(1, _state(1), {"history": [], "elapsed_s": 0.0})
  ckpt.close()
  shutil.rmtree(directory / "1" / "state")
  ckpt = checkpoints.Checkpointer(str(directory), keep=3)
  with pytest.warns(UserWarning), pytest.raises(checkpoints.CheckpointError, match="none of"):
    ckpt.restore_latest(_state(0))
  assert ckpt.restore_latest(_state(0)) is None  # Set aside: the next run starts afresh.
