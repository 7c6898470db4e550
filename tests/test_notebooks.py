"""The Colab notebooks run top to bottom (on a shortened config)."""

import os

import nbformat
import pytest
from nbclient import NotebookClient

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# Each notebook and what its (quick) run must print.
EXPECTED_OUTPUT = {
    "sms_quickstart.ipynb": ["sparsity after 3 steps: 0.9", "soup == 1.5 x params: True",
                             "same: True"],
    "random_pruning.ipynb": ["(within 1e-3: True)", "revived weights: 0", "no layer grew: True"],
}


@pytest.mark.parametrize("name", sorted(EXPECTED_OUTPUT))
def test_notebook_runs(name, monkeypatch):
  monkeypatch.setenv("SMS_JAX_NOTEBOOK_QUICK", "1")
  notebook = nbformat.read(os.path.join(ROOT, "colab", name), as_version=4)
  NotebookClient(notebook, timeout=600, kernel_name="python3",
                 resources={"metadata": {"path": os.path.join(ROOT, "colab")}}).execute()
  outputs = "".join(o.get("text", "") for cell in notebook.cells for o in cell.get("outputs", []))
  for expected in EXPECTED_OUTPUT[name]:
    assert expected in outputs
  images = [o for cell in notebook.cells for o in cell.get("outputs", [])
            if "image/png" in o.get("data", {})]
  assert len(images) == 2
