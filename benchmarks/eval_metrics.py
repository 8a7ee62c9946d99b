"""Sample quality of any GAN config over training, with any switches, and what evaluation costs.

Trains ``--config`` (default configs/dcgan.yaml) on the bundled digits for ``--steps`` generator steps with
its GANMetrics callback (every 500 steps, 2,000 samples), once per ``--variant`` (a name and the extra
lightning-gan arguments that make it, e.g. ``fm=--model.feature_matching=1``), then prints IS, FID, KID,
class coverage and, for conditional models, label agreement (how often a real-digit judge agrees with the
asked label) at each evaluation; the same figures for real validation digits for scale (IS of real data,
FID/KID of the training split against the validation split); a summary with each variant's last and best
FID; and the seconds spent in evaluation as a share of each run's wall time.

    python benchmarks/eval_metrics.py [--config configs/cdcgan.yaml] [--steps 3000] [--seed 0]
        [--variant none= "fm=--model.feature_matching=1" "r1=--model.r1_weight=1 --model.r1_every=4"]
        [--set=--data.batch_size=64 ...]   # arguments every variant gets

Nothing finished is lost when a run dies: each variant's evaluations are appended to ``results.jsonl`` in
``--root`` when its run ends, keyed by everything they depend on (config file bytes, steps, seed, arguments).
Rerunning with the same ``--root`` trains only the variants that are missing.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shlex
import time
from pathlib import Path

import torch
from results_log import append_result, load_results
from torchmetrics.image.fid import FrechetInceptionDistance
from torchmetrics.image.inception import InceptionScore
from torchmetrics.image.kid import KernelInceptionDistance

from lightning_gan.callbacks import GANMetrics
from lightning_gan.cli import run
from lightning_gan.data import DigitsDataModule
from lightning_gan.metrics import JudgeFeatures, cached_digits_judge
from lightning_gan.metrics.coverage import ClassCoverage

NAMES = ["is", "fid", "kid", "coverage", "classes_covered", "class_kl", "label_agreement"]


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
        labels = dm.split_labels("val")
        coverage = ClassCoverage(torch.bincount(labels).double())
        coverage.update(logits(real))
        return {
            "is": inception.compute()[0].item(),
            "fid": fid.compute().item(),
            "kid": kid.compute()[0].item(),
            **{k: v.item() for k, v in coverage.compute().items()},
        }


def run_key(config: str, steps: int, seed: int, args: list[str]) -> str:
    """What a variant's figures depend on: the config's and its included files' bytes, steps, seed, args."""
    blob = hashlib.sha256()
    included = sorted(Path(config).parent.glob("common/*.yaml"))  # what a preset's YAML includes
    for path in [Path(config), *included]:
        blob.update(str(path).encode() + path.read_bytes())
    blob.update(json.dumps([config, steps, seed, args]).encode())
    return blob.hexdigest()[:20]


def train_variant(config: str, steps: int, seed: int, args: list[str], root: Path) -> dict:
    start = time.perf_counter()
    cli = run(
        [
            "fit", "--config", config, f"--seed_everything={seed}", f"--trainer.default_root_dir={root}",
            f"--trainer.max_steps={steps}", "--trainer.enable_progress_bar=false", *args,
        ]
    )  # fmt: skip
    wall = time.perf_counter() - start
    metrics = next(cb for cb in cli.trainer.callbacks if isinstance(cb, GANMetrics))
    return {"history": metrics.history, "eval_seconds": metrics.eval_seconds, "wall": wall}


def fmt(row: dict, name: str) -> str:
    return f"{row[name]:>15.4f}" if name in row else f"{'-':>15}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config", default="configs/dcgan.yaml")
    parser.add_argument("--steps", type=int, default=3000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--variant", nargs="+", default=["default="], help="NAME=ARGS, e.g. fm=--model.feature_matching=1"
    )
    parser.add_argument("--set", nargs="*", action="extend", default=[], help="arguments every variant gets")
    parser.add_argument("--root", default="runs/bench_eval")
    args = parser.parse_args()
    variants = {}
    for spec in args.variant:
        name, sep, flags = spec.partition("=")
        if not sep or not name:
            parser.error(f"--variant {spec!r}: write NAME=ARGS (ARGS may be empty: none=)")
        variants[name] = [*args.set, *shlex.split(flags)]

    root = Path(args.root)
    real = real_figures()  # also trains and caches the judge, so its one-off cost is not in the runs below
    results_path = root / "results.jsonl"
    done = load_results(results_path)
    summary = []
    for name, flags in variants.items():
        key = run_key(args.config, args.steps, args.seed, flags)
        if key not in done:
            measured = train_variant(args.config, args.steps, args.seed, flags, root / name)
            done[key] = {"key": key, "variant": name, "config": args.config, "args": flags, **measured}
            append_result(results_path, done[key])
        result = done[key]
        print(f"\n{name}: {args.config} {' '.join(flags)} (seed {args.seed}, {args.steps} steps)")
        print(f"{'step':>6} " + " ".join(f"{n:>15}" for n in NAMES))
        for row in result["history"]:
            print(f"{row['step']:>6} " + " ".join(fmt(row, n) for n in NAMES))
        print(f"{'real':>6} " + " ".join(fmt(real, n) for n in NAMES) + "   (FID/KID: train vs val digits)")
        print(
            f"evaluation: {result['eval_seconds']:.1f} s of {result['wall']:.1f} s wall "
            f"({100 * result['eval_seconds'] / result['wall']:.1f}%)"
        )
        last = result["history"][-1]
        best = min(result["history"], key=lambda row: row["fid"])
        summary.append((name, last, best))
    print(f"\n{'variant':<12} {'step':>6} {'FID':>8} {'IS':>7} {'agreement':>10} {'best FID':>9} {'at':>6}")
    for name, last, best in summary:
        agreement = f"{100 * last['label_agreement']:.1f}%" if "label_agreement" in last else "-"
        print(
            f"{name:<12} {last['step']:>6} {last['fid']:>8.2f} {last['is']:>7.3f} {agreement:>10} "
            f"{best['fid']:>9.2f} {best['step']:>6}"
        )


if __name__ == "__main__":
    main()
