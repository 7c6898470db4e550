"""Resumable runs: an orbax CheckpointManager holding the train state, JSON metadata and an
integrity record per step.

Checkpoints are written synchronously: orbax writes into a temporary folder and renames it
when complete, so a killed run never leaves a half-written step (leftover temporary folders
are removed when the next run opens the directory). Beside the state and the metadata each
checkpoint holds its integrity record: the identity of the run that wrote it (a digest of its
config), the state's layout (leaf paths, shapes, dtypes) and a checksum of each leaf's values.

Restoring takes the newest usable checkpoint:
- one of another run, of another layout, or written before integrity records existed is
  refused with a CheckpointError and left in place;
- one that is provably damaged (its layout is the expected one but its files cannot be read,
  or its values do not match their checksums) or that holds non-finite values is moved aside to
  `<directory>.corrupt/<step>` with a warning, and the previous one is tried.
Saving refuses a state with NaN or infinite values (NonFiniteStateError), and a full disk
raises StorageFullError with the earlier checkpoints intact.
"""

import contextlib
import errno
import gc
import json
import logging
import os
import shutil
import sys
import tempfile
import threading
import time
from typing import Any, Callable, Iterator
import warnings
import zlib

import jax
from jax.experimental import multihost_utils
import numpy as np
import orbax.checkpoint as ocp

from sms_jax import parallel
from sms_jax.sparsity.masks import path_name

_FULL_DISK_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)
_INTEGRITY_FORMAT = 1


class CheckpointError(ValueError):
  """The checkpoints in a directory cannot be used to resume this run."""


class NonFiniteStateError(ValueError):
  """A state to be saved holds NaN or infinite values.

  Attributes:
    paths: the leaf paths ('params/Dense_0/kernel') holding them.
  """

  def __init__(self, paths: list[str]):
    super().__init__(f"non-finite values in {', '.join(paths[:3])}"
                     f"{f' and {len(paths) - 3} more' if len(paths) > 3 else ''}")
    self.paths = paths


class StorageFullError(OSError):
  """The disk (or quota) is full; the checkpoints written before are intact."""


def _host_leaves(tree: Any) -> list[tuple[str, np.ndarray]]:
  """[(leaf path, whole value on the host)] (`parallel.to_host`: collective)."""
  return [(path_name(path), leaf)
          for path, leaf in jax.tree_util.tree_leaves_with_path(parallel.to_host(tree))]


def non_finite_paths(leaves: list[tuple[str, np.ndarray]]) -> list[str]:
  """The paths of those inexact leaves of `_host_leaves(...)` holding NaN or infinity."""
  return [name for name, value in leaves
          if np.issubdtype(value.dtype, np.inexact) and not np.isfinite(value).all()]


def _checksums(leaves: list[tuple[str, np.ndarray]]) -> dict[str, int]:
  """{leaf path: CRC-32 of its bytes} (it detects every burst of up to 32 flipped bits, and
  other damage but for a chance of 2**-32, at about 3 GB/s)."""
  return {name: zlib.crc32(np.ascontiguousarray(value).reshape(-1).view(np.uint8))
          for name, value in leaves}


def _mismatches(leaves: list[tuple[str, np.ndarray]], meta: dict[str, Any],
                integrity: dict[str, Any]) -> list[str]:
  """The leaves of `_host_leaves(...)` (and 'its metadata') whose checksums are not the ones
  `integrity` recorded."""
  recorded = integrity.get("crc32", {})
  damaged = [name for name, crc in _checksums(leaves).items() if crc != recorded.get(name)]
  if _meta_checksum(meta) != integrity.get("meta_crc32"):
    damaged.append("its metadata")
  return damaged


def state_checksum(state: Any) -> str:
  """A digest of a pytree's values (8 hex digits): the CRC-32 of its leaves' checksums."""
  return f"{zlib.crc32(json.dumps(_checksums(_host_leaves(state)), sort_keys=True).encode()):08x}"


def _meta_checksum(meta: dict[str, Any]) -> int:
  """CRC-32 of `meta` as canonical JSON."""
  return zlib.crc32(json.dumps(meta, sort_keys=True).encode())


def _layout(tree: Any) -> dict[str, list[Any]]:
  """{leaf path: [shape, dtype]} of a pytree of arrays or shape structs."""
  return {path_name(path): [list(leaf.shape), str(leaf.dtype)]
          for path, leaf in jax.tree_util.tree_leaves_with_path(tree)}


def is_storage_full(error: BaseException) -> bool:
  """True for an error of a full disk or quota (from Python or from orbax's TensorStore)."""
  if isinstance(error, OSError) and error.errno in _FULL_DISK_ERRNOS:
    return True
  return any(f"os_error_code='{code}'" in str(error) for code in _FULL_DISK_ERRNOS)


