"""Resumable runs: an orbax CheckpointManager holding the train state and JSON metadata.

Checkpoints are written synchronously (a killed run never leaves a half-written step:
orbax writes into a temporary folder and renames it when complete; leftover temporary
folders are removed when the next run opens the directory). A checkpoint that
exists but cannot be read is moved aside to `<directory>.corrupt/<step>` with a warning, and
the previous one is restored instead.
"""

import os
import shutil
from typing import Any
import warnings

import jax
import orbax.checkpoint as ocp


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
    """Writes `state` (a pytree of arrays) and `meta` (JSON-serialisable) as `step`."""
    self._manager.save(step, args=ocp.args.Composite(state=ocp.args.StandardSave(state),
                                                     meta=ocp.args.JsonSave(meta)))

  def restore_latest(self, like: Any) -> tuple[int, Any, dict[str, Any]] | None:
    """The newest readable checkpoint as `(step, state, meta)`, or None if there is none.

    Args:
      like: a pytree with the structure, shapes and dtypes of the saved state.
    """
    abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, like)
    for step in sorted(self._manager.all_steps(), reverse=True):
      try:
        restored = self._manager.restore(step, args=ocp.args.Composite(
            state=ocp.args.StandardRestore(abstract), meta=ocp.args.JsonRestore()))
      except Exception as error:  # pylint: disable=broad-except
        self._set_aside(step, error)
        continue
      return step, restored.state, dict(restored.meta)
    return None

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
    self._manager.close()
