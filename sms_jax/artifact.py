"""The exported model file (`.sms`): one zip archive that loads with sms_jax's models alone.

`python -m sms_jax.export` writes it from a run's workdir; `load(path)` reads it back with
no workdir, no config file and no dataset. Entries:

  manifest.json          what the model is (`model`: name, classes, compute dtype, input
                         shape), its input `standardization` (`mean`, `std` per channel),
                         where it came from (`source`: run, strategy, phase, config), its
                         recorded `metrics` and `sparsity`, and every array's `layout`;
  <path>.npy             an array stored whole: biases, BatchNorm parameters and statistics,
                         kernels that are not pruned;
  <path>.mask.npy        a pruned kernel's mask, bit-packed (`np.packbits` of the flattened
  <path>.values.npy      bools, uint8) and the kernel's values at its alive positions, in
                         row-major order: the pruned entries are exactly 0 and not stored.

Paths are the variables' ('params/conv0/kernel', 'batch_stats/bn0/mean'). Arrays are
written with `np.save` (no pickles) and every entry is checked by the zip's CRC-32 on read.
"""

import functools
import io
import json
import os
import zipfile
import zlib
from typing import Any, Callable, NamedTuple

import numpy as np

__all__ = ["ArtifactError", "FORMAT_VERSION", "Loaded", "load", "read", "write"]

FORMAT = "sms_jax.model"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"


class ArtifactError(ValueError):
  """A file that is not a readable sms_jax model."""


def flatten(tree: Any) -> dict[str, Any]:
  """`{'params/conv0/kernel': leaf, ...}` of nested dicts (None leaves kept)."""
  flat = {}
  for key, value in tree.items():
    if isinstance(value, dict):
      flat.update({f"{key}/{k}": v for k, v in flatten(value).items()})
    else:
      flat[key] = value
  return flat


def unflatten(flat: dict[str, Any]) -> dict[str, Any]:
  """The nested dicts of `flatten`'s output."""
  tree: dict[str, Any] = {}
  for path, value in flat.items():
    *parents, leaf = path.split("/")
    node = tree
    for key in parents:
      node = node.setdefault(key, {})
    node[leaf] = value
  return tree


def _npy(array: np.ndarray) -> bytes:
  buffer = io.BytesIO()
  np.save(buffer, np.ascontiguousarray(array), allow_pickle=False)
  return buffer.getvalue()


def write(path: str, variables: dict[str, Any], masks: dict[str, Any],
          manifest: dict[str, Any]) -> int:
  """Writes a model file; returns its size in bytes.

  Args:
    path: the file to write (replaced if it exists, atomically).
    variables: `{'params': ..., 'batch_stats': ...}` nested dicts of host arrays.
    masks: nested dicts shaped like `variables['params']`: a bool array for each pruned
      kernel (the kernel must be exactly 0 outside it), None for the others.
    manifest: what the model is and where it came from (see the module docstring); the
      format and every array's `layout` are added.
  """
  flat_masks = {f"params/{k}": v for k, v in flatten(masks).items()}
  layout, entries = {}, {}
  for name, value in flatten(variables).items():
    value, mask = np.asarray(value), flat_masks.get(name)
    layout[name] = {"shape": list(value.shape), "dtype": str(value.dtype)}
    if mask is None:
      entries[f"{name}.npy"] = value
      continue
    mask = np.asarray(mask, bool)
    if np.any(value[~mask]):
      raise ValueError(f"{name} has nonzero weights outside its mask; export only masked models")
    layout[name]["alive"] = int(mask.sum())
    entries[f"{name}.mask.npy"] = np.packbits(mask.reshape(-1))
    entries[f"{name}.values.npy"] = value.reshape(-1)[mask.reshape(-1)]
  manifest = {"format": FORMAT, "format_version": FORMAT_VERSION, **manifest, "layout": layout}
  partial = f"{path}.partial"  # Written whole, then renamed: no half-written model file.
  try:
    with zipfile.ZipFile(partial, "w", compression=zipfile.ZIP_DEFLATED) as archive:
      archive.writestr(MANIFEST, json.dumps(manifest, indent=1))
      for name, value in entries.items():
        archive.writestr(name, _npy(value))
    os.replace(partial, path)
  finally:
    if os.path.exists(partial):
      os.remove(partial)
  return os.path.getsize(path)


