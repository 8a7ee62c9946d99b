"""Conditional correctness of the conditional presets, and D's classifier accuracy for ACGAN and SSGAN.

Trains each preset's config on the bundled digits for ``--steps`` generator steps, then:
- cgan, cdcgan, acgan: draws ``--per-class`` samples of every class and reports how often a judge trained
  on real digits (the cached digits judge of the metric callback) agrees with the asked label;
- acgan, ssgan (100 labelled digits): the accuracy of D's class head on the real validation and test
  digits.
Targets (issue 5): correctness above 90% for cgan, cdcgan and acgan; SSGAN above 90% validation accuracy.

    python benchmarks/conditional.py [--steps 2000] [--per-class 100] [--presets cgan cdcgan acgan ssgan]
        [--set=--model.fake_class_loss=false ...]
"""

from __future__ import annotations

import argparse
import time

import torch

from lightning_gan.cli import run
from lightning_gan.data import DigitsDataModule
from lightning_gan.metrics import cached_digits_judge


@torch.no_grad()
def class_head_accuracy(model, dm: DigitsDataModule, split: str) -> float:
    """D's class head on the real ``split`` digits, evaluated as the module evaluates it: with BatchNorm
    statistics of real training images (``estimate_d_statistics``; before it existed, D kept the statistics
    of training, mostly of generated images)."""
    if hasattr(model, "estimate_d_statistics"):
        model.estimate_d_statistics()
    images, labels = dm.real_images(split), dm.split_labels(split)
    model.eval()
    return (model.discriminator(images).class_logits.argmax(1) == labels).double().mean().item()


@torch.no_grad()
def conditional_correctness(model, judge, per_class: int, seed: int = 0) -> float:
    labels = torch.arange(model.num_classes).repeat_interleave(per_class)
    z = torch.randn(len(labels), model.latent_dim, generator=torch.Generator().manual_seed(seed))
    images = model.sample(len(labels), labels, z=z)
    return (judge(images).argmax(1) == labels).double().mean().item()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--per-class", type=int, default=100)
    parser.add_argument("--presets", nargs="+", default=["cgan", "cdcgan", "acgan", "ssgan"])
    parser.add_argument("--root", default="runs/bench_conditional")
    parser.add_argument(
        "--set",
        nargs="*",
        action="extend",
        default=[],
        help="extra lightning-gan arguments, e.g. --set=--model.x=1",
    )
    args = parser.parse_args()
    judge = cached_digits_judge(DigitsDataModule()).eval()
    rows = []
    for preset in args.presets:
        start = time.perf_counter()
        cli = run([
            "fit", "--config", f"configs/{preset}.yaml", f"--trainer.default_root_dir={args.root}/{preset}",
            f"--trainer.max_steps={args.steps}", "--trainer.enable_progress_bar=false", *args.set,
        ])  # fmt: skip
        model, dm = cli.model, cli.datamodule
        row = {"preset": preset, "seconds": time.perf_counter() - start}
        if model.conditional:
            row["correctness"] = conditional_correctness(model, judge, args.per_class)
        if model.class_head:
            row["d_class_acc"] = class_head_accuracy(model, dm, "val")
            row["d_class_acc_test"] = class_head_accuracy(model, dm, "test")
        rows.append(row)
        print(row, flush=True)
    header = ("preset", "steps", "correctness", "D acc val", "D acc test", "seconds")
    print("\n{:<8} {:>6} {:>12} {:>10} {:>11} {:>8}".format(*header))
    for row in rows:
        correct = f"{100 * row['correctness']:.1f}%" if "correctness" in row else "-"
        val = f"{100 * row['d_class_acc']:.1f}%" if "d_class_acc" in row else "-"
        test = f"{100 * row['d_class_acc_test']:.1f}%" if "d_class_acc_test" in row else "-"
        print(f"{row['preset']:<8} {args.steps:>6} {correct:>12} {val:>10} {test:>11} {row['seconds']:>8.0f}")
    print(
        f"(correctness: a real-digit judge agrees with the asked label, {args.per_class} samples per class)"
    )


if __name__ == "__main__":
    main()
