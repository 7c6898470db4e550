"""Checkpoints: exact round trip; only provably damaged checkpoints are set aside (unreadable,
bit flips, non-finite values), while those of another run or layout are refused and kept, also
in a process that did not write them; non-finite states are never saved; a full disk."""

import errno
import json
import os
import shutil
import subprocess
import sys
import warnings

import chex
import jax.numpy as jnp
import numpy as np
import pytest

from sms_jax import checkpoints


def _state(value):
  return {"params": {"w": jnp.full((3, 2), value, jnp.float32)}, "step": jnp.int32(value)}


def test_round_trip_and_keep(tmp_path):
  ckpt = checkpoints.Checkpointer(str(tmp_path / "ck"), keep=2, identity="run")
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
  ckpt = checkpoints.Checkpointer(str(directory), keep=3, identity="run")
  for step in (1, 2):
    ckpt.save(step, _state(step), {"history": [step], "elapsed_s": 0.0})
  ckpt.close()
  for root, _, files in os.walk(directory / "2" / "state"):
    for name in files:  # Truncate every file of the latest state: a corrupt checkpoint.
      open(os.path.join(root, name), "w").close()
  ckpt = checkpoints.Checkpointer(str(directory), keep=3, identity="run")
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
  ckpt = checkpoints.Checkpointer(str(directory), keep=3, identity="run")
  ckpt.save(1, _state(1), {"history": [1], "elapsed_s": 0.0})
  ckpt.close()
  partial = directory / "2.orbax-checkpoint-tmp-1234567"
  (partial / "state").mkdir(parents=True)
  (partial / "state" / "manifest.ocdbt").write_bytes(b"\x00" * 10)
  ckpt = checkpoints.Checkpointer(str(directory), keep=3, identity="run")
  step, state, _ = ckpt.restore_latest(_state(0))
  assert step == 1
  chex.assert_trees_all_equal(state, _state(1))
  assert not partial.exists()
  ckpt.save(2, _state(2), {"history": [2], "elapsed_s": 0.0})  # The resumed run saves step 2.
  assert ckpt.restore_latest(_state(0))[0] == 2
  ckpt.close()


def test_a_state_of_another_layout_is_refused_and_kept(tmp_path):
  directory = tmp_path / "ck"
  ckpt = checkpoints.Checkpointer(str(directory), keep=3, identity="run")
  ckpt.save(1, _state(1), {"history": [], "elapsed_s": 0.0})
  other = {**_state(0), "mask": jnp.zeros((3, 2))}
  with pytest.raises(checkpoints.CheckpointError, match="another state layout .* mask"):
    ckpt.restore_latest(other)
  wider = {"params": {"w": jnp.zeros((4, 2))}, "step": jnp.int32(0)}
  with pytest.raises(checkpoints.CheckpointError,
                     match=r"saved \(3, 2\) float32, expected \(4, 2\) float32"):
    ckpt.restore_latest(wider)
  assert ckpt.restore_latest(_state(0))[0] == 1  # Nothing was discarded.
  ckpt.close()


def test_no_readable_checkpoint_is_an_error(tmp_path):
  directory = tmp_path / "ck"
  ckpt = checkpoints.Checkpointer(str(directory), keep=3, identity="run")
  ckpt.save(1, _state(1), {"history": [], "elapsed_s": 0.0})
  ckpt.close()
  shutil.rmtree(directory / "1" / "state")
  ckpt = checkpoints.Checkpointer(str(directory), keep=3, identity="run")
  with pytest.warns(UserWarning), pytest.raises(checkpoints.CheckpointError, match="none of"):
    ckpt.restore_latest(_state(0))
  assert ckpt.restore_latest(_state(0)) is None  # Set aside: the next run starts afresh.


def _write_in_another_process(directory, identity="run", shape=(3, 2)):
  """Saves `_state(1)`-like checkpoints 1 and 2 from a fresh Python process."""
  code = (f"import jax.numpy as jnp; from sms_jax import checkpoints; "
          f"c = checkpoints.Checkpointer({str(directory)!r}, 3, {identity!r}); "
          f"[c.save(s, {{'params': {{'w': jnp.full({shape}, s, jnp.float32)}}, "
          f"'step': jnp.int32(s)}}, {{'history': [s], 'elapsed_s': 0.0}}) for s in (1, 2)]; "
          "c.close()")
  subprocess.run([sys.executable, "-c", code], check=True, capture_output=True)


def test_another_layout_is_refused_and_kept_in_a_process_that_did_not_write_it(tmp_path):
  """The layout is checked from the checkpoint's own record, not from the writer's memory."""
  directory = tmp_path / "ck"
  _write_in_another_process(directory, shape=(4, 2))
  ckpt = checkpoints.Checkpointer(str(directory), keep=3, identity="run")
  with pytest.raises(checkpoints.CheckpointError,
                     match=r"params/w: saved \(4, 2\) float32, expected \(3, 2\) float32"):
    ckpt.restore_latest(_state(0))
  assert sorted(os.listdir(directory)) == ["1", "2"]
  assert not os.path.exists(str(directory) + ".corrupt")
  ckpt.close()
  step, state, meta = checkpoints.Checkpointer(str(directory), 3, "run").restore_latest(
      {"params": {"w": jnp.zeros((4, 2))}, "step": jnp.int32(0)})
  assert step == 2 and meta["history"] == [2] and float(state["params"]["w"][0, 0]) == 2.0


