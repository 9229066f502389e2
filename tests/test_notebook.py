"""notebooks/quickstart.ipynb runs top to bottom (tiny setting) and its ONNX kNN matches the Keras monitor."""

import json
import os
import sys
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

NOTEBOOK = Path(__file__).resolve().parent.parent / "notebooks" / "quickstart.ipynb"


@pytest.mark.slow
def test_quickstart_notebook_runs_and_its_onnx_knn_matches_keras(tmp_path, monkeypatch):
    monkeypatch.setenv("QUICKSTART_TINY", "1")
    monkeypatch.setenv("TF_CPP_MIN_LOG_LEVEL", "3")
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    assert notebook.metadata.kernelspec.name == "python3"
    # Checks run in the kernel after the notebook's own cells.
    notebook.cells.append(nbformat.v4.new_code_cell(f"""
import sys
assert os.path.realpath(sys.prefix) == {os.path.realpath(sys.prefix)!r}, sys.prefix  # this interpreter's kernel
assert abs(onnx_knn - keras_knn) <= 2 / len(y_test), (onnx_knn, keras_knn)
assert export.metadata["training"]["epochs"] == EPOCHS
print(json.dumps({{"onnx_knn": onnx_knn, "keras_knn": keras_knn, "history": history.history["loss"]}}))
"""))
    # jupyter_client starts the kernelspec's `python` as sys.executable, so the kernel sees this venv.
    NotebookClient(notebook, kernel_name="python3", timeout=300,
                   resources={"metadata": {"path": str(tmp_path)}}).execute()

    outputs = [o for cell in notebook.cells if cell.cell_type == "code" for o in cell.get("outputs", [])]
    assert not [o for o in outputs if o.output_type == "error"]
    assert any(o.output_type in ("display_data", "execute_result") and "image/png" in o.get("data", {}) for o in outputs), "no curves"
    figures = json.loads(notebook.cells[-1].outputs[-1].text)
    assert len(figures["history"]) == 2 and all(-1 <= loss <= 1 for loss in figures["history"])
    assert (tmp_path / "runs" / "quickstart_notebook" / "curves.png").stat().st_size > 0
    assert sorted(os.listdir(tmp_path / "exported" / "quickstart_notebook")) == [
        "metadata.json", "model.onnx", "saved_model"]
