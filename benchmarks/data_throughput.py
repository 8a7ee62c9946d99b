"""Data loading throughput and memory: the library's data modules against a plain PyTorch Dataset.

Writes into ``--root`` synthetic 64x64 RGB data, reused once complete: PNGs ``folder_<n>/class_<c>/<i>.png``
for each of ``--sizes``, a uint8 ``npy_<n>/images.npy`` (N, 3, 64, 64) of ``--npy-gb`` GB and ``labels.npy``,
and their streaming copies in ``streaming/``. Then, per source and number of ``--workers``, in a new process
(one thread, forked from a server that holds the imports): images per second over ``--batches`` batches after
the first; the time from constructing the data module (or dataset) to the first batch; peak memory of the main
process and of its workers (summed), sampled every 20 ms: resident (RSS) and anonymous (RssAnon: a memory
map's touched pages are page cache).

Sources: ``folder``, ``npy`` (ImageFolderDataModule, ArrayDataModule), ``streaming-folder``, ``streaming-npy``
(StreamingDataModule over ``convert``'s copies; skipped with a note where they cannot be made), the baselines
``baseline-folder``, ``baseline-npy`` (class ``Baseline``).

    python benchmarks/data_throughput.py [--sizes 5000 50000] [--npy-gb 5] [--workers 0 1 2] [--batches 200]

Each measurement is appended to ``--results`` as it finishes (``results_log``); a rerun measures only what
is missing. The library sources' keys hold a digest of ``lightning_gan/data/*.py``: a change re-measures them.
"""

from __future__ import annotations

import argparse
import hashlib
import itertools
import multiprocessing
import os
import shutil
import threading
import time
from pathlib import Path

import numpy as np
import psutil
import torch
from PIL import Image
from results_log import append_result, load_results
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

REPO = Path(__file__).resolve().parents[1]
SIDE, CLASSES, CHUNK = 64, 10, 1024
PIXELS = 3 * SIDE * SIDE
DATA_VERSION = 1  # in every key: bump it when synth() changes
SOURCES = ("baseline-folder", "folder", "streaming-folder", "baseline-npy", "npy", "streaming-npy")
FIRST_BATCH_TARGET_S = 5.0
MB = 2**20


def synth(start: int, count: int) -> tuple[np.ndarray, np.ndarray]:
    """Images ``start .. start + count - 1``, (count, 64, 64, 3) uint8: a smooth colour gradient, a brightness
    per class and noise; and their labels (index mod 10). The same images for the same arguments."""
    rng = np.random.default_rng([DATA_VERSION, start])
    labels = np.arange(start, start + count) % CLASSES
    ramp = np.linspace(-1, 1, SIDE, dtype=np.float32)
    slope_x, slope_y, offset = rng.uniform(-60, 60, (3, count, 1, 1, 3)).astype(np.float32)
    tint = (labels * 20.0 - 90.0).astype(np.float32)[:, None, None, None]
    images = 127.5 + slope_x * ramp[None, None, :, None] + slope_y * ramp[None, :, None, None] + offset + tint
    images += 8 * rng.standard_normal((count, SIDE, SIDE, 3), dtype=np.float32)
    return np.clip(images, 0, 255).astype(np.uint8), labels


def write_folder(path: Path, n: int) -> None:
    """``path/class_<c>/<i>.png`` for i < n. Each file is written whole, then renamed, and files already there
    are kept: an interrupted run resumes."""
    for label in range(CLASSES):
        (path / f"class_{label}").mkdir(parents=True, exist_ok=True)
    for start in tqdm(range(0, n, CHUNK), desc=f"writing {n} PNGs to {path}", unit=f"x{CHUNK} images"):
        images, labels = synth(start, min(CHUNK, n - start))
        for i, (image, label) in enumerate(zip(images, labels, strict=True)):
            file = path / f"class_{label}" / f"{start + i}.png"
            if not file.exists():
                Image.fromarray(image).save(partial := file.with_name(file.name + ".partial"), format="PNG")
                os.replace(partial, file)