def read(path: str) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
  """`(manifest, variables, masks)` of a model file, as `write` took them (host arrays).

  Raises:
    ArtifactError: not a model file, another format version, or damaged.
  """
  try:
    with zipfile.ZipFile(path) as archive:
      manifest = json.loads(archive.read(MANIFEST))
      if manifest.get("format") != FORMAT:
        raise ArtifactError(f"{path} is not an sms_jax model file (no {FORMAT} manifest)")
      if manifest.get("format_version") != FORMAT_VERSION:
        raise ArtifactError(f"{path} has format version {manifest.get('format_version')!r}; "
                            f"this sms_jax reads version {FORMAT_VERSION}")
      load = lambda name: np.load(io.BytesIO(archive.read(name)), allow_pickle=False)
      variables, masks = {}, {}
      for name, entry in manifest["layout"].items():
        shape, dtype = tuple(entry["shape"]), np.dtype(entry["dtype"])
        if "alive" not in entry:
          variables[name] = load(f"{name}.npy").astype(dtype, copy=False).reshape(shape)
          continue
        size = int(np.prod(shape))
        mask = np.unpackbits(load(f"{name}.mask.npy"), count=size).astype(bool)
        value = np.zeros(size, dtype)
        value[mask] = load(f"{name}.values.npy")
        variables[name], masks[name] = value.reshape(shape), mask.reshape(shape)
  except (zipfile.BadZipFile, zlib.error, KeyError, ValueError, OSError) as error:
    if isinstance(error, ArtifactError):
      raise
    raise ArtifactError(f"cannot read model file {path} ({type(error).__name__}: "
                        f"{str(error).splitlines()[0][:200] if str(error) else ''})") from error
  params_masks = {name[len("params/"):]: masks.get(name)
                  for name in variables if name.startswith("params/")}
  return manifest, unflatten(variables), unflatten(params_masks)


class Loaded(NamedTuple):
  """A loaded model.

  Attributes:
    model: the Flax module (`model.apply(variables, standardized_x, train=False)`).
    variables: `{'params', 'batch_stats'}` as jax arrays.
    masks: shaped like `variables['params']`: bool arrays of the pruned kernels, None else.
    predict: `predict(raw_inputs: [n, *input_shape], batch_size=1024) -> [n, classes]`
      class probabilities (NumPy float32) of inputs as the dataset stores them (e.g. MNIST-1D
      signals, image pixels 0-255), standardised as in training, in eval mode.
    manifest: the file's manifest (source run, metrics, sparsity, config).
  """
  model: Any
  variables: dict[str, Any]
  masks: dict[str, Any]
  predict: Callable[..., np.ndarray]
  manifest: dict[str, Any]


def load(path: str, *, dtype: str | None = None) -> Loaded:
  """Loads a model file written by `python -m sms_jax.export`.

  Args:
    path: the `.sms` file.
    dtype: the computation dtype ('float32', 'bfloat16'); default: the one the run used.
  Raises:
    ArtifactError: the file is not a readable model file.
  """
  import jax  # pylint: disable=g-import-not-at-top  (reading the format needs no JAX)
  from sms_jax import models  # pylint: disable=g-import-not-at-top
  manifest, variables, masks = read(path)
  spec = manifest["model"]
  model = models.create_model(spec["name"], spec["num_classes"],
                              dtype=models.compute_dtype(dtype or spec["compute_dtype"]))
  variables = jax.tree.map(jax.numpy.asarray, variables)
  stats = manifest["standardization"]
  mean, std = (np.asarray(stats[k], np.float32) for k in ("mean", "std"))
  apply = jax.jit(functools.partial(_probabilities, model))
  predict = functools.partial(_predict_batched, apply, variables, mean, std,
                              tuple(spec["input_shape"]))
  return Loaded(model, variables, masks, predict, manifest)


def _probabilities(model, variables, mean, std, x):
  import jax  # pylint: disable=g-import-not-at-top
  logits = model.apply(variables, (x - mean) / std, train=False)
  return jax.nn.softmax(logits.astype(np.float32), axis=-1)


def _predict_batched(apply, variables, mean, std, input_shape, raw_inputs,
                     batch_size: int = 1024) -> np.ndarray:
  """`apply` on `raw_inputs: [n, *input_shape]` in batches of `batch_size` (the last one
  padded, so that one program serves every batch): `[n, classes]` probabilities."""
  x = np.asarray(raw_inputs, np.float32)
  if x.shape[1:] != input_shape:
    raise ValueError(f"inputs of shape {list(x.shape)} are not allowed; allowed: [n, "
                     f"{', '.join(map(str, input_shape))}] (a batch of raw inputs)")
  n = x.shape[0]
  if n == 0:
    raise ValueError("predict needs at least one input; got none")
  batch = min(batch_size, n)
  padded = np.concatenate([x, np.zeros((-n % batch, *input_shape), np.float32)])
  return np.concatenate([np.asarray(apply(variables, mean, std, padded[i:i + batch]))
                         for i in range(0, len(padded), batch)])[:n]
