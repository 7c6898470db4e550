"""PNG plots of a run's results: accuracy against sparsity, per-layer sparsity, training curves.

Each plot is built by a function that returns its matplotlib Figure (tests check its lines
and labels) and `write_plots` saves those a run's results call for. Titles name the run
(strategy, dataset / model, seed) when the results carry its `config`. Matplotlib is
imported inside the functions, so that importing sms_jax stays light. Figures are drawn with
the Agg canvas (no GUI, no pyplot state to close) and written atomically.
"""

import os
from typing import Any, Sequence

import numpy as np

from sms_jax import report
from sms_jax.phases.evaluate import outcome

DPI = 120
_NAMES = {"er": "ER", "erk": "ERK", "snip": "SNIP", "synflow": "SynFlow"}  # As printed.

# Accuracy-against-sparsity lines: a phase record's key, its label and style. A run with
# soups (m > 1) draws the last three; a run of one model per phase (m = 1) the first.
_PHASE_LINES = (("model", "model", dict(marker="o", linestyle="-", linewidth=2)),
                ("soup", "soup", dict(marker="o", linestyle="-", linewidth=2)),
                ("best_candidate", "best candidate (val)", dict(marker="s", linestyle="--")),
                ("ensemble", "ensemble", dict(marker="^", linestyle=":")))


def _figure(width: float, height: float, rows: int = 1):
  """A new figure drawn by the Agg canvas, with `rows` axes sharing x: (figure, axes), the
  axes one object for one row, else an array."""
  from matplotlib.backends.backend_agg import FigureCanvasAgg  # pylint: disable=g-import-not-at-top
  from matplotlib.figure import Figure  # pylint: disable=g-import-not-at-top
  figure = Figure(figsize=(width, height), layout="constrained")
  FigureCanvasAgg(figure)
  return figure, figure.subplots(rows, 1, sharex=True, squeeze=True)


def save(figure, path: str) -> None:
  """Writes `figure` to `path` as PNG, atomically."""
  with report.atomic_write(path, "wb") as f:
    figure.savefig(f, format="png", dpi=DPI)


def _percent(value: float | None) -> float:
  return float("nan") if value is None else 100.0 * value


def _title(run: str, what: str) -> str:
  return f"{run}\n{what}" if run else what


def run_title(results: dict[str, Any]) -> str:
  """'sms on mnist1d / cnn1d, seed 0' from `results['config']` (a dict or ConfigDict); ''
  without one."""
  config = results.get("config")
  if not config:
    return ""
  return (f"{config['strategy']} on {config['dataset']['name']} / {config['model']['name']}, "
          f"seed {config['seed']}")


def reference_label(results: dict[str, Any]) -> str:
  """What the results' `dense` model is: 'dense', or for a sparse start (`init_mask`) e.g.
  'sparse start (ERK, density 0.05)' (with its method unless random: 'SNIP, global, ...')."""
  start = results.get("init_mask")
  if not start:
    return "dense"
  method = start.get("method", "random")
  parts = [] if method == "random" else [_NAMES.get(method, method)]
  parts += [_NAMES.get(start["distribution"], start["distribution"]),
            f"density {start['density']:g}"]
  return f"sparse start ({', '.join(parts)})"


