"""Plots of hand-made results: what each figure draws (lines, labels, titles), valid PNG
files, nothing written without phases, layers or history."""

import os
import subprocess
import sys

import numpy as np
import pytest

from sms_jax import plots

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
LAYERS = [{"name": "conv0/kernel", "shape": [3, 3, 1, 8], "size": 72, "nonzero": 72},
          {"name": "stage1_block0/conv1/kernel", "shape": [3, 3, 8, 8], "size": 576,
           "nonzero": 100},
          {"name": "classifier/kernel", "shape": [8, 10], "size": 80, "nonzero": 40}]
CONFIG = {"strategy": "sms", "seed": 3, "dataset": {"name": "mnist1d"},
          "model": {"name": "cnn1d"}}


def _history(epochs, val, **extra):
  """Per-epoch records: epoch 1.., `val_accuracy` from `val` (None: not evaluated)."""
  return [{"epoch": e, "train_loss": 1.0, **({"val_accuracy": v} if v is not None else {}),
           **extra} for e, v in enumerate(val, start=1)][:epochs]


def _phase(sparsity, accuracies, soup, layers=None):
  phase = {"sparsity": sparsity,
           "candidates": [{"hparams": {"seed": i}, "val_accuracy": a, "test_accuracy": a}
                          for i, a in enumerate(accuracies)],
           "soup": {"method": "uniform", "ingredients": list(range(len(accuracies))),
                    "val_accuracy": None, "test_accuracy": soup, "test_ece": 0.05},
           "best_candidate": {"index": 0, "val_accuracy": accuracies[0],
                              "test_accuracy": accuracies[0]},
           "ensemble": {"test_accuracy": soup + 0.01},
           "history": _history(2, [[a - 0.1 for a in accuracies], accuracies])}
  if layers is not None:
    phase["layers"] = layers
  return phase


def _model_phase(sparsity, accuracy):
  """A phase of one model (m = 1: imp)."""
  return {"sparsity": sparsity, "model": {"hparams": {"seed": 0}, "val_accuracy": accuracy,
                                          "test_accuracy": accuracy, "test_ece": 0.05},
          "history": _history(2, [[accuracy - 0.1], [accuracy]]), "layers": LAYERS}


PHASES = [_phase(0.5, [0.90, 0.91, 0.89], 0.92), _phase(0.75, [0.85, 0.88, 0.86], 0.89, LAYERS)]
RESULTS = {"config": CONFIG, "history": _history(3, [0.5, None, 0.9]),
           "dense": {"test_accuracy": 0.93}, "phases": PHASES}


def _legend(ax):
  return ax.get_legend_handles_labels()[1]


def _line(ax, label):
  (line,) = [l for l in ax.get_lines() if l.get_label() == label]
  return list(line.get_xdata()), list(line.get_ydata())


def _read_png(path):
  """Checks the PNG signature and decodes the image: `[h, w, channels]`."""
  from matplotlib import image  # pylint: disable=g-import-not-at-top
  with open(path, "rb") as f:
    assert f.read(8) == PNG_SIGNATURE
  pixels = image.imread(path)
  assert pixels.ndim == 3 and pixels.shape[2] in (3, 4)
  assert 200 < pixels.shape[0] < 2000 and 200 < pixels.shape[1] < 4000
  assert pixels.std() > 0  # Something was drawn.
  return pixels


def test_write_plots(tmp_path):
  plot_dir = tmp_path / "plots"
  paths = plots.write_plots(RESULTS, str(plot_dir))
  assert paths == [str(plot_dir / name) for name in ("accuracy_vs_sparsity.png",
                                                     "layer_sparsity.png", "training.png")]
  accuracy = _read_png(paths[0])
  assert accuracy.shape[:2] == (round(4.4 * plots.DPI), round(6.4 * plots.DPI))
  _read_png(paths[1])
  _read_png(paths[2])
  assert sorted(os.listdir(plot_dir)) == ["accuracy_vs_sparsity.png", "layer_sparsity.png",
                                          "training.png"]


def test_titles_name_the_strategy_the_config_and_the_seed():
  for name, figure in plots.figures(RESULTS):
    title = figure.axes[0].get_title()
    assert title.startswith("sms on mnist1d / cnn1d, seed 3\n"), (name, title)
  assert plots.run_title({}) == ""


def test_soups_draw_soup_best_candidate_ensemble_candidates_and_dense():
  (_, figure), *_ = plots.figures(RESULTS)
  ax = figure.axes[0]
  assert _legend(ax) == ["candidates", "soup", "best candidate (val)", "ensemble", "dense"]
  assert _line(ax, "soup") == ([50.0, 75.0], [92.0, 89.0])
  assert _line(ax, "dense")[1] == [93.0, 93.0]
  (scatter,) = ax.collections
  assert len(scatter.get_offsets()) == 6  # Every candidate of both phases.


def test_one_model_per_phase_draws_one_line():
  results = {"config": dict(CONFIG, strategy="imp"), "dense": {"test_accuracy": 0.93},
             "phases": [_model_phase(0.5, 0.91), _model_phase(0.75, 0.9)]}
  (_, figure), *_ = plots.figures(results)
  ax = figure.axes[0]
  assert _legend(ax) == ["model", "dense"]
  assert _line(ax, "model") == ([50.0, 75.0], [91.0, 90.0])
  assert not ax.collections  # No candidates.
  assert ax.get_title().startswith("imp on mnist1d")


