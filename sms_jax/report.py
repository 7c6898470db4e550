"""Side effects at the edge: progress lines, results.json, TensorBoard scalars.

In a run of several processes only process 0 prints and writes files; the others compute
the same values and stay quiet (orbax checkpoints are written by all, collectively).
"""

import contextlib
import datetime
import json
import os
import tempfile
from typing import IO, Any, Iterator

import jax


def is_primary() -> bool:
  """Whether this is the process that prints and writes (process 0)."""
  return jax.process_index() == 0


def log(message: str) -> None:
  """Prints one progress line to stdout, flushed (runs are watched live and through pipes)."""
  if is_primary():
    print(message, flush=True)


@contextlib.contextmanager
def atomic_write(path: str, mode: str = "w") -> Iterator[IO]:
  """Yields a file to write `path`'s new content to; it replaces `path` only once complete.

  The file is a temporary one in `path`'s directory (created if needed), moved onto `path`
  when the block ends without an exception (and deleted otherwise): readers see the old file
  or the whole new one. Outside process 0 the content goes nowhere.
  """
  if not is_primary():
    with open(os.devnull, mode) as f:
      yield f
    return
  directory = os.path.dirname(os.path.abspath(path))
  os.makedirs(directory, exist_ok=True)
  f = tempfile.NamedTemporaryFile(mode, dir=directory, suffix=".tmp", delete=False)
  try:
    with f:
      yield f
      f.flush()
      os.fsync(f.fileno())
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(f.name, 0o666 & ~umask)  # As open() would; temporary files start as 0600.
    os.replace(f.name, path)
  except BaseException:
    os.unlink(f.name)
    raise


def write_json(path: str, obj: Any) -> None:
  """Writes `obj` as indented JSON atomically: readers see the old file or the whole new one."""
  with atomic_write(path) as f:
    json.dump(obj, f, indent=2, sort_keys=False)
    f.write("\n")


def devices() -> dict[str, Any]:
  """The devices of this run (all processes): `count`, `platform`, `kind`, `processes`."""
  devs = jax.devices()
  return {"count": len(devs), "platform": devs[0].platform, "kind": devs[0].device_kind,
          "processes": jax.process_count()}


def format_duration(seconds: float) -> str:
  """`H:MM:SS` of a number of seconds."""
  return str(datetime.timedelta(seconds=int(round(seconds))))


def _mean(value: float | list[float | None]) -> float:
  """A float, or the mean of a per-candidate list's non-None entries."""
  if not isinstance(value, list):
    return value
  values = [v for v in value if v is not None]
  return sum(values) / len(values) if values else float("nan")


def epoch_line(epoch: int, epochs: int, record: dict[str, Any], images_per_s: float,
               eta_s: float) -> str:
  """`epoch  7/60  loss 0.4012  acc 0.861  val_loss ...  lr 0.0481  5210 img/s  ETA 0:00:31`.

  Per-candidate lists are shown as their mean over the candidates that trained.
  """
  parts = [f"epoch {epoch:>{len(str(epochs))}}/{epochs}",
           f"loss {_mean(record['train_loss']):.4f}", f"acc {_mean(record['train_accuracy']):.3f}"]
  if "val_accuracy" in record:
    parts += [f"val_loss {_mean(record['val_loss']):.4f}",
              f"val_acc {_mean(record['val_accuracy']):.3f}"]
  if "sparsity" in record:
    parts.append(f"sparsity {record['sparsity']:.4f}")
  if "learning_rate" in record:
    parts.append(f"lr {_mean(record['learning_rate']):.4g}")
  parts += [f"{images_per_s:,.0f} img/s", f"ETA {format_duration(eta_s)}"]
  return "  ".join(parts)


class ScalarWriter:
  """TensorBoard scalars in `<workdir>/tensorboard` via tensorboardX.

  The event file is opened at the first write, with `purge_step` at that step: a resumed run
  hides the points that the interrupted run wrote after its last checkpoint.
  """

  def __init__(self, workdir: str):
    self._directory = os.path.join(workdir, "tensorboard")
    self._writer = None

  def write(self, step: int, scalars: dict[str, Any]) -> None:
    """Adds each of `scalars` at `step` (a per-candidate list as `name/candidate<k>`), flushes."""
    if not is_primary():
      return
    if self._writer is None:
      from tensorboardX import SummaryWriter  # pylint: disable=g-import-not-at-top
      self._writer = SummaryWriter(self._directory, purge_step=step)
    for name, value in scalars.items():
      for suffix, v in (enumerate(value) if isinstance(value, list) else [("", value)]):
        if v is not None:
          self._writer.add_scalar(f"{name}/candidate{suffix}" if suffix != "" else name, v, step)
    self._writer.flush()

  def close(self) -> None:
    """Closes the event file, if one was opened."""
    if self._writer is not None:
      self._writer.close()