def write_npy(path: Path, n: int) -> None:
    """``path/images.npy`` (n, 3, 64, 64) uint8, written a chunk at a time through a memory map (never held
    in memory), and ``path/labels.npy`` (n,) int64."""
    path.mkdir(parents=True, exist_ok=True)
    partial = path / "images.npy.partial"
    out = np.lib.format.open_memmap(partial, mode="w+", dtype=np.uint8, shape=(n, 3, SIDE, SIDE))
    labels = np.empty(n, dtype=np.int64)
    desc = f"writing {n * PIXELS / 1e9:.2f} GB to {path}"
    for start in tqdm(range(0, n, CHUNK), desc=desc, unit=f"x{CHUNK} images"):
        images, labels[start : start + CHUNK] = synth(start, min(CHUNK, n - start))
        out[start : start + len(images)] = images.transpose(0, 3, 1, 2)
        if start % (64 * CHUNK) == 0:
            out.flush()  # hands the dirty pages to the disk as it goes
    out.flush()
    np.save(path / "labels.npy", labels)
    os.replace(partial, path / "images.npy")


class Baseline(Dataset):
    """Plain PyTorch: ``root/<class>/*.png`` decoded by PIL per item, or rows of a memory-mapped ``.npy``."""

    def __init__(self, path: Path, kind: str) -> None:
        self.kind = kind
        if kind == "folder":
            folders = sorted(p for p in path.iterdir() if p.is_dir())
            self.items = [
                (f, label) for label, folder in enumerate(folders) for f in sorted(folder.glob("*.png"))
            ]
        else:
            self.images = np.load(path / "images.npy", mmap_mode="r")
            self.items = np.load(path / "labels.npy")

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        if self.kind == "npy":
            return torch.from_numpy(self.images[index].astype(np.float32) / 127.5 - 1), int(self.items[index])
        file, label = self.items[index]
        with Image.open(file) as image:
            pixels = np.array(image.convert("RGB"))
        return torch.from_numpy(pixels).permute(2, 0, 1).float() / 127.5 - 1, label


def module_factory(source: str, spec: dict):
    """A function constructing the data module of ``source`` (imported beforehand, outside the timing)."""
    common = {"batch_size": spec["batch_size"], "num_workers": spec.get("workers", 0)}
    if source == "folder":
        from lightning_gan.data import ImageFolderDataModule as Module

        kwargs = {"root": spec["path"], "seed": 0, "val_fraction": 0.1, "test_fraction": 0.1, "cache": False}
    elif source == "npy":
        from lightning_gan.data import ArrayDataModule as Module

        kwargs = {
            "path": str(Path(spec["path"]) / "images.npy"),
            "labels": str(Path(spec["path"]) / "labels.npy"),
        }
    else:
        from lightning_gan.data.streaming import StreamingDataModule as Module

        kwargs = {"root": spec["stream"]}
    return lambda: Module(**kwargs, **common)


def loader_factory(spec: dict):
    """A function returning the train loader of ``spec["source"]``."""
    source, workers, path = spec["source"], spec["workers"], Path(spec["path"])
    if not source.startswith("baseline-"):
        make = module_factory(source, spec)
        return lambda: make().train_dataloader()
    return lambda: DataLoader(
        Baseline(path, source.removeprefix("baseline-")),
        batch_size=spec["batch_size"], shuffle=True, drop_last=True, num_workers=workers,
        persistent_workers=workers > 0,
    )  # fmt: skip


def check_batch(batch, batch_size: int) -> None:
    (images, labels), shape = batch[:2], (batch_size, 3, SIDE, SIDE)
    if (images.dtype, tuple(images.shape), labels.dtype) != (torch.float32, shape, torch.int64) or not (
        -1 <= images.min() <= images.max() <= 1
    ):
        raise ValueError(f"a batch of {images.dtype} {tuple(images.shape)} in [{images.min():.3g}, "
                         f"{images.max():.3g}], labels {labels.dtype}: expected float32 {shape} in [-1, 1], "
                         "int64")  # fmt: skip


