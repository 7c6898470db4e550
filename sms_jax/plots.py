"""PNG plots of a run's results: accuracy against sparsity, per-layer sparsity.

Matplotlib is imported inside the functions, so that importing sms_jax stays light. Figures
are drawn with the Agg canvas (no GUI, no pyplot state to close) and written atomically.
"""

import os
from typing import Any, Sequence

from sms_jax import report

DPI = 120


def _figure(width: float, height: float):
  """A new figure drawn by the Agg canvas, with one axes: (figure, axes)."""
  from matplotlib.backends.backend_agg import FigureCanvasAgg  # pylint: disable=g-import-not-at-top
  from matplotlib.figure import Figure  # pylint: disable=g-import-not-at-top
  figure = Figure(figsize=(width, height), layout="constrained")
  FigureCanvasAgg(figure)
  return figure, figure.add_subplot()


def _save(figure, path: str) -> None:
  """Writes `figure` to `path` as PNG, atomically."""
  with report.atomic_write(path, "wb") as f:
    figure.savefig(f, format="png", dpi=DPI)


def _percent(value: float | None) -> float:
  return float("nan") if value is None else 100.0 * value


def plot_accuracy_vs_sparsity(phases: Sequence[dict[str, Any]], path: str, title: str = "",
                              dense_test_accuracy: float | None = None) -> None:
  """Test accuracy (%) against sparsity (%) of each phase's soup, best candidate, ensemble
  and candidates (dots), with the dense model as a horizontal line if given.

  Args:
    phases: results.json's 'phases': dicts with 'sparsity' (a fraction), 'candidates'
      ([{'test_accuracy', ...}]), 'soup', 'best_candidate' and 'ensemble'
      ({'test_accuracy', ...} each).
    path: the PNG to write.
    title: the figure's title.
    dense_test_accuracy: the dense model's test accuracy (a fraction), or None.
  """
  figure, ax = _figure(6.4, 4.4)
  sparsity = [_percent(p["sparsity"]) for p in phases]
  candidates = [(s, _percent(c["test_accuracy"]))
                for s, p in zip(sparsity, phases) for c in p.get("candidates", [])]
  if candidates:
    ax.scatter(*zip(*candidates), s=14, color="0.6", alpha=0.7, label="candidates", zorder=2)
  for key, label, style in (("soup", "soup", dict(marker="o", linestyle="-", linewidth=2)),
                            ("best_candidate", "best candidate (val)",
                             dict(marker="s", linestyle="--")),
                            ("ensemble", "ensemble", dict(marker="^", linestyle=":"))):
    if all(key in p for p in phases):
      ax.plot(sparsity, [_percent(p[key]["test_accuracy"]) for p in phases], label=label,
              zorder=3, **style)
  if dense_test_accuracy is not None:
    ax.axhline(_percent(dense_test_accuracy), color="black", linewidth=1, linestyle="-.",
               label="dense")
  ax.set_xlabel("sparsity (%)")
  ax.set_ylabel("test accuracy (%)")
  ax.set_title(title)
  ax.grid(True, alpha=0.4)
  ax.legend()
  _save(figure, path)


def _count(n: int) -> str:
  """A parameter count in a few characters: 432, 9.2k, 2.4M."""
  for scale, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
    if n >= scale:
      return f"{n / scale:.3g}{suffix}"
  return str(n)


def plot_layer_sparsity(layers: Sequence[dict[str, Any]], path: str, title: str = "") -> None:
  """Bars of each layer's sparsity (%), in forward order, labelled with the layer's size.

  Args:
    layers: `[{'name', 'size', 'nonzero', ...}]` in forward order (a phase's 'layers').
    path: the PNG to write.
    title: the figure's title.
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
  _save(figure, path)


def write_plots(results: dict[str, Any], plot_dir: str) -> list[str]:
  """Writes `accuracy_vs_sparsity.png` and `layer_sparsity.png` (the last phase's layers).

  Args:
    results: a results dict with 'phases' and optionally 'dense' ({'test_accuracy', ...}).
    plot_dir: the directory for the PNGs (created if needed).
  Returns:
    The paths written: none without phases; no layer plot if the last phase has no 'layers'.
  """
  phases = results.get("phases") or []
  if not phases:
    return []
  written = [os.path.join(plot_dir, "accuracy_vs_sparsity.png")]
  plot_accuracy_vs_sparsity(phases, written[0], "test accuracy against sparsity",
                            (results.get("dense") or {}).get("test_accuracy"))
  if phases[-1].get("layers"):
    written.append(os.path.join(plot_dir, "layer_sparsity.png"))
    plot_layer_sparsity(phases[-1]["layers"], written[1],
                        f"per-layer sparsity at {_percent(phases[-1]['sparsity']):.1f}% "
                        "(bar labels: weights in the layer)")
  return written
