"""The Colab notebooks run top to bottom (on a shortened config)."""

import os

import nbformat
import pytest
from nbclient import NotebookClient

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.parametrize("name", ["sms_quickstart.ipynb"])
def test_notebook_runs(name, monkeypatch):
  monkeypatch.setenv("SMS_JAX_NOTEBOOK_QUICK", "1")
  notebook = nbformat.read(os.path.join(ROOT, "colab", name), as_version=4)
  NotebookClient(notebook, timeout=600, kernel_name="python3",
                 resources={"metadata": {"path": os.path.join(ROOT, "colab")}}).execute()
  outputs = "".join(o.get("text", "") for cell in notebook.cells for o in cell.get("outputs", []))
  assert "sparsity after 3 steps: 0.9" in outputs and "soup == 1.5 x params: True" in outputs
  images = [o for cell in notebook.cells for o in cell.get("outputs", [])
            if "image/png" in o.get("data", {})]
  assert len(images) == 2