@contextlib.contextmanager
def _stderr_held_back(drop_if: Callable[[Exception], bool]) -> Iterator[None]:
  """Holds back what any thread (C++ included) writes to stderr while the block runs, and
  writes it out after, unless the block raised an error for which `drop_if` is true (orbax
  reports a failed write from each of its threads, in tracebacks)."""
  sys.stderr.flush()
  held = (os.fdopen(os.memfd_create("stderr"), "w+b") if hasattr(os, "memfd_create")
          else tempfile.TemporaryFile())
  real = os.dup(2)
  os.dup2(held.fileno(), 2)
  drop = False
  try:
    yield
  except Exception as error:  # pylint: disable=broad-except
    drop = drop_if(error)
    if drop:
      _wait_until_quiet(held.fileno())
    raise
  finally:
    sys.stderr.flush()
    os.dup2(real, 2)
    os.close(real)
    if not drop:
      held.seek(0)
      os.write(2, held.read())
    held.close()


def _wait_until_quiet(fd: int, quiet_s: float = 0.3, at_most_s: float = 5.0) -> None:
  """Waits until nothing was written to `fd` for `quiet_s` seconds (at most `at_most_s`)."""
  size, deadline = -1, time.monotonic() + at_most_s
  while time.monotonic() < deadline and os.fstat(fd).st_size != size:
    size = os.fstat(fd).st_size
    time.sleep(quiet_s)


_PARTIAL_RESTORE_NOTE = "was found in the checkpoint, but could not"


@contextlib.contextmanager
def _partial_restore_notes_dropped() -> Iterator[None]:
  """Drops orbax's warning that an item of a step 'was found in the checkpoint, but could not
  be restored' while the block runs: restoring some of a step's items (its integrity record
  first, then the state and metadata) is what resuming means to do. Other messages pass."""
  logger = logging.getLogger("absl")  # Orbax logs through absl.
  keep = lambda record: _PARTIAL_RESTORE_NOTE not in record.getMessage()
  logger.addFilter(keep)
  try:
    yield
  finally:
    logger.removeFilter(keep)


