"""Side effects at the edge: progress lines (and the run's ETA), results.json, TensorBoard
scalars.

In a run of several processes only process 0 prints and writes files; the others compute
the same values and stay quiet (orbax checkpoints are written by all, collectively).
"""

import contextlib
import datetime
import json
import os
import signal
import tempfile
import threading
import time
from typing import IO, Any, Callable, Iterator, Sequence, TypeVar

import jax

T = TypeVar("T")


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


@contextlib.contextmanager
def interrupts_deferred() -> Iterator[None]:
  """Holds a Ctrl-C (SIGINT) back while the block runs and delivers it when the block ends: for
  writes that must not stop halfway (a checkpoint; TensorBoard's event queue, which an
  interrupted write leaves hanging when it closes). A second Ctrl-C interrupts at once.
  Outside the main thread (where Python takes signals) the block runs as it is.
  """
  previous = (signal.getsignal(signal.SIGINT)
              if threading.current_thread() is threading.main_thread() else None)
  if previous is None:  # Not the main thread, or a handler not set from Python.
    yield
    return
  held = []

  def hold(signum, frame):
    if held:
      raise KeyboardInterrupt
    held.append(signum)

  signal.signal(signal.SIGINT, hold)
  try:
    yield
  finally:
    signal.signal(signal.SIGINT, previous)
    if held:
      signal.raise_signal(signal.SIGINT)  # To the handler before: e.g. KeyboardInterrupt.


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


def candidate_mean(value: float | list[float | None] | None) -> float:
  """A float; the mean of a per-candidate list's non-None entries (those that trained); NaN
  for None or a list without any."""
  if not isinstance(value, list):
    return float("nan") if value is None else float(value)
  values = [v for v in value if v is not None]
  return sum(values) / len(values) if values else float("nan")


def _candidates_note(record: dict[str, Any]) -> list[str]:
  """`['mean of 4 candidates:']` for a record of per-candidate lists (`mean of 3 training
  candidates of 4:` once some have finished), else []."""
  losses = record["train_loss"]
  if not isinstance(losses, list):
    return []
  active = sum(v is not None for v in losses)
  return [f"mean of {len(losses)} candidates:" if active == len(losses) else
          f"mean of {active} training candidate{'s' * (active != 1)} of {len(losses)}:"]


def epoch_line(epoch: int, epochs: int, record: dict[str, Any], images_per_s: float,
               eta_s: float, run_fraction: float) -> str:
  """`epoch  7/60  loss 0.4012  acc 0.861  val_loss ...  lr 0.0481  5,210 img/s  run 12%  ETA
  0:03:31`: the epoch of its stage, then the whole run's progress and ETA (`RunProgress`).

  A stacked state's per-candidate lists are shown as their mean, said so after the epoch
  (`mean of 4 candidates:`).
  """
  parts = [f"epoch {epoch:>{len(str(epochs))}}/{epochs}", *_candidates_note(record),
           f"loss {candidate_mean(record['train_loss']):.4f}",
           f"acc {candidate_mean(record['train_accuracy']):.3f}"]
  if "val_accuracy" in record:
    parts += [f"val_loss {candidate_mean(record['val_loss']):.4f}",
              f"val_acc {candidate_mean(record['val_accuracy']):.3f}"]
  if "sparsity" in record:
    parts.append(f"sparsity {record['sparsity']:.4f}")
  if "learning_rate" in record:
    parts.append(f"lr {candidate_mean(record['learning_rate']):.4g}")
  parts += [f"{images_per_s:,.0f} img/s", f"run {100 * run_fraction:.0f}%",
            f"ETA {format_duration(eta_s)}"]
  return "  ".join(parts)