def test_another_runs_checkpoints_are_refused_and_kept(tmp_path):
  directory = tmp_path / "ck"
  _write_in_another_process(directory, identity="seed-0-run")
  ckpt = checkpoints.Checkpointer(str(directory), keep=3, identity="seed-1-run")
  with pytest.raises(checkpoints.CheckpointError, match="belongs to another run"):
    ckpt.restore_latest(_state(0))
  assert sorted(os.listdir(directory)) == ["1", "2"]


def test_a_checkpoint_without_integrity_record_is_refused_and_kept(tmp_path):
  directory = tmp_path / "ck"
  ckpt = checkpoints.Checkpointer(str(directory), keep=3, identity="run")
  ckpt.save(1, _state(1), {"history": [], "elapsed_s": 0.0})
  ckpt.close()
  shutil.rmtree(directory / "1" / "integrity")  # As written by an older sms_jax.
  with pytest.raises(checkpoints.CheckpointError, match="no integrity record"):
    checkpoints.Checkpointer(str(directory), 3, "run").restore_latest(_state(0))
  assert os.path.isdir(directory / "1" / "state")


def _data_files(step_dir):
  return [os.path.join(root, name) for root, _, names in os.walk(step_dir / "state")
          for name in names if os.sep + "d" + os.sep in os.path.join(root, name)]