def endless(loader):
    """The loader's batches, epoch after epoch, as training draws them."""
    while True:
        batch = None
        for batch in loader:
            yield batch
        if batch is None:
            raise ValueError("the train loader yields no batches")


def measure(spec: dict) -> dict:
    """Time to the first batch and images per second of ``spec``'s train loader."""
    make = loader_factory(spec)
    start = time.perf_counter()
    batches = endless(make())
    first = next(batches)
    first_batch_s = time.perf_counter() - start
    check_batch(first, spec["batch_size"])
    start = time.perf_counter()
    for _ in itertools.islice(batches, spec["batches"]):
        pass
    seconds = time.perf_counter() - start
    return {"images_per_s": spec["batches"] * spec["batch_size"] / seconds, "first_batch_s": first_batch_s}


def memory(process) -> np.ndarray:
    """[RSS, anonymous RSS] of a psutil ``process`` in bytes. RssAnon (/proc/<pid>/status) leaves out
    file-backed pages: a memory map's page cache, shared libraries. Linux only."""
    with open(f"/proc/{process.pid}/status") as f:
        fields = dict(line.split(":", 1) for line in f if ":" in line)
    return np.array([int(fields.get(key, "0 kB").split()[0]) * 1024 for key in ("VmRSS", "RssAnon")])


def sample_peaks(pid: int, stopped: threading.Event, peaks: dict) -> None:
    """Every 20 ms until ``stopped``: memory of process ``pid`` and the sum over its children (the
    DataLoader workers); keeps the peaks, in MB, in ``peaks``."""
    process, main, workers = psutil.Process(pid), np.zeros(2), np.zeros(2)
    while not stopped.is_set():
        try:
            now, children = memory(process), process.children(recursive=True)
        except (OSError, psutil.Error):
            break  # the process has ended
        summed = np.zeros(2)
        for child in children:
            try:
                summed += memory(child)
            except (OSError, psutil.Error):
                continue  # a worker that has just exited
        main, workers = np.maximum(main, now), np.maximum(workers, summed)
        peaks.update(rss_main=main[0] / MB, anon_main=main[1] / MB, rss_workers=workers[0] / MB,
                     anon_workers=workers[1] / MB, samples=peaks.get("samples", 0) + 1)  # fmt: skip
        stopped.wait(0.02)


def child(task: str, spec: dict, conn) -> None:
    """The measuring process: a fork of the fork server, which has imported this script and lightning_gan."""
    torch.set_num_threads(1)
    multiprocessing.set_start_method(spec["start_method"], force=True)  # the workers': as in the caller
    try:
        if task == "measure":
            result = measure(spec)
        else:  # the streaming copy of a data set
            from lightning_gan.data.streaming import convert

            start = time.perf_counter()
            convert(module_factory(spec["kind"], spec)(), spec["stream"])
            result = {"seconds": time.perf_counter() - start}
    except Exception as error:  # reported to the orchestrating process, which goes on
        result = {"error": f"{type(error).__name__}: {error}"}
    conn.send(result)


def in_fresh_process(task: str, spec: dict) -> dict:
    """Runs ``task`` in a new process, forked from a server that holds only the imports (so neither the
    imports' time nor an earlier measurement's memory count): its result and its peak memory."""
    context = multiprocessing.get_context("forkserver")
    receive, send = context.Pipe(duplex=False)
    spec = {**spec, "start_method": multiprocessing.get_start_method()}  # not the fork server's
    process = context.Process(target=child, args=(task, spec, send))
    process.start()
    send.close()
    stopped, peaks = threading.Event(), {}
    sampler = threading.Thread(target=sample_peaks, args=(process.pid, stopped, peaks), daemon=True)
    sampler.start()
    try:
        result = receive.recv()
    except EOFError:
        result = {}
    process.join()
    stopped.set()
    sampler.join()
    return {**result, **peaks} if result else {"error": f"the process died (exit code {process.exitcode})"}


