"""Plots of hand-made results: valid PNG files, nothing written without phases."""

import os
import subprocess
import sys

import pytest

from sms_jax import plots

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
LAYERS = [{"name": "conv0/kernel", "shape": [3, 3, 1, 8], "size": 72, "nonzero": 72},
          {"name": "stage1_block0/conv1/kernel", "shape": [3, 3, 8, 8], "size": 576,
           "nonzero": 100},
          {"name": "classifier/kernel", "shape": [8, 10], "size": 80, "nonzero": 40}]


def _phase(sparsity, accuracies, soup, layers=None):
  phase = {"sparsity": sparsity,
           "candidates": [{"hparams": {"seed": i}, "val_accuracy": a, "test_accuracy": a}
                          for i, a in enumerate(accuracies)],
           "soup": {"method": "uniform", "ingredients": list(range(len(accuracies))),
                    "val_accuracy": None, "test_accuracy": soup, "test_ece": 0.05},
           "best_candidate": {"index": 0, "val_accuracy": accuracies[0],
                              "test_accuracy": accuracies[0]},
           "ensemble": {"test_accuracy": soup + 0.01}}
  if layers is not None:
    phase["layers"] = layers
  return phase


PHASES = [_phase(0.5, [0.90, 0.91, 0.89], 0.92), _phase(0.75, [0.85, 0.88, 0.86], 0.89, LAYERS)]


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
  results = {"phases": PHASES, "dense": {"test_accuracy": 0.93}}
  paths = plots.write_plots(results, str(plot_dir))
  assert paths == [str(plot_dir / "accuracy_vs_sparsity.png"),
                   str(plot_dir / "layer_sparsity.png")]
  accuracy = _read_png(paths[0])
  assert accuracy.shape[:2] == (round(4.4 * plots.DPI), round(6.4 * plots.DPI))
  _read_png(paths[1])
  assert sorted(os.listdir(plot_dir)) == ["accuracy_vs_sparsity.png", "layer_sparsity.png"]


def test_rewriting_replaces_the_files(tmp_path):
  path = str(tmp_path / "acc.png")
  plots.plot_accuracy_vs_sparsity(PHASES[:1], path, title="one phase")
  plots.plot_accuracy_vs_sparsity(PHASES, path)  # No dense line, no title.
  _read_png(path)
  assert os.listdir(tmp_path) == ["acc.png"]  # No temporary file left behind.


def test_layer_sparsity_plot_of_many_layers_widens(tmp_path):
  few, many = str(tmp_path / "few.png"), str(tmp_path / "many.png")
  plots.plot_layer_sparsity(LAYERS, few)
  plots.plot_layer_sparsity([dict(LAYERS[1], name=f"layer{i}/kernel") for i in range(60)], many)
  assert _read_png(many).shape[1] > 2 * _read_png(few).shape[1]


@pytest.mark.parametrize("results", [{}, {"phases": []}, {"phases": None, "dense": {}}])
def test_no_phases_writes_nothing(tmp_path, results):
  assert plots.write_plots(results, str(tmp_path / "plots")) == []
  assert not (tmp_path / "plots").exists()


def test_a_phase_without_layers_gives_only_the_accuracy_plot(tmp_path):
  paths = plots.write_plots({"phases": PHASES[:1]}, str(tmp_path))
  assert paths == [str(tmp_path / "accuracy_vs_sparsity.png")]


def test_importing_plots_does_not_import_matplotlib():
  code = "import sys, sms_jax.plots; assert 'matplotlib' not in sys.modules"
  root = os.path.dirname(os.path.dirname(os.path.abspath(plots.__file__)))
  subprocess.run([sys.executable, "-c", code], check=True, cwd=root)