@pytest.mark.parametrize("start, label", [
    ({"distribution": "erk", "density": 0.05, "method": "random"},
     "sparse start (ERK, density 0.05)"),
    ({"distribution": "global", "density": 0.1, "method": "snip"},
     "sparse start (SNIP, global, density 0.1)"),
    ({"distribution": "balanced", "density": 0.3, "method": "bernoulli"},
     "sparse start (bernoulli, balanced, density 0.3)"),
])
def test_a_sparse_starts_reference_line_is_labelled_as_such(start, label):
  results = {**RESULTS, "init_mask": {**start, "achieved_density": start["density"]}}
  (_, figure), *_ = plots.figures(results)
  assert _legend(figure.axes[0])[-1] == label
  assert "dense" not in _legend(figure.axes[0])


def test_training_curves_put_the_phases_after_pretraining():
  """3 pretraining epochs (val on epochs 1 and 3), then two phases of 2 epochs (val: the
  candidates' mean); test accuracy at the end of pretraining (dense) and of each phase (the
  soup); sparsity 0 then each phase's."""
  (_, figure), = [f for f in plots.figures(RESULTS) if f[0] == "training.png"]
  accuracy_ax, sparsity_ax = figure.axes
  assert _legend(accuracy_ax) == ["val accuracy (candidates' mean in phases)", "test accuracy"]
  epochs, val = _line(accuracy_ax, "val accuracy (candidates' mean in phases)")
  assert epochs == [1, 3, 4, 5, 6, 7]
  np.testing.assert_allclose(val, [50, 90, 80, 90, 76.3333, 86.3333], rtol=1e-5)
  assert _line(accuracy_ax, "test accuracy") == ([3, 5, 7], [93.0, 92.0, 89.0])
  assert _line(sparsity_ax, "sparsity") == ([1, 2, 3, 4, 5, 6, 7], [0, 0, 0, 50, 50, 75, 75])
  assert sparsity_ax.get_xlabel() == "epoch"


def test_sparse_training_plots_its_layers_and_its_curves():
  """gmp / set: no phases; the history's mask sparsity per epoch and the final test accuracy
  at the last epoch, from a sparse start."""
  results = {"config": dict(CONFIG, strategy="gmp"),
             "init_mask": {"distribution": "erk", "density": 0.5, "achieved_density": 0.5},
             "history": [{"epoch": e, "val_accuracy": v, "sparsity": s}
                         for e, v, s in ((1, 0.6, 0.5), (2, 0.7, 0.8), (3, 0.75, 0.9))],
             "final": {"test_accuracy": 0.74, "sparsity": 0.9}, "layers": LAYERS}
  named = dict(plots.figures(results))
  assert list(named) == ["layer_sparsity.png", "training.png"]
  assert "per-layer sparsity at 90.0%" in named["layer_sparsity.png"].axes[0].get_title()
  accuracy_ax, sparsity_ax = named["training.png"].axes
  assert accuracy_ax.get_title().startswith("gmp on mnist1d / cnn1d, seed 3")
  assert _line(accuracy_ax, "val accuracy") == ([1, 2, 3], [60.0, 70.0, 75.0])
  assert _line(accuracy_ax, "test accuracy") == ([3], [74.0])
  assert _line(sparsity_ax, "sparsity") == ([1, 2, 3], [50.0, 80.0, 90.0])


def test_rewriting_replaces_the_files(tmp_path):
  path = str(tmp_path / "acc.png")
  plots.save(plots.accuracy_figure(PHASES[:1], title="one phase"), path)
  plots.save(plots.accuracy_figure(PHASES), path)  # No dense line, no title.
  _read_png(path)
  assert os.listdir(tmp_path) == ["acc.png"]  # No temporary file left behind.


def test_layer_sparsity_plot_of_many_layers_widens():
  few = plots.layer_figure(LAYERS)
  many = plots.layer_figure([dict(LAYERS[1], name=f"layer{i}/kernel") for i in range(60)])
  assert many.get_size_inches()[0] > 2 * few.get_size_inches()[0]
  assert len(many.axes[0].patches) == 60


@pytest.mark.parametrize("results", [{}, {"phases": []}, {"phases": None, "dense": {}}])
def test_no_phases_writes_nothing(tmp_path, results):
  assert plots.write_plots(results, str(tmp_path / "plots")) == []
  assert not (tmp_path / "plots").exists()


def test_a_phase_without_layers_or_history_gives_only_the_accuracy_plot(tmp_path):
  phase = {k: v for k, v in PHASES[0].items() if k != "history"}
  paths = plots.write_plots({"phases": [phase]}, str(tmp_path))
  assert paths == [str(tmp_path / "accuracy_vs_sparsity.png")]


def test_importing_plots_does_not_import_matplotlib():
  code = "import sys, sms_jax.plots; assert 'matplotlib' not in sys.modules"
  root = os.path.dirname(os.path.dirname(os.path.abspath(plots.__file__)))
  subprocess.run([sys.executable, "-c", code], check=True, cwd=root)