class Checkpointer:
  """Saves `(state, meta)` pairs by step; restores the newest usable one."""

  def __init__(self, directory: str, keep: int | None, identity: str):
    """Keeps the newest `keep` steps (None: all of them). `identity` names the run (e.g.
    `config.run_identity(config)`): a checkpoint written under another identity is refused."""
    self.directory = os.path.abspath(directory)
    self.identity = identity
    self._keep = keep
    self._opened = None

  @property
  def _manager(self) -> ocp.CheckpointManager:
    """The orbax manager, opened on first use (and again after `_reopen`)."""
    if self._opened is None:
      options = ocp.CheckpointManagerOptions(max_to_keep=self._keep, create=True,
                                             enable_async_checkpointing=False,
                                             cleanup_tmp_directories=True)
      self._opened = ocp.CheckpointManager(self.directory, options=options)
    return self._opened

  def _reopen(self) -> None:
    """Closes the manager; the next use opens it afresh, rereading the directory. (Opening
    starts a background cleanup that must not overlap the interpreter's exit.)"""
    if self._opened is not None:
      self._opened.close()
      self._opened = None

  def save(self, step: int, state: Any, meta: dict[str, Any]) -> None:
    """Writes `state` (a pytree of arrays) and `meta` (JSON-serialisable) as `step`.

    With several processes every process calls this with the same values.
    Raises:
      NonFiniteStateError: `state` holds NaN or infinite values (nothing is written).
      StorageFullError: the disk is full (the partial step is removed).
    """
    leaves = _host_leaves(state)
    bad = non_finite_paths(leaves)
    if bad:
      raise NonFiniteStateError(bad)
    integrity = {"format": _INTEGRITY_FORMAT, "run": self.identity, "layout": _layout(state),
                 "crc32": _checksums(leaves), "meta_crc32": _meta_checksum(meta)}
    threads_before = set(threading.enumerate())
    try:
      with _stderr_held_back(drop_if=is_storage_full):
        try:
          self._manager.save(step, args=ocp.args.Composite(
              state=ocp.args.StandardSave(parallel.global_arrays(state)),
              meta=ocp.args.JsonSave(meta), integrity=ocp.args.JsonSave(integrity)))
        except Exception as error:  # pylint: disable=broad-except
          if is_storage_full(error):  # Orbax's writer threads report their failures now.
            for thread in set(threading.enumerate()) - threads_before:
              thread.join(timeout=10)
            self._reopen()
            gc.collect()
          raise
    except Exception as error:  # pylint: disable=broad-except
      if not is_storage_full(error):
        raise
      self._remove_partial(step)
      raise StorageFullError(
          errno.ENOSPC, f"no space left on the device while saving checkpoint {step} in "
          f"{self.directory}; the earlier checkpoints are intact: free space and run the same "
          "command again to resume") from error

  def _remove_partial(self, step: int) -> None:
    if jax.process_index() == 0:
      for name in os.listdir(self.directory):
        if name.startswith(f"{step}.orbax-checkpoint-tmp"):
          shutil.rmtree(os.path.join(self.directory, name), ignore_errors=True)

  def restore_latest(self, like: Any) -> tuple[int, Any, dict[str, Any]] | None:
    """The newest usable checkpoint as `(step, state, meta)`, or None if there is none.

    Args:
      like: a pytree with the structure, shapes and dtypes of the saved state.
    Raises:
      CheckpointError: a checkpoint belongs to another run, holds a state of another layout
        than `like`, or has no integrity record; or there were checkpoints and all of them
        were damaged.
    """
    abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, like)
    steps = sorted(self._manager.all_steps(), reverse=True)
    for step in steps:
      integrity = self._integrity(step)
      if integrity is None:
        continue
      self._check_belongs(step, integrity, abstract)
      try:
        with _partial_restore_notes_dropped():
          restored = self._manager.restore(step, args=ocp.args.Composite(
              state=ocp.args.StandardRestore(abstract), meta=ocp.args.JsonRestore()))
      except PermissionError as error:  # Not damage: the files are not ours to read.
        raise CheckpointError(f"cannot read checkpoint {step} in {self.directory} ({error}); "
                              "check its permissions") from error
      except Exception as error:  # pylint: disable=broad-except
        self._set_aside(step, f"unreadable ({type(error).__name__}: "
                              f"{str(error).splitlines()[0][:200]})")
        continue
      leaves = _host_leaves(restored.state)
      damaged = _mismatches(leaves, restored.meta, integrity)
      if damaged:
        self._set_aside(step, f"damaged (the values of {damaged[0]} do not match their checksum)")
        continue
      bad = non_finite_paths(leaves)
      if bad:
        self._set_aside(step, f"unusable (non-finite values in {bad[0]})")
        continue
      return step, restored.state, dict(restored.meta)
    if steps:
      raise CheckpointError(f"none of the checkpoints {steps} in {self.directory} could be used "
                            f"(moved to {self.directory}.corrupt); run again to start afresh")
    return None

  def _integrity(self, step: int) -> dict[str, Any] | None:
    """The integrity record of `step`; None if it was damaged (then set aside)."""
    if not os.path.isdir(os.path.join(self.directory, str(step), "integrity")):
      raise CheckpointError(
          f"checkpoint {step} in {self.directory} has no integrity record (written by an older "
          "sms_jax, or not by sms_jax); resume it with the version that wrote it, or pass "
          "another --workdir")
    try:
      with _partial_restore_notes_dropped():
        integrity = dict(self._manager.restore(step, args=ocp.args.Composite(
            integrity=ocp.args.JsonRestore())).integrity)
    except PermissionError as error:
      raise CheckpointError(f"cannot read checkpoint {step} in {self.directory} ({error}); "
                            "check its permissions") from error
    except Exception as error:  # pylint: disable=broad-except
      self._set_aside(step, f"damaged (its integrity record is unreadable: "
                            f"{type(error).__name__}: {str(error).splitlines()[0][:200]})")
      return None
    if integrity.get("format") != _INTEGRITY_FORMAT:
      raise CheckpointError(
          f"checkpoint {step} in {self.directory} has integrity format "
          f"{integrity.get('format')!r}, this sms_jax reads {_INTEGRITY_FORMAT}; resume it with "
          "the version that wrote it, or pass another --workdir")
    well_formed = (isinstance(integrity.get("run"), str)
                   and isinstance(integrity.get("layout"), dict)
                   and isinstance(integrity.get("crc32"), dict)
                   and set(integrity["layout"]) == set(integrity["crc32"])
                   and isinstance(integrity.get("meta_crc32"), int))
    if not well_formed:
      self._set_aside(step, "damaged (its integrity record is incomplete)")
      return None
    return integrity

  def _check_belongs(self, step: int, integrity: dict[str, Any], abstract: Any) -> None:
    """Raises CheckpointError if `step` belongs to another run or holds another layout."""
    where = f"checkpoint {step} in {self.directory}"
    if integrity["run"] != self.identity:
      raise CheckpointError(
          f"{where} belongs to another run (config digest {integrity['run'][:8]}, this run's "
          f"{self.identity[:8]}); pass another --workdir, or remove {self.directory} to start "
          "afresh")
    saved, expected = integrity["layout"], _layout(abstract)
    if saved != expected:
      first = sorted(k for k in set(saved) | set(expected) if saved.get(k) != expected.get(k))[0]
      raise CheckpointError(
          f"{where} holds another state layout (differs at {first}: saved "
          f"{_describe(saved.get(first))}, expected {_describe(expected.get(first))}); use "
          "another --workdir")

  def _set_aside(self, step: int, why: str) -> None:
    aside = os.path.join(self.directory + ".corrupt", str(step))
    warnings.warn(f"checkpoint {step} in {self.directory} is {why}; moved it to {aside} and "
                  "trying the previous one")
    if jax.process_index() == 0:
      shutil.rmtree(aside, ignore_errors=True)
      os.makedirs(os.path.dirname(aside), exist_ok=True)
      shutil.move(os.path.join(self.directory, str(step)), aside)
    if jax.process_count() > 1:
      multihost_utils.sync_global_devices(f"set aside {self.directory}/{step}")
    self._reopen()

  def close(self) -> None:
    """Releases the manager (no pending writes: saving is synchronous)."""
    self._reopen()


