"""What long benchmarks measured, kept as they go: one JSON line per finished measurement, appended and
fsynced at once, so that a killed run loses nothing and a rerun measures only what is missing.
Hand-written: Lightning checkpoints resume one run, not a grid of runs."""

from __future__ import annotations

import json
import os
from pathlib import Path


def load_results(path: Path) -> dict[str, dict]:
    """Every entry of ``path`` by its ``key`` (none when the file does not exist yet)."""
    done = {}
    if path.exists():
        for line in path.read_text().splitlines():
            try:
                entry = json.loads(line)
            except json.JSONDecodeError:  # a line cut short by a kill
                continue
            done[entry["key"]] = entry
    return done


def append_result(path: Path, entry: dict) -> None:
    """Appends ``entry`` (with its ``key``) to ``path`` and makes it durable before returning."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as f:
        f.write(json.dumps(entry) + "\n")
        f.flush()
        os.fsync(f.fileno())
