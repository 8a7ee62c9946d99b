"""Parameter counts and seconds per generator step of the DCGAN preset's networks with the block switches of
issue 17 (depth, activation, norm), against the preset's defaults in the same run.

Each setting is the DCGAN preset (base 64 channels, digits, batch 64, n_critic 1) trained by the Trainer in
this one process; the settings take turns for ``--rounds`` rounds, so machine noise hits them alike, and the
median step time is compared with the defaults' as a ratio.

    python benchmarks/net_switches.py [--steps 30] [--warmup 5] [--rounds 3]
"""

from __future__ import annotations

import argparse
import statistics
from functools import partial

from lightning.pytorch import seed_everything
from step_overhead import lightning_loop

from lightning_gan.data import DigitsDataModule
from lightning_gan.models import GAN
from lightning_gan.nets import DCGANDiscriminator, DCGANGenerator

#: name: (G's switches, D's switches)
SETTINGS = {
    "defaults": ({}, {}),
    "extra_blocks=2 in G": ({"extra_blocks": 2}, {}),
    "prelu in G and D": ({"activation": "prelu"}, {"activation": "prelu"}),
    "group norm in G and D": ({"norm": "group"}, {"norm": "group"}),
}


def build(g_args: dict, d_args: dict) -> GAN:
    seed_everything(0, verbose=False)
    return GAN(
        partial(DCGANGenerator, base_channels=64, **g_args),
        partial(DCGANDiscriminator, base_channels=64, **d_args),
        img_shape=(1, 28, 28),
    )


def count(net) -> int:
    return sum(p.numel() for p in net.parameters())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    times: dict[str, list[float]] = {name: [] for name in SETTINGS}
    for _ in range(args.rounds):
        for name, (g_args, d_args) in SETTINGS.items():
            dm = DigitsDataModule(batch_size=64, seed=0)
            times[name] += lightning_loop(build(g_args, d_args), dm, args.warmup + args.steps)[args.warmup :]
    base = statistics.median(times["defaults"])
    print(f"{'setting':<24} {'G params':>10} {'D params':>10} {'s/G step':>9} {'x defaults':>10}")
    for name, (g_args, d_args) in SETTINGS.items():
        model, step = build(g_args, d_args), statistics.median(times[name])
        print(
            f"{name:<24} {count(model.generator):>10,} {count(model.discriminator):>10,} "
            f"{step:>9.3f} {step / base:>10.2f}"
        )


if __name__ == "__main__":
    main()
