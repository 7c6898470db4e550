"""A disk cache for generated datasets: their arrays stored by the generator's arguments.

`cached(name, args, make)` returns `make()`'s arrays, read from
`<cache dir>/<name>-<digest of args>.npz` when an earlier call stored them (MNIST-1D: about
3 s to generate, 10 ms to read). The cache directory is `$SMS_JAX_CACHE_DIR`, else
`~/.cache/sms_jax/datasets`. Each file holds a SHA-256 of its arrays: a file that does not
match it (truncated, edited) is generated anew and replaced. Files are written atomically; a
directory that cannot be written costs the generation only.
"""

import hashlib
import json
import os
import tempfile
import zipfile
from typing import Any, Callable

import numpy as np

_CHECKSUM = "__sha256__"


def cache_dir() -> str:
  """`$SMS_JAX_CACHE_DIR`, else `~/.cache/sms_jax/datasets`."""
  return os.environ.get("SMS_JAX_CACHE_DIR") or os.path.join(
      os.path.expanduser("~"), ".cache", "sms_jax", "datasets")


def checksum(arrays: dict[str, np.ndarray]) -> str:
  """SHA-256 of the arrays' names, dtypes, shapes and bytes."""
  digest = hashlib.sha256()
  for name in sorted(arrays):
    array = np.ascontiguousarray(arrays[name])
    digest.update(f"{name}:{array.dtype.str}:{array.shape}".encode())
    digest.update(array.tobytes())
  return digest.hexdigest()


def cache_path(name: str, args: dict[str, Any]) -> str:
  """Where the arrays of `name` generated with `args` are cached."""
  key = hashlib.sha256(json.dumps(args, sort_keys=True).encode()).hexdigest()[:16]
  return os.path.join(cache_dir(), f"{name}-{key}.npz")


def cached(name: str, args: dict[str, Any],
           make: Callable[[], dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
  """`make()`, or the arrays an earlier call with the same `name` and `args` stored.

  Args:
    name: the dataset, e.g. 'mnist1d'.
    args: everything the arrays depend on (JSON-serialisable), generator version included.
    make: generates `{array name: array}`.
  """
  path = cache_path(name, args)
  try:
    with np.load(path) as stored:
      arrays = {k: stored[k] for k in stored.files if k != _CHECKSUM}
      if str(stored[_CHECKSUM]) == checksum(arrays):
        return arrays
  except (OSError, KeyError, ValueError, EOFError, zipfile.BadZipFile):
    pass  # Absent or unreadable: generate.
  arrays = make()
  try:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=os.path.dirname(path), suffix=".tmp",
                                     delete=False) as f:
      np.savez(f, **arrays, **{_CHECKSUM: np.asarray(checksum(arrays))})
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(f.name, 0o666 & ~umask)  # As open() would; temporary files start as 0600.
    os.replace(f.name, path)
  except OSError:
    pass  # A read-only cache: the arrays were generated all the same.
  return arrays