class RunProgress:
  """The training work of a whole run (pretraining, then each phase) and its ETA.

  Work is counted in images: a stage of `epochs` epochs of `candidates` candidates is
  `epochs * candidates * images_per_epoch`. The ETA is the time per image measured in this
  process times the images left: from the end of its first epoch (which compiles the training
  programs: on the demo's 60 epochs it alone would make the first ETAs ten times too long)
  once there is a second, evaluation and later compilations included. Work restored from
  checkpoints counts as done, not towards that rate.

  Args:
    stages: `[(epochs, candidates)]` in the order the run trains them (stage 0: pretraining,
      stage k: phase k), as a strategy plans them (`Strategy.planned_epochs`).
    images_per_epoch: the images of one candidate's epoch.
  """

  def __init__(self, stages: list[tuple[int, int]], images_per_epoch: int,
               clock: Callable[[], float] = time.perf_counter):
    self._epoch_images = [candidates * images_per_epoch for _, candidates in stages]
    self._before = [0]  # The images of the stages before stage k.
    for (epochs, _), images in zip(stages, self._epoch_images):
      self._before.append(self._before[-1] + epochs * images)
    self.total = self._before[-1]
    self._clock, self._start = clock, clock()
    self.done, self._trained_here = 0, 0
    self._first = None  # (time, images trained here) at the end of this process's 1st epoch.

  def _stage_images(self, stage: int) -> int:
    return self._epoch_images[min(stage, len(self._epoch_images) - 1)]

  def resume(self, stage: int, epochs_done: int) -> None:
    """Stage `stage` starts after `epochs_done` restored epochs: the stages before it and
    those epochs are done."""
    start = self._before[min(stage, len(self._before) - 1)]
    self.done = max(self.done, start + epochs_done * self._stage_images(stage))

  def epoch_trained(self, stage: int) -> None:
    """One epoch of stage `stage` was trained in this process."""
    self.done += self._stage_images(stage)
    self._trained_here += self._stage_images(stage)
    if self._first is None:
      self._first = (self._clock(), self._trained_here)

  def fraction(self) -> float:
    """The share of the run's images done, in [0, 1]."""
    return min(1.0, self.done / self.total) if self.total else 1.0

  def eta_s(self) -> float:
    """Seconds until the run's training ends, at this process's rate (0 before any epoch)."""
    if not self._trained_here:
      return 0.0
    start, images = (self._start, 0) if self._trained_here == self._first[1] else self._first
    seconds_per_image = (self._clock() - start) / (self._trained_here - images)
    return seconds_per_image * max(0, self.total - self.done)


_run_progress: list[RunProgress] = []  # The run in progress (`tracking`), if any.


@contextlib.contextmanager
def tracking(stages: list[tuple[int, int]], images_per_epoch: int) -> Iterator[RunProgress]:
  """Makes `RunProgress(stages, images_per_epoch)` the run's, for `run_progress()` (the epoch
  loop) while the block runs."""
  _run_progress.append(RunProgress(stages, images_per_epoch))
  try:
    yield _run_progress[-1]
  finally:
    _run_progress.pop()


def run_progress() -> RunProgress | None:
  """The progress of the run in progress (`tracking`); None outside a run."""
  return _run_progress[-1] if _run_progress else None


class Ticker:
  """Progress of a long step that is not an epoch, e.g. a phase's evaluation: `tick(done)`
  logs `evaluating phase 2: 3/7 sets, 12 s` once `every_s` seconds have passed since the start
  or the last line (quick steps print nothing).

  Args:
    what: what is going on, e.g. 'evaluating phase 2'.
    total: the units of work, e.g. 7.
    unit: their name, e.g. 'sets'.
  """

  def __init__(self, what: str, total: int, unit: str, *, every_s: float = 5.0,
               log_fn: Callable[[str], None] | None = None,
               clock: Callable[[], float] = time.perf_counter):
    self.what, self.total, self.unit, self.every_s = what, total, unit, every_s
    self._log, self._clock = log_fn or log, clock
    self._start = self._last = clock()

  def __call__(self, done: int) -> None:
    """Reports that `done` of the `total` units are done."""
    now = self._clock()
    if now - self._last >= self.every_s:
      self._last = now
      self._log(f"{self.what}: {done}/{self.total} {self.unit}, {now - self._start:.0f} s")


def ticked(items: Sequence[T], what: str, unit: str, **kwargs) -> Iterator[T]:
  """Yields each of `items`, then reports it done to a `Ticker(what, len(items), unit,
  **kwargs)`: e.g. `for split in ticked(splits, "evaluating phase 2", "sets"): ...`."""
  tick = Ticker(what, len(items), unit, **kwargs)
  for done, item in enumerate(items, 1):
    yield item
    tick(done)


class ScalarWriter:
  """TensorBoard scalars in `<workdir>/tensorboard` via tensorboardX.

  The event file is opened at the first write, with `purge_step` at that step: a resumed run
  hides the points that the interrupted run wrote after its last checkpoint.
  """

  def __init__(self, workdir: str):
    self._directory = os.path.join(workdir, "tensorboard")
    self._writer = None

  def write(self, step: int, scalars: dict[str, Any]) -> None:
    """Adds each of `scalars` at `step` (a per-candidate list as `name/candidate<k>`), flushes
    (Ctrl-C waits until it is done)."""
    if not is_primary():
      return
    with interrupts_deferred():
      if self._writer is None:
        from tensorboardX import SummaryWriter  # pylint: disable=g-import-not-at-top
        self._writer = SummaryWriter(self._directory, purge_step=step)
      for name, value in scalars.items():
        for suffix, v in (enumerate(value) if isinstance(value, list) else [("", value)]):
          if v is not None:
            self._writer.add_scalar(f"{name}/candidate{suffix}" if suffix != "" else name, v,
                                    step)
      self._writer.flush()

  def close(self) -> None:
    """Closes the event file, if one was opened."""
    if self._writer is not None:
      with interrupts_deferred():
        self._writer.close()