def accuracy_figure(phases: Sequence[dict[str, Any]], title: str = "",
                    reference: float | None = None, reference_name: str = "dense"):
  """Test accuracy (%) against sparsity (%) of each phase: its soup, best candidate,
  ensemble and candidates (dots), or for phases of one model (m = 1) that model alone; the
  model the phases started from as a horizontal line if given.

  Args:
    phases: results.json's 'phases': dicts with 'sparsity' (a fraction) and either 'soup',
      'best_candidate', 'ensemble' ({'test_accuracy', ...} each) and 'candidates'
      ([{'test_accuracy', ...}]), or 'model' ({'test_accuracy', ...}).
    title: the figure's title.
    reference: the starting model's test accuracy (a fraction), or None.
    reference_name: its label, e.g. 'dense' (`reference_label`).
  Returns:
    The matplotlib Figure.
  """
  figure, ax = _figure(6.4, 4.4)
  sparsity = [_percent(p["sparsity"]) for p in phases]
  candidates = [(s, _percent(c["test_accuracy"]))
                for s, p in zip(sparsity, phases) for c in p.get("candidates", [])]
  if candidates:
    ax.scatter(*zip(*candidates), s=14, color="0.6", alpha=0.7, label="candidates", zorder=2)
  for key, label, style in _PHASE_LINES:
    if all(key in p for p in phases):
      ax.plot(sparsity, [_percent(p[key]["test_accuracy"]) for p in phases], label=label,
              zorder=3, **style)
  if reference is not None:
    ax.axhline(_percent(reference), color="black", linewidth=1, linestyle="-.",
               label=reference_name)
  ax.set_xlabel("sparsity (%)")
  ax.set_ylabel("test accuracy (%)")
  ax.set_title(title)
  ax.grid(True, alpha=0.4)
  ax.legend()
  return figure


def _count(n: int) -> str:
  """A parameter count in a few characters: 432, 9.2k, 2.4M."""
  for scale, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
    if n >= scale:
      return f"{n / scale:.3g}{suffix}"
  return str(n)


def layer_figure(layers: Sequence[dict[str, Any]], title: str = ""):
  """Bars of each layer's sparsity (%), in forward order, labelled with the layer's size.

  Args:
    layers: `[{'name', 'size', 'nonzero', ...}]` in forward order (a phase's 'layers').
    title: the figure's title.
  Returns:
    The matplotlib Figure.
  """
  figure, ax = _figure(max(6.4, 0.28 * len(layers) + 2), 4.8)
  positions = range(len(layers))
  sparsity = [100.0 * (1 - l["nonzero"] / l["size"]) if l["size"] else 0.0 for l in layers]
  bars = ax.bar(positions, sparsity, color="tab:blue")
  ax.bar_label(bars, labels=[_count(l["size"]) for l in layers], rotation=90, padding=2,
               fontsize=7)
  names = [l["name"].removesuffix("/kernel") for l in layers]
  ax.set_xticks(list(positions), names, rotation=90, fontsize=7)
  ax.set_xlim(-0.6, len(layers) - 0.4)
  ax.set_ylim(0, 115)  # Room for the size labels above full bars.
  ax.set_ylabel("sparsity (%)")
  ax.set_title(title or "per-layer sparsity (bar labels: weights in the layer)")
  ax.grid(True, axis="y", alpha=0.4)
  return figure


def training_curves(results: dict[str, Any]) -> dict[str, list[tuple[float, float]]]:
  """The training curves of `results`, as (epoch, %) points on the experiment's epoch axis.

  The (pre)training `history` comes first, then each phase's `history`, one after the other.
  Returns `val_accuracy` (each epoch's with a validation accuracy; in phases of several
  candidates their mean), `sparsity` (each epoch's mask sparsity: the record's if the masks
  changed, else the phase's, else the start's) and `test_accuracy` (the `dense` model at the
  end of pretraining and each phase's soup or model at its end; without phases the `final`
  model at the last epoch).
  """
  start = results.get("init_mask")
  start_sparsity = 1.0 - start["achieved_density"] if start else 0.0
  phases = results.get("phases") or []
  spans = [(results.get("history") or [], start_sparsity,
            results.get("dense") if phases else results.get("final"))]
  spans += [(p.get("history") or [], p["sparsity"], outcome(p)) for p in phases]
  curves, offset = {"val_accuracy": [], "sparsity": [], "test_accuracy": []}, 0
  for history, sparsity, tested in spans:
    for record in history:
      epoch = offset + record["epoch"]
      val = report.candidate_mean(record.get("val_accuracy"))
      if not np.isnan(val):
        curves["val_accuracy"].append((epoch, 100.0 * val))
      curves["sparsity"].append((epoch, _percent(record.get("sparsity", sparsity))))
    offset += len(history)
    if tested and tested.get("test_accuracy") is not None:
      curves["test_accuracy"].append((offset, _percent(tested["test_accuracy"])))
  return curves