def _describe(entry: list[Any] | None) -> str:
  return "nothing" if entry is None else f"{tuple(entry[0])} {entry[1]}"


def read_verified(directory: str, step: int | None = None, like: Any = None
                  ) -> tuple[int, Any, dict[str, Any]]:
  """Reads checkpoint `step` (default: the newest) of `directory` as it was saved, read-only.

  For what uses a finished run (export, shared pretraining): nothing is moved or written.
  Without `like` the state comes back as nested dicts and lists of host arrays (a saved
  NamedTuple as a dict of its fields), without knowing its structure in advance; with `like`
  (a pytree of the saved structure, shapes and dtypes) in its structure.

  Returns:
    `(step, state, meta)`, the state's values checked against their integrity record.
  Raises:
    CheckpointError: no such checkpoint, or it has no (or another format of) integrity
      record, holds another layout than `like`, cannot be read, or its values do not match
      their checksums.
  """
  directory = os.path.abspath(directory)
  steps = sorted(int(name) for name in (os.listdir(directory) if os.path.isdir(directory) else [])
                 if name.isdigit())
  if step is None and steps:
    step = steps[-1]
  if step not in steps:
    raise CheckpointError(f"no checkpoint {'' if step is None else f'{step} '}in {directory}"
                          f"{f'; it has {steps}' if steps else ''}")
  manager = ocp.CheckpointManager(directory, options=ocp.CheckpointManagerOptions(
      create=False, enable_async_checkpointing=False))
  where = f"checkpoint {step} in {directory}"
  abstract = None if like is None else jax.tree.map(ocp.utils.to_shape_dtype_struct, like)
  try:
    with _partial_restore_notes_dropped():
      integrity = dict(manager.restore(step, args=ocp.args.Composite(
          integrity=ocp.args.JsonRestore())).integrity)
    if integrity.get("format") != _INTEGRITY_FORMAT:
      raise CheckpointError(f"{where} has integrity format {integrity.get('format')!r}; this "
                            f"sms_jax reads {_INTEGRITY_FORMAT}")
    if abstract is not None and integrity.get("layout") != _layout(abstract):
      saved, expected = integrity.get("layout") or {}, _layout(abstract)
      first = sorted(k for k in set(saved) | set(expected) if saved.get(k) != expected.get(k))[0]
      raise CheckpointError(f"{where} holds another state layout (differs at {first}: saved "
                            f"{_describe(saved.get(first))}, expected "
                            f"{_describe(expected.get(first))})")
    with _partial_restore_notes_dropped():
      restored = manager.restore(step, args=ocp.args.Composite(
          state=ocp.args.StandardRestore(abstract), meta=ocp.args.JsonRestore()))
  except CheckpointError:
    raise
  except Exception as error:  # pylint: disable=broad-except
    raise CheckpointError(f"cannot read {where} ({type(error).__name__}: "
                          f"{str(error).splitlines()[0][:200]})") from error
  finally:
    manager.close()
  meta = dict(restored.meta)
  state = jax.tree.map(np.asarray, restored.state)
  damaged = _mismatches(_host_leaves(state), meta, integrity)
  if damaged:
    raise CheckpointError(f"{where} is damaged (the values of {damaged[0]} do not match their "
                          "checksum)")
  return step, state, meta
