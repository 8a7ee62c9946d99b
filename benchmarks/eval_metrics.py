"""Sample quality of the DCGAN preset over training, and what evaluation costs.

Trains configs/dcgan.yaml on the bundled digits for ``--steps`` generator steps with its GANMetrics
callback (every 500 steps, 2,000 samples), then prints IS, FID, KID and class coverage at each evaluation,
the same figures for real validation digits for scale (IS of real data, FID/KID of the training split
against the validation split), and the seconds spent in evaluation as a share of the run's wall time.

    python benchmarks/eval_metrics.py [--steps 3000] [--root runs/bench_eval]
"""

from __future__ import annotations

import argparse
import time

import torch
from torchmetrics.image.fid import FrechetInceptionDistance
from torchmetrics.image.inception import InceptionScore
from torchmetrics.image.kid import KernelInceptionDistance

from lightning_gan.callbacks import GANMetrics
from lightning_gan.cli import run
from lightning_gan.data import DigitsDataModule
from lightning_gan.metrics import JudgeFeatures, cached_digits_judge
from lightning_gan.metrics.coverage import ClassCoverage


@torch.no_grad()
def real_figures(seed: int = 0) -> dict[str, float]:
    """IS and coverage of the real validation digits, FID/KID of all training digits against them."""
    dm = DigitsDataModule(seed=0)
    judge = cached_digits_judge(dm)
    logits, features = JudgeFeatures(judge, "logits"), JudgeFeatures(judge, "features")
    real = dm.real_images("val")
    train = dm.real_images("train")  # all of it: the split keeps the file's order, which is sorted by label
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        inception = InceptionScore(feature=logits, splits=10)
        inception.update(real)
        fid = FrechetInceptionDistance(feature=features)
        kid = KernelInceptionDistance(feature=features, subset_size=len(real))
        for metric in (fid, kid):
            metric.update(real, real=True)
            metric.update(train, real=False)
        labels = dm.val_dataset.tensors[1]
        coverage = ClassCoverage(torch.bincount(labels).double())
        coverage.update(logits(real))
        return {
            "is": inception.compute()[0].item(),
            "fid": fid.compute().item(),
            "kid": kid.compute()[0].item(),
            **{k: v.item() for k, v in coverage.compute().items()},
        }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=3000)
    parser.add_argument("--root", default="runs/bench_eval")
    args = parser.parse_args()

    real = real_figures()  # also trains and caches the judge, so its one-off cost is not in the run below
    start = time.perf_counter()
    cli = run(
        [
            "fit", "--config", "configs/dcgan.yaml", f"--trainer.default_root_dir={args.root}",
            f"--trainer.max_steps={args.steps}", "--trainer.enable_progress_bar=false",
        ]
    )  # fmt: skip
    wall = time.perf_counter() - start
    metrics = next(cb for cb in cli.trainer.callbacks if isinstance(cb, GANMetrics))
    names = ["is", "fid", "kid", "coverage", "classes_covered", "class_kl"]
    print(f"{'step':>6} " + " ".join(f"{n:>15}" for n in names))
    for row in metrics.history:
        print(f"{row['step']:>6} " + " ".join(f"{row[n]:>15.4f}" for n in names))
    print(
        f"{'real':>6} " + " ".join(f"{real[n]:>15.4f}" for n in names) + "   (FID/KID: train vs val digits)"
    )
    print(
        f"evaluation: {metrics.eval_seconds:.1f} s of {wall:.1f} s wall "
        f"({100 * metrics.eval_seconds / wall:.1f}%)"
    )


if __name__ == "__main__":
    main()