def code_digest() -> str:
    digest = hashlib.sha256()
    for file in sorted((REPO / "lightning_gan" / "data").glob("*.py")):
        digest.update(file.name.encode() + file.read_bytes())
    return digest.hexdigest()[:12]


def prepare(kind: str, n: int, path: Path, stream: Path | None, args, digest: str) -> str | None:
    """Writes a data set (``stream`` None) or its streaming copy unless complete (a copy: made by the same
    code); None when done, else why it could not be made."""
    target = stream or path
    marker, stamp = target.with_name(target.name + ".complete"), digest if stream else f"v{DATA_VERSION}"
    if marker.exists() and marker.read_text() == stamp:
        print(f"reusing {target} (complete)", flush=True)
        return None
    if stream is None:
        (write_folder if kind == "folder" else write_npy)(path, n)
    else:
        shutil.rmtree(stream, ignore_errors=True)  # a copy cut short, or made by other code
        print(f"converting {path} to {stream} ...", flush=True)
        spec = {"kind": kind, "path": str(path), "stream": str(stream), "batch_size": args.batch_size}
        result = in_fresh_process("convert", spec)
        if "error" in result:
            return result["error"]
        print(f"converted {n} images in {result['seconds']:.1f} s (peak anon {result['anon_main']:.0f} MB)")
    marker.write_text(stamp)
    return None


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--root", default="/tmp/lightning_gan_data_throughput", help="where the data go")
    parser.add_argument("--sizes", type=int, nargs="+", default=[5000, 50000], help="PNGs per folder")
    parser.add_argument("--npy-gb", type=float, default=5.0, help="size of images.npy in GB (1e9 bytes)")
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--batches", type=int, default=200, help="batches timed after the first")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--sources", nargs="+", choices=SOURCES, default=list(SOURCES))
    parser.add_argument("--results", default=str(REPO / "runs" / "data_throughput" / "results.jsonl"))
    args = parser.parse_args(argv)
    os.environ["OMP_NUM_THREADS"] = os.environ["MKL_NUM_THREADS"] = "1"  # in the fork server and its forks
    multiprocessing.set_forkserver_preload(["__main__", "lightning_gan.data"])
    root, results_path, digest = Path(args.root), Path(args.results), code_digest()
    npy_n = max(1, round(args.npy_gb * 1e9 / PIXELS))
    sets = [("folder", n, root / f"folder_{n}") for n in sorted(set(args.sizes))]
    sets.append(("npy", npy_n, root / f"npy_{npy_n}"))
    sets = [s for s in sets if any(source.endswith(s[0]) for source in args.sources)]
    notes, skip = [], set()
    for kind, n, path in sets:
        prepare(kind, n, path, None, args, digest)
        stream = root / "streaming" / path.name
        if f"streaming-{kind}" in args.sources and (why := prepare(kind, n, path, stream, args, digest)):
            skip.add((f"streaming-{kind}", n))
            notes.append(f"streaming-{kind}: skipped, no streaming copy of {path}: {why}")
            print(notes[-1], flush=True)

    done, rows, reused = load_results(results_path), [], 0
    for kind, n, path in sets:
        for workers in args.workers:
            for source in (s for s in args.sources if s.endswith(kind) and (s, n) not in skip):
                code = f"data-v{DATA_VERSION}" + ("" if source.startswith("baseline") else f"-code-{digest}")
                key = f"{source}|n={n}|workers={workers}|batches={args.batches}|bs={args.batch_size}|{code}"
                label = f"{source}, {n} images, {workers} workers"
                if key in done:
                    print(f"{label}: reused from {results_path}", flush=True)
                    rows.append(done[key])
                    reused += 1
                    continue
                spec = dict(source=source, path=str(path), stream=str(root / "streaming" / path.name),
                            workers=workers, batches=args.batches, batch_size=args.batch_size)  # fmt: skip
                result = in_fresh_process("measure", spec)
                if "error" in result:
                    notes.append(f"{label}: not measured: {result['error']}")
                    print(notes[-1], flush=True)
                    continue
                entry = {"key": key, "source": source, "images": n, "workers": workers, **result}
                append_result(results_path, entry)
                rows.append(entry)
                print(f"{label}: {result['images_per_s']:.0f} images/s, first batch "
                      f"{result['first_batch_s']:.2f} s, peak anon {result['anon_main']:.0f} MB main, "
                      f"{result['anon_workers']:.0f} MB workers", flush=True)  # fmt: skip
    print(f"\n{len(rows) - reused} measured, {reused} reused (already measured) from {results_path}")
    report(rows, notes)


