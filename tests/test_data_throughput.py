"""benchmarks/data_throughput.py at a tiny scale: every source (the folder, .npy and streaming modules and
their plain PyTorch baselines) is measured, each measurement is kept in the results file, and a rerun reuses
them all."""

import json
import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

# source, images, workers, images/s, ratio to the baseline, first batch s, 4 x peak memory MB
SOURCES = ("baseline-folder", "folder", "streaming-folder", "baseline-npy", "npy", "streaming-npy")
ROW = re.compile(r"^(\S+) +(\d+) +(\d+) +([\d.]+) +([\d.]+x|-) +([\d.]+)" + r" +([\d.]+)" * 4 + "$", re.M)
SIZES, NPY_IMAGES = (200, 400), 814  # --npy-gb 0.01: 1e7 / 12288 images


def run(tmp_path: Path) -> str:
    command = [
        sys.executable, str(REPO / "benchmarks" / "data_throughput.py"), "--root", str(tmp_path / "data"),
        "--sizes", *map(str, SIZES), "--npy-gb", "0.01", "--workers", "0", "1", "--batches", "3",
        "--batch-size", "16", "--results", str(tmp_path / "results.jsonl"),
    ]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, timeout=240, cwd=tmp_path)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done.stdout


def test_every_source_measured_and_kept_and_reused(tmp_path):
    out = run(tmp_path)
    rows = {(m[1], int(m[2]), int(m[3])): m for m in ROW.finditer(out)}
    expected = {
        (source, size, workers)
        for source in SOURCES
        for size in (SIZES if source.endswith("folder") else (NPY_IMAGES,))
        for workers in (0, 1)
    }
    assert expected <= set(rows), f"missing rows {expected - set(rows)} in:\n{out}"
    for (source, _, workers), match in rows.items():
        images_per_s, ratio, first_batch_s = float(match[4]), match[5], float(match[6])
        assert images_per_s > 0 and first_batch_s >= 0
        assert ratio == "1.00x" if source.startswith("baseline") else ratio.endswith("x")
        # the memory sampler saw the main process and its worker, if any: RSS, and the anonymous part of it
        rss_main, rss_workers, anon_main, anon_workers = (float(match[i]) for i in range(7, 11))
        assert rss_main >= anon_main > 0 and rss_workers >= anon_workers >= 0, out
        assert (anon_workers > 0) == (workers == 1), out
    assert "Targets (issue)" in out and "folder, 400 images, 1 workers: " in out

    results = tmp_path / "results.jsonl"
    entries = [json.loads(line) for line in results.read_text().splitlines()]
    assert {(e["source"], e["images"], e["workers"]) for e in entries} == set(rows)
    assert all(e["images_per_s"] > 0 and e["anon_main"] > 0 for e in entries)

    kept = results.read_bytes()
    again = run(tmp_path)
    # (a change to lightning_gan/data/*.py between the two runs re-measures the library's sources)
    assert f"0 measured, {len(rows)} reused" in again, again
    assert again.count("reused from") == len(rows)
    assert again.count("reusing ") >= 3  # the data too: two folders and the .npy
    assert results.read_bytes() == kept
    assert {(m[1], int(m[2]), int(m[3])) for m in ROW.finditer(again)} == set(rows)
