"""The quickstart notebook runs top to bottom (offline), so it cannot rot."""
from __future__ import annotations

from pathlib import Path

import pytest

NOTEBOOK = Path(__file__).resolve().parents[1] / "notebooks" / "quickstart.ipynb"


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_quickstart_notebook_runs(tmp_path, monkeypatch):
    import nbclient  # dev extra: a missing package must fail the suite, not skip the notebook
    import nbformat

    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    for cell in notebook.cells:  # run from a clean state: the committed outputs must not matter
        if cell.cell_type == "code":
            cell.outputs, cell.execution_count = [], None
    client = nbclient.NotebookClient(notebook, timeout=600, kernel_name="python3",
                                     resources={"metadata": {"path": str(tmp_path)}})
    client.execute()  # raises CellExecutionError on any failing cell
    outputs = [output for cell in notebook.cells if cell.cell_type == "code" for output in cell.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    text = "".join(o.get("text", "") for o in outputs if o.output_type == "stream")
    assert "certified radius" in text and "r = 0.50: certified accuracy" in text
    assert any("image/png" in o.get("data", {}) for o in outputs), "the curve was not plotted"