def report(rows: list[dict], notes: list[str]) -> None:
    """The table, then each library row against the issue's targets."""

    def baseline(row: dict) -> dict | None:
        kind = row["source"].rsplit("-", 1)[-1]
        same = (b for b in rows if b["source"] == f"baseline-{kind}" and b["images"] == row["images"])
        return next((b for b in same if b["workers"] == row["workers"]), None)

    head = ("images", "workers", "images/s", "vs baseline", "1st batch s", "RSS main MB", "RSS workers MB",
            "anon main MB", "anon workers MB")  # fmt: skip
    print(f"\n{'source':<17}" + "".join(f"{h:>{9 if i < 2 else 16}}" for i, h in enumerate(head)))
    for row in rows:
        ratio = f"{row['images_per_s'] / base['images_per_s']:.2f}x" if (base := baseline(row)) else "-"
        print(f"{row['source']:<17}{row['images']:>9}{row['workers']:>9}{row['images_per_s']:>16.0f}{ratio:>16}"
              f"{row['first_batch_s']:>16.2f}" + "".join(f"{row[key]:>16.0f}" for key in (
              "rss_main", "rss_workers", "anon_main", "anon_workers")))  # fmt: skip
    print("RSS counts the touched pages of memory-mapped files and shared libraries (page cache);\n"
          "anon (RssAnon) is the private, anonymous part. Peaks span the whole process, imports included.\n"
          "Workers: summed at one instant, each with the pages it shares copy-on-write.")  # fmt: skip
    for note in notes:
        print(f"note: {note}")
    print(f"\nTargets (issue): images/s >= the baseline's; first batch <= {FIRST_BATCH_TARGET_S:.0f} s; peak "
          "anon memory independent of the number of images\n(<= 1.1 x + 50 MB of the smallest data set's; "
          "with one data set, of the baseline's)")  # fmt: skip
    library = [row for row in rows if not row["source"].startswith("baseline")]
    anon = {id(row): row["anon_main"] + row["anon_workers"] for row in rows}  # MB, main + workers
    for row in library:
        parts, base = [], baseline(row)
        if base is not None:
            ratio = row["images_per_s"] / base["images_per_s"]
            parts.append(f"{ratio:.2f}x the baseline's images/s: {'met' if ratio >= 1 else 'MISSED'}")
        first = row["first_batch_s"]
        parts.append(f"first batch {first:.2f} s: {'met' if first <= FIRST_BATCH_TARGET_S else 'MISSED'}")
        same = [r for r in library if (r["source"], r["workers"]) == (row["source"], row["workers"])]
        smallest = min(same, key=lambda r: r["images"])
        ref, name = (smallest, f"at {smallest['images']} images") if len(same) > 1 else (base, "baseline's")
        if ref is not None and ref is not row:
            verdict = "met" if anon[id(row)] <= 1.1 * anon[id(ref)] + 50 else "MISSED"
            parts.append(f"peak anon {anon[id(row)]:.0f} MB vs {anon[id(ref)]:.0f} MB {name}: {verdict}")
        print(f"  {row['source']}, {row['images']} images, {row['workers']} workers: " + "; ".join(parts))


if __name__ == "__main__":
    main()
