"""Side effects at the edge: progress lines, results.json, TensorBoard scalars."""

import datetime
import json
import os
import tempfile
from typing import Any

import jax


def log(message: str) -> None:
  """Prints one progress line to stdout, flushed (runs are watched live and through pipes)."""
  print(message, flush=True)


def write_json(path: str, obj: Any) -> None:
  """Writes `obj` as indented JSON atomically: readers see the old file or the whole new one."""
  directory = os.path.dirname(os.path.abspath(path))
  os.makedirs(directory, exist_ok=True)
  with tempfile.NamedTemporaryFile("w", dir=directory, suffix=".tmp", delete=False) as f:
    json.dump(obj, f, indent=2, sort_keys=False)
    f.write("\n")
    f.flush()
    os.fsync(f.fileno())
  umask = os.umask(0)
  os.umask(umask)
  os.chmod(f.name, 0o666 & ~umask)  # As open() would; temporary files start as 0600.
  os.replace(f.name, path)


def devices() -> dict[str, Any]:
  """The devices this process computes on: `count`, `platform`, `kind`."""
  devs = jax.devices()
  return {"count": len(devs), "platform": devs[0].platform, "kind": devs[0].device_kind}


def format_duration(seconds: float) -> str:
  """`H:MM:SS` of a number of seconds."""
  return str(datetime.timedelta(seconds=int(round(seconds))))


def epoch_line(epoch: int, epochs: int, record: dict[str, float], images_per_s: float,
               eta_s: float) -> str:
  """`epoch  7/60  loss 0.4012  acc 0.861  val_loss ...  lr 0.0481  5210 img/s  ETA 0:00:31`."""
  parts = [f"epoch {epoch:>{len(str(epochs))}}/{epochs}",
           f"loss {record['train_loss']:.4f}", f"acc {record['train_accuracy']:.3f}"]
  if "val_accuracy" in record:
    parts += [f"val_loss {record['val_loss']:.4f}", f"val_acc {record['val_accuracy']:.3f}"]
  parts += [f"lr {record['learning_rate']:.4g}", f"{images_per_s:,.0f} img/s",
            f"ETA {format_duration(eta_s)}"]
  return "  ".join(parts)


class ScalarWriter:
  """TensorBoard scalars in `<workdir>/tensorboard` via tensorboardX.

  The event file is opened at the first write, with `purge_step` at that step: a resumed run
  hides the points that the interrupted run wrote after its last checkpoint.
  """

  def __init__(self, workdir: str):
    self._directory = os.path.join(workdir, "tensorboard")
    self._writer = None

  def write(self, step: int, scalars: dict[str, float]) -> None:
    """Adds each of `scalars` at `step` and flushes."""
    if self._writer is None:
      from tensorboardX import SummaryWriter  # pylint: disable=g-import-not-at-top
      self._writer = SummaryWriter(self._directory, purge_step=step)
    for name, value in scalars.items():
      self._writer.add_scalar(name, value, step)
    self._writer.flush()

  def close(self) -> None:
    """Closes the event file, if one was opened."""
    if self._writer is not None:
      self._writer.close()
