"""notebooks/quickstart.ipynb runs top to bottom in a real Jupyter kernel, with a small budget."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from tests.conftest import REPO

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")

NOTEBOOK = REPO / "notebooks" / "quickstart.ipynb"
BUDGET = re.compile(r"^STEPS = \d+", re.MULTILINE)


def with_steps(notebook, steps: int):
    """The notebook with ``STEPS = steps`` in its first code cell, where the budget is set."""
    first = next(cell for cell in notebook.cells if cell.cell_type == "code")
    assert BUDGET.search(first.source), "the first code cell must set STEPS"
    first.source = BUDGET.sub(f"STEPS = {steps}", first.source)
    return notebook


@pytest.mark.timeout(600)
def test_the_quickstart_notebook_runs_top_to_bottom_in_a_jupyter_kernel(tmp_path: Path):
    notebook = with_steps(nbformat.read(NOTEBOOK, as_version=4), steps=4)
    env = {"PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    client = nbclient.NotebookClient(
        notebook, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}
    )
    old = {key: os.environ.get(key) for key in env}
    os.environ.update(env)  # the kernel inherits it: the code under test, one thread per test worker
    try:
        client.execute()  # raises CellExecutionError naming the cell when one fails
    finally:
        for key, value in old.items():
            os.environ.pop(key) if value is None else os.environ.__setitem__(key, value)
    outputs = [out for cell in notebook.cells if cell.cell_type == "code" for out in cell.get("outputs", [])]
    images = [out for out in outputs if "image/png" in out.get("data", {})]
    text = "".join(out.get("text", "") for out in outputs)
    assert len(images) >= 6  # DCGAN, its curves, CDCGAN, the two variants and their curves
    assert "DCGAN at generator step 4: " in text and "fid" in text and "coverage" in text
    assert "label_agreement" in text
    assert re.search(r"test accuracy, real only: [\d.]+%; real \+ generated: [\d.]+%", text)
    assert (tmp_path / "runs" / "quickstart" / "cdcgan" / "last.ckpt").is_file()


def test_the_committed_notebook_shows_the_outputs_of_a_full_run():
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    code = [cell for cell in notebook.cells if cell.cell_type == "code"]
    steps = int(BUDGET.search(code[0].source).group().split("=")[1])
    assert steps >= 1000
    assert all(cell.get("execution_count") for cell in code)  # every cell ran, in one session
    text = "".join(out.get("text", "") for cell in code for out in cell.get("outputs", []))
    assert f"DCGAN at generator step {steps}: " in text
