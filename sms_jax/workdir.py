"""What a run may do with its workdir: check that it holds this experiment, and own it.

A run holds an exclusive lock on `<workdir>/.lock` (`fcntl.flock`) from before it writes
anything until it ends. The operating system releases the lock when the process ends, however
it ends (kill -9 included), so a killed run never leaves a stale lock; a second run on the same
workdir is refused with the first one's process id. Locks are taken by process 0 of a
multi-process run only (its processes share the workdir); flock does not lock across machines
on some network filesystems.
"""

import contextlib
import fcntl
import json
import os
import socket
from typing import Any, Iterator

from sms_jax import config as config_lib


class WorkdirError(ValueError):
  """The workdir cannot hold this run (not a directory, a run of another config, in use)."""


def check(config_dict: dict[str, Any], workdir: str) -> None:
  """Raises WorkdirError unless `workdir` is new or holds a run of the same experiment."""
  if not workdir:
    raise WorkdirError("--workdir is empty; pass a directory, e.g. --workdir=runs/x")
  if os.path.exists(workdir) and not os.path.isdir(workdir):
    raise WorkdirError(f"workdir {workdir} exists and is not a directory")
  path = os.path.join(workdir, "config.json")
  if not os.path.exists(path):
    return
  try:
    with open(path) as f:
      previous = config_lib.resume_key(json.load(f))
  except (OSError, ValueError) as error:
    raise WorkdirError(
        f"cannot read {path} ({type(error).__name__}: {str(error)[:120]}); if this workdir "
        "holds your run, remove that file and run the same command again (each checkpoint "
        "records its run's config, so only the same config resumes them); otherwise pass "
        "another --workdir") from error
  current = config_lib.resume_key(config_dict)
  if previous != current:
    differing = sorted(differences(previous, current))
    raise WorkdirError(f"workdir {workdir} holds a run with another config (differs in "
                       f"{', '.join(differing[:5])}); pass another --workdir or remove it")


def differences(a: dict[str, Any], b: dict[str, Any], prefix: str = "") -> list[str]:
  """The dotted keys whose values differ between nested dicts `a` and `b` (or one lacks)."""
  out = []
  for k in set(a) | set(b):
    if isinstance(a.get(k), dict) and isinstance(b.get(k), dict):
      out += differences(a[k], b[k], prefix + k + ".")
    elif a.get(k) != b.get(k):
      out.append(prefix + k)
  return out


@contextlib.contextmanager
def locked(workdir: str) -> Iterator[None]:
  """Holds the exclusive lock on existing `workdir` while the block runs.

  Raises:
    WorkdirError: another process holds it (the message names that process).
  """
  path = os.path.join(workdir, ".lock")
  try:
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
  except OSError as error:
    raise WorkdirError(f"cannot create {path}: {error}") from error
  try:
    try:
      fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
      owner = os.pread(fd, 200, 0).decode(errors="replace").strip() or "unknown"
      raise WorkdirError(f"workdir {workdir} is in use by another run (process {owner}); wait "
                         "for it to end, or pass another --workdir") from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()} on {socket.gethostname()}\n".encode(), 0)
    yield
  finally:
    os.close(fd)  # Releases the lock.