def training_figure(results: dict[str, Any], title: str = ""):
  """Accuracy (%) above and mask sparsity (%) below against epochs (`training_curves`), with
  the phases' starts as dotted vertical lines.

  Returns:
    The matplotlib Figure.
  """
  from matplotlib.ticker import MaxNLocator  # pylint: disable=g-import-not-at-top
  curves = training_curves(results)
  figure, (accuracy_ax, sparsity_ax) = _figure(7.2, 5.6, rows=2)
  several = any(isinstance(r.get("val_accuracy"), list) and len(r["val_accuracy"]) > 1
                for p in results.get("phases") or [] for r in p.get("history") or [])
  if curves["val_accuracy"]:
    accuracy_ax.plot(*zip(*curves["val_accuracy"]), color="tab:blue", label=(
        "val accuracy (candidates' mean in phases)" if several else "val accuracy"))
  if curves["test_accuracy"]:
    accuracy_ax.plot(*zip(*curves["test_accuracy"]), color="tab:red", marker="o",
                     linestyle="none", label="test accuracy", zorder=3)
  if curves["sparsity"]:
    sparsity_ax.plot(*zip(*curves["sparsity"]), color="tab:green", drawstyle="steps-pre",
                     label="sparsity")
  boundary = len(results.get("history") or [])
  for phase in results.get("phases") or []:
    for ax in (accuracy_ax, sparsity_ax):
      ax.axvline(boundary, color="0.5", linewidth=0.8, linestyle=":")
    boundary += len(phase.get("history") or [])
  accuracy_ax.set_ylabel("accuracy (%)")
  accuracy_ax.set_title(title)
  accuracy_ax.legend()
  sparsity_ax.set_ylabel("sparsity (%)")
  sparsity_ax.set_ylim(-2, 102)
  sparsity_ax.set_xlabel("epoch")
  sparsity_ax.xaxis.set_major_locator(MaxNLocator(integer=True))
  for ax in (accuracy_ax, sparsity_ax):
    ax.grid(True, alpha=0.4)
  return figure


def figures(results: dict[str, Any]) -> list[tuple[str, Any]]:
  """The plots `results` call for, as (file name, matplotlib Figure), in this order.

  Args:
    results: results.json's content, or a strategy's part of it with 'config' added (its
      strategy, dataset, model and seed title the plots): 'phases' give
      `accuracy_vs_sparsity.png` (against 'dense', or the 'init_mask' sparse start); the
      last phase's 'layers' (without phases: the results' 'layers') `layer_sparsity.png`;
      a 'history' `training.png` (`training_figure`).
  """
  run, phases = run_title(results), results.get("phases") or []
  out = []
  if phases:
    out.append(("accuracy_vs_sparsity.png", accuracy_figure(
        phases, _title(run, "test accuracy against sparsity"),
        (results.get("dense") or {}).get("test_accuracy"), reference_label(results))))
  layers, sparsity = ((phases[-1].get("layers"), phases[-1]["sparsity"]) if phases else
                      (results.get("layers"), (results.get("final") or {}).get("sparsity")))
  if layers:
    out.append(("layer_sparsity.png", layer_figure(layers, _title(
        run, f"per-layer sparsity at {_percent(sparsity):.1f}% (bar labels: weights in the "
        "layer)"))))
  if results.get("history"):
    out.append(("training.png", training_figure(
        results, _title(run, "accuracy and sparsity during training"))))
  return out


def write_plots(results: dict[str, Any], plot_dir: str) -> list[str]:
  """Writes the PNGs of `figures(results)` into `plot_dir` (created if needed); returns their
  paths (none without phases, layers or history)."""
  written = []
  for name, figure in figures(results):
    written.append(os.path.join(plot_dir, name))
    save(figure, written[-1])
  return written
