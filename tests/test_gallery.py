"""benchmarks/gallery.py, the README's pictures, runs with a smoke budget and writes every figure."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from PIL import Image

from tests.conftest import REPO

FIGURES = ("real_vs_generated.png", "per_class.png", "curves.png")


@pytest.mark.timeout(600)
def test_the_gallery_writes_its_figures_and_reuses_finished_runs(tmp_path):
    command = [
        sys.executable, str(REPO / "benchmarks" / "gallery.py"), "--steps", "4", "--eval-every", "2",
        "--eval-samples", "100", "--out", str(tmp_path / "docs"), "--root", str(tmp_path / "runs"),
    ]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    first = subprocess.run(command, env=env, capture_output=True, text=True, cwd=tmp_path)
    assert first.returncode == 0, first.stderr[-3000:]
    assert "dcgan: FID" in first.stdout and "cdcgan: FID" in first.stdout
    for name in FIGURES:
        width, height = Image.open(tmp_path / "docs" / name).size
        assert width > 300 and height > 200, name
    (tmp_path / "docs" / "curves.png").unlink()
    again = subprocess.run(command, env=env, capture_output=True, text=True, cwd=tmp_path)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "dcgan: reusing" in again.stdout and "cdcgan: reusing" in again.stdout
    assert (tmp_path / "docs" / "curves.png").is_file()


def test_the_readme_opens_with_the_committed_figures():
    readme = (REPO / "README.md").read_text()
    opening = readme[: readme.index("GANs in PyTorch Lightning")]
    for name in FIGURES:
        assert f"](docs/{name})" in opening
        assert Image.open(REPO / "docs" / name).size[0] > 300
