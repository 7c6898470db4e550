"""Resumable runs: an orbax CheckpointManager holding the train state and JSON metadata.

Checkpoints are written synchronously (a killed run never leaves a half-written step:
orbax writes into a temporary folder and renames it when complete; leftover temporary
folders are removed when the next run opens the directory). A checkpoint whose files cannot
be read is moved aside to `<directory>.corrupt/<step>` with a warning, and the previous one is
restored instead. A readable checkpoint of another state layout (other model or optimizer)
is an error, never a reason to discard it.
"""

import os
import shutil
from typing import Any
import warnings

import jax
import orbax.checkpoint as ocp

from sms_jax import parallel


class CheckpointError(ValueError):
  """The checkpoints in a directory cannot be used to resume this run."""


def _layout(tree: Any) -> dict[tuple[str, ...], tuple[int, ...]]:
  """{leaf path as names: shape} of a pytree of arrays, array metadata or shape structs."""
  name = lambda k: str(getattr(k, "key", getattr(k, "name", getattr(k, "idx", k))))
  return {tuple(map(name, path)): tuple(leaf.shape)
          for path, leaf in jax.tree_util.tree_leaves_with_path(tree)}


class Checkpointer:
  """Saves `(state, meta)` pairs by step; restores the newest readable one."""

  def __init__(self, directory: str, keep: int):
    self.directory = os.path.abspath(directory)
    self._keep = keep
    self._manager = self._open()

  def _open(self) -> ocp.CheckpointManager:
    options = ocp.CheckpointManagerOptions(max_to_keep=self._keep, create=True,
                                           enable_async_checkpointing=False,
                                           cleanup_tmp_directories=True)
    return ocp.CheckpointManager(self.directory, options=options)

  def save(self, step: int, state: Any, meta: dict[str, Any]) -> None:
    """Writes `state` (a pytree of arrays) and `meta` (JSON-serialisable) as `step`.

    With several processes every process calls this with the same values.
    """
    state = parallel.global_arrays(state)
    self._manager.save(step, args=ocp.args.Composite(state=ocp.args.StandardSave(state),
                                                     meta=ocp.args.JsonSave(meta)))

  def restore_latest(self, like: Any) -> tuple[int, Any, dict[str, Any]] | None:
    """The newest readable checkpoint as `(step, state, meta)`, or None if there is none.

    Args:
      like: a pytree with the structure, shapes and dtypes of the saved state.
    Raises:
      CheckpointError: a checkpoint holds a state of another layout than `like`, or there
        were checkpoints and none of them could be read.
    """
    abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, like)
    steps = sorted(self._manager.all_steps(), reverse=True)
    for step in steps:
      self._check_layout(step, abstract)
      try:
        restored = self._manager.restore(step, args=ocp.args.Composite(
            state=ocp.args.StandardRestore(abstract), meta=ocp.args.JsonRestore()))
      except Exception as error:  # pylint: disable=broad-except
        self._set_aside(step, error)
        continue
      return step, restored.state, dict(restored.meta)
    if steps:
      raise CheckpointError(f"none of the checkpoints {steps} in {self.directory} could be read "
                            f"(moved to {self.directory}.corrupt); run again to start afresh")
    return None

  def _check_layout(self, step: int, abstract: Any) -> None:
    """Raises CheckpointError if `step` is readable but holds another state layout."""
    try:
      saved = _layout(self._manager.item_metadata(step)["state"].tree)
    except Exception:  # pylint: disable=broad-except
      return  # Unreadable metadata: restoring fails next and sets the checkpoint aside.
    expected = _layout(abstract)
    if saved != expected:
      differing = sorted(k for k in set(saved) | set(expected) if saved.get(k) != expected.get(k))
      raise CheckpointError(
          f"checkpoint {step} in {self.directory} holds another state layout (differs at "
          f"{'/'.join(differing[0])}: saved {saved.get(differing[0])}, expected "
          f"{expected.get(differing[0])}); use another --workdir")

  def _set_aside(self, step: int, error: Exception) -> None:
    aside = os.path.join(self.directory + ".corrupt", str(step))
    warnings.warn(f"checkpoint {step} in {self.directory} is unreadable "
                  f"({type(error).__name__}: {str(error).splitlines()[0][:200]}); moved it to "
                  f"{aside} and trying the previous one")
    shutil.rmtree(aside, ignore_errors=True)
    os.makedirs(os.path.dirname(aside), exist_ok=True)
    shutil.move(os.path.join(self.directory, str(step)), aside)
    self._manager.close()
    self._manager = self._open()

  def close(self) -> None:
    """Releases the manager (no pending writes: saving is synchronous)."""
    self._manager.close()