def test_a_bit_flip_in_the_data_is_detected_and_the_previous_checkpoint_used(tmp_path):
  directory = tmp_path / "ck"
  big = lambda v: {"params": {"w": jnp.arange(2000, dtype=jnp.float32) * v}}
  ckpt = checkpoints.Checkpointer(str(directory), keep=3, identity="run")
  for step in (1, 2):
    ckpt.save(step, big(step), {"history": [step], "elapsed_s": 0.0})
  ckpt.close()
  data_file = max(_data_files(directory / "2"), key=os.path.getsize)
  content = bytearray(open(data_file, "rb").read())
  content[len(content) // 2] ^= 0x10  # Restores without error, to other values.
  open(data_file, "wb").write(bytes(content))
  ckpt = checkpoints.Checkpointer(str(directory), keep=3, identity="run")
  with pytest.warns(UserWarning,
                    match="checkpoint 2 .* is damaged .the values of params/w do not match"):
    step, state, _ = ckpt.restore_latest(big(0))
  assert step == 1
  chex.assert_trees_all_equal(state, big(1))
  assert os.path.isdir(str(directory) + ".corrupt/2")


def test_bit_flips_are_caught_wherever_they_land(tmp_path):
  """Bytes spread over the data files flipped in turn: the checkpoint is set aside, or (a byte
  the values do not depend on) restores the saved values; never other values."""
  directory = tmp_path / "ck"
  big = {"params": {"w": jnp.arange(2000, dtype=jnp.float32)}}
  ckpt = checkpoints.Checkpointer(str(directory), keep=3, identity="run")
  ckpt.save(1, big, {"history": [], "elapsed_s": 0.0})
  ckpt.close()
  saved, kept = directory / "1", tmp_path / "kept"
  shutil.copytree(saved, kept)
  outcomes = {"set aside": 0, "same values": 0}
  for data_file in _data_files(saved):
    original = open(data_file, "rb").read()
    for position in np.linspace(0, len(original) - 1, 12).astype(int):
      content = bytearray(original)
      content[position] ^= 0x01
      open(data_file, "wb").write(bytes(content))
      ckpt = checkpoints.Checkpointer(str(directory), keep=3, identity="run")
      with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
          _, state, _ = ckpt.restore_latest(big)
        except checkpoints.CheckpointError:  # The only checkpoint was set aside.
          assert any("moved it to" in str(w.message) for w in caught)
          outcomes["set aside"] += 1
        else:
          chex.assert_trees_all_equal(state, big)
          outcomes["same values"] += 1
      ckpt.close()
      shutil.rmtree(directory)
      shutil.rmtree(str(directory) + ".corrupt", ignore_errors=True)
      shutil.copytree(kept, saved)
  assert outcomes["set aside"] >= 12, outcomes


def _edit_json(path, edit):
  with open(path) as f:
    content = json.load(f)
  edit(content)
  with open(path, "w") as f:
    json.dump(content, f)


def test_edited_metadata_is_detected_and_the_previous_checkpoint_used(tmp_path):
  directory = tmp_path / "ck"
  ckpt = checkpoints.Checkpointer(str(directory), keep=3, identity="run")
  for step in (1, 2):
    ckpt.save(step, _state(step), {"history": [step], "elapsed_s": 0.5})
  ckpt.close()
  _edit_json(directory / "2" / "meta" / "metadata", lambda meta: meta.update(elapsed_s=0.25))
  with pytest.warns(UserWarning, match="checkpoint 2 .*its metadata do not match"):
    step, _, meta = checkpoints.Checkpointer(str(directory), 3, "run").restore_latest(_state(0))
  assert (step, meta) == (1, {"history": [1], "elapsed_s": 0.5})


def test_an_incomplete_integrity_record_is_damage_and_another_format_is_refused(tmp_path):
  directory = tmp_path / "ck"
  ckpt = checkpoints.Checkpointer(str(directory), keep=3, identity="run")
  for step in (1, 2, 3):
    ckpt.save(step, _state(step), {"history": [step], "elapsed_s": 0.0})
  ckpt.close()
  _edit_json(directory / "3" / "integrity" / "metadata", lambda record: record.pop("crc32"))
  _edit_json(directory / "2" / "integrity" / "metadata", lambda record: record.update(format=2))
  ckpt = checkpoints.Checkpointer(str(directory), keep=3, identity="run")
  with pytest.warns(UserWarning, match="checkpoint 3 .* integrity record is incomplete"), \
      pytest.raises(checkpoints.CheckpointError, match="checkpoint 2 .* integrity format 2"):
    ckpt.restore_latest(_state(0))
  assert sorted(os.listdir(directory)) == ["1", "2"]  # Format 2 is kept for its version.


def test_non_finite_states_are_never_saved(tmp_path):
  directory = tmp_path / "ck"
  ckpt = checkpoints.Checkpointer(str(directory), keep=3, identity="run")
  ckpt.save(1, _state(1), {"history": [], "elapsed_s": 0.0})
  bad = {"params": {"w": jnp.full((3, 2), jnp.nan)}, "step": jnp.int32(2)}
  with pytest.raises(checkpoints.NonFiniteStateError, match="params/w"):
    ckpt.save(2, bad, {"history": [], "elapsed_s": 0.0})
  assert ckpt.restore_latest(_state(0))[0] == 1
  assert sorted(os.listdir(directory)) == ["1"]
  ckpt.close()


def test_a_non_finite_checkpoint_is_skipped_for_the_newest_finite_one(tmp_path, monkeypatch):
  """As an older version could write: resuming falls back to the last finite checkpoint."""
  directory = tmp_path / "ck"
  ckpt = checkpoints.Checkpointer(str(directory), keep=3, identity="run")
  ckpt.save(1, _state(1), {"history": [1], "elapsed_s": 0.0})
  with monkeypatch.context() as patch:
    patch.setattr(checkpoints, "non_finite_paths", lambda leaves: [])
    ckpt.save(2, {"params": {"w": jnp.full((3, 2), jnp.inf)}, "step": jnp.int32(2)},
              {"history": [2], "elapsed_s": 0.0})
  ckpt.close()
  ckpt = checkpoints.Checkpointer(str(directory), keep=3, identity="run")
  with pytest.warns(UserWarning, match="checkpoint 2 .*non-finite values in params/w"):
    step, state, _ = ckpt.restore_latest(_state(0))
  assert step == 1
  chex.assert_trees_all_equal(state, _state(1))
  ckpt.close()


@pytest.mark.parametrize("error", [
    OSError(errno.ENOSPC, "No space left on device"),
    ValueError("RESOURCE_EXHAUSTED: Failed writing: \"x\": No space left on device "
               "[os_error_code='28']"),  # How orbax's TensorStore reports it.
])
def test_a_full_disk_keeps_the_earlier_checkpoints(tmp_path, monkeypatch, error):
  directory = tmp_path / "ck"
  ckpt = checkpoints.Checkpointer(str(directory), keep=3, identity="run")
  ckpt.save(1, _state(1), {"history": [1], "elapsed_s": 0.0})

  def fail_midway(step, args):
    os.makedirs(directory / f"{step}.orbax-checkpoint-tmp-1" / "state")
    raise error

  monkeypatch.setattr(ckpt._manager, "save", fail_midway)
  with pytest.raises(checkpoints.StorageFullError, match="no space left .* checkpoint 2"):
    ckpt.save(2, _state(2), {"history": [2], "elapsed_s": 0.0})
  assert sorted(os.listdir(directory)) == ["1"]  # The partial step is gone.
  ckpt.close()
  assert checkpoints.Checkpointer(str(directory), 3, "run").restore_latest(_state(0))[0] == 1


def test_other_errors_are_not_taken_for_a_full_disk():
  assert not checkpoints.is_storage_full(OSError(errno.EACCES, "Permission denied"))
  assert not checkpoints.is_storage_full(ValueError("os_error_code='13'"))
  assert checkpoints.is_storage_full(OSError(errno.EDQUOT, "Disk quota exceeded"))
