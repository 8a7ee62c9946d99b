"""Generator steps per second of the DCGAN preset at batch 128 on 64x64 images: a plain PyTorch loop against
GAN through the Trainer, without and with each speed switch (bf16-mixed, 16-mixed, channels-last,
torch.compile, and all that help together). Same nets, same init, same digits (resized to 64x64); runs
alternate so that machine noise hits all. Prints a table of steps/s and the ratio to the plain loop
(target on a GPU: the best setting >= 1.5x).

    python benchmarks/gpu_throughput.py [--steps 100] [--warmup 20] [--rounds 2]    # on a GPU machine
    python benchmarks/gpu_throughput.py --steps 5 --warmup 2 --rounds 1              # a CPU smoke run
"""

from __future__ import annotations

import argparse
import copy
import os
import statistics

import torch
from lightning.pytorch import seed_everything
from step_overhead import lightning_loop, plain_loop  # same folder: the benchmark this one extends

from lightning_gan.data import DigitsDataModule
from lightning_gan.models import GAN

SETTINGS = {  # name: (GAN keyword arguments, Trainer keyword arguments)
    "fp32": ({}, {}),
    "bf16-mixed": ({}, {"precision": "bf16-mixed"}),
    "16-mixed": ({}, {"precision": "16-mixed"}),
    "channels_last": ({"channels_last": True}, {}),
    "compile": ({"compile": True}, {}),
    "bf16 + channels_last + compile": ({"channels_last": True, "compile": True}, {"precision": "bf16-mixed"}),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--warmup", type=int, default=20, help="untimed steps (compilation happens here)")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=128)
    args = parser.parse_args()
    device = "cuda" if torch.cuda.is_available() else "cpu"
    accelerator = "gpu" if device == "cuda" else "cpu"
    if device == "cuda":
        torch.backends.cudnn.benchmark = True
    seed_everything(0, verbose=False)
    shape = (1, 64, 64)
    workers = min(4, os.cpu_count() or 1)
    times: dict[str, list[float]] = {"plain loop (fp32)": [], **{name: [] for name in SETTINGS}}
    for _ in range(args.rounds):
        dm = DigitsDataModule(batch_size=args.batch_size, seed=0, image_size=64, num_workers=workers)
        times["plain loop (fp32)"] += plain_loop(GAN(img_shape=shape), dm, args.warmup + args.steps, device)[
            args.warmup :
        ]
        for name, (model_kwargs, trainer_kwargs) in SETTINGS.items():
            seed_everything(0, verbose=False)
            model = GAN(img_shape=shape, **model_kwargs)
            dm = DigitsDataModule(batch_size=args.batch_size, seed=0, image_size=64, num_workers=workers)
            steps = lightning_loop(
                copy.deepcopy(model), dm, args.warmup + args.steps, accelerator=accelerator, **trainer_kwargs
            )
            times[name] += steps[args.warmup :]
    gpu = torch.cuda.get_device_name() if device == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    print(f"DCGAN, batch {args.batch_size}, 64x64, {args.steps} timed steps x {args.rounds} rounds on {gpu}")
    base = statistics.median(times["plain loop (fp32)"])
    print(f"{'setting':<34} {'G steps/s':>10} {'vs plain':>9}")
    for name, values in times.items():
        median = statistics.median(values)
        print(f"{name:<34} {1 / median:10.2f} {base / median:8.2f}x")


if __name__ == "__main__":
    main()
