"""The source notes' experiment: does adding generated samples help a classifier trained on little data?

Protocol (every part sees only the small labelled training split; the test split is fixed, disjoint and only
read for the report; choices are made on the validation split; real-only gets the same tuning as real +
generated):
1. a conditional GAN (``--gan`` config, with an EMA copy of G kept beside G) is trained on ``--per-class``
   labelled samples per class, and a CNN "filter" classifier on the same samples (it decides which generated
   samples to keep in the filter rows);
2. for each seed, a classifier is trained for ``--steps`` optimizer steps (the same budget for every setting,
   whatever the amount of data; Adam with a cosine-annealed learning rate) on real only, and on real +
   generated, one factor at a time around the default (class mode fixed, ratio 1:1, schedule mixed, CNN, no
   filter, G's own weights, samples drawn once): class mode random; ratios 1:1.5 ... 1:4 and 2:1; schedules
   1:1, 3:1, 15:5; the ResNet classifier; keeping only generated samples the filter assigns to their class
   (any confidence, or >= 0.9); sampling the EMA of G; new samples every epoch (resample);
3. the last step's accuracy on the validation and test splits is reported: mean and spread over seeds, as a
   table, ``augment.csv`` and a bar chart ``augment.png`` in ``--out``. The verdict compares, on test, the
   real + generated setting with the best validation accuracy against the best real-only one by validation,
   and the default against real only with the same classifier.

Digits: of the 5,000 bundled digits, 500 are validation and 3,000 test (``test_fraction`` 0.6, not the data
module's 0.1): with 500 test digits one digit is 0.2 points, as large as the differences being measured; the
100 per class come from the remaining 1,500.

    python benchmarks/augment.py --data digits [--per-class 100] [--seeds 0 1 2] [--steps 600] [--gan-ckpt C]
    python benchmarks/augment.py --data har [--per-class 200]    # needs pip install 'lightning-gan[har]'

Nothing finished is lost when a run dies: each classifier's accuracies are appended to ``results.jsonl`` in
``--out`` as soon as they are measured, keyed by everything they depend on (the data, the split size, the
classifier steps, the setting, the seed, the GAN checkpoint's bytes and the filter's weights). Rerunning
with the same ``--out`` and ``--gan-ckpt`` (the path is printed after step 1) measures only what is missing.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import statistics
from pathlib import Path

import torch
from lightning.pytorch import Trainer, seed_everything
from results_log import append_result, load_results

from lightning_gan.cli import run
from lightning_gan.data import DigitsDataModule, GANDataModule, MixedDataModule
from lightning_gan.metrics.judge import save_judge
from lightning_gan.models import Classifier

DEFAULT = {
    "class_mode": "fixed", "ratio": "1:1", "schedule": "mixed", "backbone": "cnn", "filter": None,
    "ema": False, "resample": False,
}  # fmt: skip
FACTORS = [
    {"class_mode": "random"},
    *({"ratio": r} for r in ("1:1.5", "1:2", "1:2.5", "1:3", "1:4", "2:1")),
    *({"schedule": s} for s in ("1:1", "3:1", "15:5")),
    {"backbone": "resnet"},
    {"filter": 0.0},
    {"filter": 0.9},
    {"ema": True},
    {"resample": True},
]
DATA = {
    "digits": {
        "per_class": 100, "gan": "cdcgan.yaml", "config": "digits.yaml", "split": {"test_fraction": 0.6},
    },
    "har": {"per_class": 200, "gan": "har_cgan.yaml", "config": "har.yaml", "split": {}},
}  # fmt: skip


def real_data(kind: str, per_class: int) -> GANDataModule:
    if kind == "har":
        from lightning_gan.data import HARDataModule

        return HARDataModule(batch_size=64, seed=0, train_per_class=per_class)
    return DigitsDataModule(batch_size=64, seed=0, train_per_class=per_class, **DATA["digits"]["split"])


def train_classifier(data, backbone: str, seed: int, steps: int, root: Path) -> Classifier:
    """A fresh classifier trained for ``steps`` optimizer steps (no choice of when to stop: the last one).
    Data that draws new samples every epoch gets its loaders rebuilt every epoch."""
    seed_everything(seed, verbose=False)
    model = Classifier(
        img_shape=data.img_shape, num_classes=data.num_classes, backbone=backbone, lr_schedule="cosine"
    )
    trainer = Trainer(
        max_steps=steps, max_epochs=-1, accelerator="cpu", logger=False, enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False, default_root_dir=root, limit_val_batches=0,
        reload_dataloaders_every_n_epochs=int(getattr(data, "resample", False)),
    )  # fmt: skip
    trainer.fit(model, data)
    return model


def accuracies(data, backbone: str, seed: int, steps: int, root: Path) -> tuple[float, float]:
    """(validation, test) accuracy of a classifier trained on ``data``."""
    model = train_classifier(data, backbone, seed, steps, root)
    evaluate = Trainer(accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False)
    val = evaluate.validate(model, data, verbose=False)[0]["val/acc"]
    return val, evaluate.test(model, data, verbose=False)[0]["test/acc"]


class Results:
    """Measured (validation, test) accuracies, one JSON line per classifier (see ``results_log``), so that a
    rerun after a crash reuses them."""

    def __init__(self, path: Path, context: dict) -> None:
        self.path, self.context = path, context
        self.done = {key: (e["val"], e["test"]) for key, e in load_results(path).items()}

    def key(self, setting: dict, seed: int) -> str:
        blob = json.dumps({**self.context, **setting, "seed": seed}, sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:20]

    def get(self, setting: dict, seed: int) -> tuple[float, float] | None:
        return self.done.get(self.key(setting, seed))

    def add(self, setting: dict, seed: int, val: float, test: float) -> None:
        key = self.key(setting, seed)
        self.done[key] = (val, test)
        append_result(
            self.path, {"key": key, "setting": name(setting), "seed": seed, "val": val, "test": test}
        )


def file_digest(path: str | Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()[:20]


def weights_digest(model: torch.nn.Module) -> str:
    """A digest of the weights themselves (a retrained, identical filter keys the same results)."""
    digest = hashlib.sha256()
    for key, tensor in sorted(model.state_dict().items()):
        digest.update(key.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()[:20]


def name(setting: dict) -> str:
    changed = [f"{k}={v}" for k, v in setting.items() if k in DEFAULT and v != DEFAULT[k]]
    if not setting["mixed"]:
        return f"real only ({setting['backbone']})"
    return "real+gen " + (", ".join(changed) if changed else "default")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", choices=sorted(DATA), default="digits")
    parser.add_argument("--per-class", type=int, default=None, help="default: 100 (digits), 200 (har)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--gan", default=None, help="GAN config in configs/; default cdcgan / har_cgan")
    parser.add_argument("--gan-steps", type=int, default=3000)
    parser.add_argument("--steps", type=int, default=600, help="optimizer steps of every classifier")
    parser.add_argument("--gan-ckpt", default=None, help="a trained conditional GAN: skip step 1's GAN")
    parser.add_argument("--out", default=None, help="default runs/augment_<data>")
    args = parser.parse_args(argv)
    per_class = args.per_class or DATA[args.data]["per_class"]
    out = Path(args.out or f"runs/augment_{args.data}")
    spec = DATA[args.data]

    ckpt = args.gan_ckpt
    if ckpt is None:
        gan = run([
            "fit", "--config", f"configs/{args.gan or spec['gan']}",
            f"--data=configs/common/{spec['config']}",
            f"--trainer.default_root_dir={out / 'gan'}", f"--data.train_per_class={per_class}",
            *(f"--data.{key}={value}" for key, value in spec["split"].items()),
            "--data.batch_size=64", f"--trainer.max_steps={args.gan_steps}",
            "--trainer.enable_progress_bar=false",
            # an EMA of G beside G, for the "ema" row (sampling without it is the default)
            "--trainer.callbacks+=lightning_gan.callbacks.GeneratorEMA", "--trainer.callbacks.decay=0.999",
            f"--trainer.callbacks.start_step={args.gan_steps // 3}",
        ])  # fmt: skip
        ckpt = str(
            Path(gan.trainer.log_dir) / "checkpoints" / "last.ckpt"
        )  # the last: no choice made on data
        print(f"GAN trained; to rerun without training it again: --gan-ckpt {ckpt}", flush=True)
    small = real_data(args.data, per_class)
    filter_model = train_classifier(small, "cnn", 0, args.steps, out)
    filter_ckpt = out / "filter.ckpt"
    save_judge(filter_model, filter_ckpt)

    context = {"data": args.data, "per_class": per_class, "steps": args.steps, "gan": file_digest(ckpt)}
    results = Results(out / "results.jsonl", context)
    filter_digest = weights_digest(filter_model)
    settings = [{"mixed": False, **DEFAULT}, {"mixed": False, **DEFAULT, "backbone": "resnet"}]
    settings += [{"mixed": True, **DEFAULT}] + [{"mixed": True, **DEFAULT, **change} for change in FACTORS]
    rows = []
    for setting in settings:
        vals, tests = [], []
        for seed in args.seeds:
            keyed = {**setting, "filter_weights": filter_digest if setting["filter"] is not None else None}
            measured = results.get(keyed, seed)
            if measured is not None:
                print(f"{name(setting)}, seed {seed}: reused from {results.path}", flush=True)
                vals.append(measured[0])
                tests.append(measured[1])
                continue
            data = real_data(args.data, per_class)
            if setting["mixed"]:
                filtered = setting["filter"] is not None
                data = MixedDataModule(
                    data, ckpt, class_mode=setting["class_mode"], ratio=setting["ratio"],
                    schedule=setting["schedule"], seed=seed, cache_dir=str(out / "cache"),
                    no_ema=not setting["ema"], resample=setting["resample"],
                    filter_ckpt=str(filter_ckpt) if filtered else None,
                    min_confidence=setting["filter"] if filtered else 0.0,
                )  # fmt: skip
            try:
                val, test = accuracies(data, setting["backbone"], seed, args.steps, out)
            except ValueError as err:  # e.g. a filter that rejects nearly every sample: report, go on
                print(f"{name(setting)}: {err}", flush=True)
                break
            results.add(keyed, seed, val, test)
            vals.append(val)
            tests.append(test)
        if len(tests) < len(args.seeds):
            continue
        row = {
            "setting": name(setting), "mixed": setting["mixed"], "val": statistics.mean(vals),
            "mean": statistics.mean(tests), "std": statistics.stdev(tests) if len(tests) > 1 else 0.0,
            "runs": tests,
        }  # fmt: skip
        rows.append(row)
        print(f"{row['setting']:<34} val {100 * row['val']:6.2f}%   test {100 * row['mean']:6.2f}% "
              f"± {100 * row['std']:4.2f}", flush=True)  # fmt: skip

    out.mkdir(parents=True, exist_ok=True)
    with open(out / "augment.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(
            ["setting", "val_acc", "mean_test_acc", "std_test_acc", *(f"seed_{s}" for s in args.seeds)]
        )
        for row in rows:
            writer.writerow([row["setting"], row["val"], row["mean"], row["std"], *row["runs"]])
    plot(rows, out / "augment.png", f"{args.data}, {per_class} per class, {len(args.seeds)} seeds")
    real_best = max((r for r in rows if not r["mixed"]), key=lambda r: r["val"])
    mixed_best = max((r for r in rows if r["mixed"]), key=lambda r: r["val"])
    default = next(r for r in rows if r["setting"] == "real+gen default")
    real_default = next(r for r in rows if r["setting"] == name({"mixed": False, **DEFAULT}))
    for label, row, real in (
        ("chosen on validation", mixed_best, real_best),  # each side's best by validation
        ("pre-set default", default, real_default),  # the same classifier with and without generated data
    ):
        gain = 100 * (row["mean"] - real["mean"])
        verdict = "met" if gain >= 1 else "missed"
        print(
            f"{label}: {row['setting']} {100 * row['mean']:.2f}% vs {real['setting']} "
            f"{100 * real['mean']:.2f}% on test: {gain:+.2f} points (target +1: {verdict})"
        )


def plot(rows: list[dict], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(10, 4.5))
    names = [r["setting"] for r in rows]
    colours = ["tab:gray" if not r["mixed"] else "tab:blue" for r in rows]  # real only in grey
    ax.barh(names, [100 * r["mean"] for r in rows], xerr=[100 * r["std"] for r in rows], color=colours)
    ax.axvline(100 * rows[0]["mean"], color="black", linestyle="--", linewidth=0.8, label="real only (cnn)")
    low = min(100 * r["mean"] for r in rows) - 3
    ax.set(xlim=(low, 100), xlabel="test accuracy (%)", title=f"{title}: real vs real + generated")
    ax.invert_yaxis()
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


if __name__ == "__main__":
    torch.set_num_threads(2)
    main()
