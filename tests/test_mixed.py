"""The real + generated DataModule: class mode, amount, schedule, caching, and real-only evaluation data."""

from __future__ import annotations

import csv
import importlib.util
import json
import re
import sys
from pathlib import Path

import pytest
import torch
from lightning.pytorch import Callback, Trainer

from lightning_gan.cli import run
from lightning_gan.data import DigitsDataModule, MixedDataModule
from lightning_gan.data.mixed import AlternatingLoader, class_counts, parse_ratio, parse_schedule
from lightning_gan.data.samples import SplitDataset
from lightning_gan.models import Classifier
from tests.conftest import REPO
from tests.test_har import needs_data


def checkpoint(root: Path, config: str, *, test_fraction: float = 0.8) -> Path:
    """A GAN of ``config`` after one step, trained on the training split of :func:`real` (the same split
    settings): never on its validation or test digits."""
    cli = run([
        "fit", "--config", str(REPO / "configs" / config), f"--trainer.default_root_dir={root}",
        "--trainer.max_steps=1", "--data.batch_size=32", "--trainer.enable_progress_bar=false",
        "--trainer.enable_model_summary=false", "--data.val_fraction=0.1",
        f"--data.test_fraction={test_fraction}",
    ])  # fmt: skip
    return Path(cli.trainer.log_dir) / "checkpoints" / "last.ckpt"


@pytest.fixture(scope="module")
def cgan_ckpt(tmp_path_factory) -> Path:
    return checkpoint(tmp_path_factory.mktemp("cgan"), "cgan.yaml")


@pytest.fixture(scope="module")
def real() -> DigitsDataModule:
    return DigitsDataModule(batch_size=64, seed=0, val_fraction=0.1, test_fraction=0.8)  # 500 train digits


def mixed(real, ckpt, tmp_path, **kwargs) -> MixedDataModule:
    return MixedDataModule(real, str(ckpt), cache_dir=str(tmp_path), **kwargs)


def test_ratios_are_read_as_the_notes_wrote_them():
    assert parse_ratio("1:1") == 1 and parse_ratio("1:4") == 0.25 and parse_ratio("2:1") == 2
    assert parse_ratio("1:2.5") == pytest.approx(0.4)
    for bad in ("0:1", "-1", 0, "1/2"):
        with pytest.raises(ValueError, match=r"data\.ratio="):
            parse_ratio(bad)


def test_fixed_class_mode_follows_the_real_proportions_exactly_up_to_rounding(real, cgan_ckpt, tmp_path):
    dm = mixed(real, cgan_ckpt, tmp_path, class_mode="fixed", ratio="1:3")
    real_counts = torch.bincount(real.split_labels("train"), minlength=10)
    generated = torch.bincount(dm.generated_dataset().tensors[1], minlength=10)
    assert generated.sum() == round(len(real.train_dataset) / 3)
    expected = real_counts.double() * generated.sum() / real_counts.sum()
    assert (generated.double() - expected).abs().max() < 1  # exact up to rounding
    skewed = class_counts(7, torch.tensor([5.0, 3.0, 2.0]))
    assert skewed.tolist() == [4, 2, 1] and skewed.sum() == 7


def test_random_class_mode_ignores_the_real_proportions(cgan_ckpt, tmp_path):
    # real data with only classes 0 and 1 ... 9 in a 10:1 imbalance
    skewed = DigitsDataModule(batch_size=64, seed=0, val_fraction=0.1, test_fraction=0.5)
    labels = skewed.split_labels("train")
    keep = (labels == 0) | (torch.rand(len(labels), generator=torch.Generator().manual_seed(0)) < 0.1)
    train = skewed.train_dataset
    skewed.train_dataset = SplitDataset(skewed.samples, train.indices[keep], train.labels[keep])
    fixed = mixed(skewed, cgan_ckpt, tmp_path, class_mode="fixed", ratio="2:1").generated_labels()
    random = mixed(skewed, cgan_ckpt, tmp_path, class_mode="random", ratio="2:1").generated_labels()
    share_0 = lambda y: (y == 0).double().mean().item()  # noqa: E731
    real_share = share_0(skewed.split_labels("train"))
    assert share_0(fixed) == pytest.approx(real_share, abs=0.01)
    assert share_0(random) == pytest.approx(0.1, abs=0.03) and real_share > 0.4


@pytest.mark.parametrize(("ratio", "factor"), [("1:2", 0.5), ("2:1", 2.0), ("1:1", 1.0)])
def test_the_amount_of_generated_data_per_epoch(real, cgan_ckpt, tmp_path, ratio, factor):
    dm = mixed(real, cgan_ckpt, tmp_path, ratio=ratio)
    loader = dm.train_dataloader()
    seen = sum(len(images) for images, _ in loader)
    n_real = len(real.train_dataset)
    assert len(dm.generated_dataset()) == round(factor * n_real) and seen == n_real + round(factor * n_real)


def test_a_three_to_one_schedule_yields_batches_in_that_pattern(real, cgan_ckpt, tmp_path):
    dm = mixed(real, cgan_ckpt, tmp_path, ratio="3:1", schedule="3:1", batch_size=50)
    generated = set(map(tuple, dm.generated_dataset().tensors[0].flatten(1)[:, 300:310].tolist()))
    kinds = [
        "G" if tuple(images[0].flatten()[300:310].tolist()) in generated else "R"
        for images, _ in dm.train_dataloader()
    ]
    assert "".join(kinds) == "GGGR" * 10  # 1500 generated and 500 real samples in batches of 50
    fifteen_five = [b for b in AlternatingLoader(range(4), range(9), (3, 1))]
    assert fifteen_five == [0, 1, 2, 0, 3, 1, 2, 3, 4, 5, 6, 7, 8]  # a stream that runs out: the other drains
    assert parse_schedule("mixed") is None and parse_schedule("15:5") == (15, 5)
    with pytest.raises(ValueError, match=r"data\.schedule='3-1'"):
        parse_schedule("3-1")


class GeneratedBatches(Callback):
    """Records, per epoch, the sum of every training image (the loader's content, whatever its order)."""

    def __init__(self):
        self.per_epoch: dict[int, float] = {}

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        epoch = trainer.current_epoch
        self.per_epoch[epoch] = self.per_epoch.get(epoch, 0.0) + batch[0].double().sum().item()


def test_resample_draws_new_samples_every_epoch_and_validates_without_the_reload_flag(
    real, cgan_ckpt, tmp_path
):
    def fit(resample: bool) -> dict[int, float]:
        dm = mixed(real, cgan_ckpt, tmp_path, ratio="1:2", resample=resample)
        recorder = GeneratedBatches()
        trainer = Trainer(
            max_epochs=2, reload_dataloaders_every_n_epochs=1, limit_val_batches=0, logger=False,
            enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
            callbacks=[recorder], default_root_dir=tmp_path,
        )  # fmt: skip
        trainer.fit(Classifier(channels=4, feature_dim=8), dm)
        evaluate = Trainer(logger=False, enable_progress_bar=False, enable_model_summary=False)
        assert 0 <= evaluate.validate(trainer.lightning_module, dm, verbose=False)[0]["val/acc"] <= 1
        assert 0 <= evaluate.test(trainer.lightning_module, dm, verbose=False)[0]["test/acc"] <= 1
        return recorder.per_epoch

    fresh, cached = fit(resample=True), fit(resample=False)
    assert cached[0] == pytest.approx(cached[1], rel=1e-9)  # the same samples, shuffled anew
    assert fresh[0] == pytest.approx(cached[0], rel=1e-9)  # epoch 0 draws what the cache holds
    assert fresh[1] != pytest.approx(fresh[0], rel=1e-6)  # epoch 1: new latent vectors
    generated = sorted(p.name for p in (tmp_path / "generated").glob("*.pt"))
    assert len(generated) == 2 and generated[0] != generated[1]  # one cached draw per epoch seed

    dm = mixed(real, cgan_ckpt, tmp_path, resample=True)
    trainer = Trainer(max_epochs=1, logger=False, enable_progress_bar=False, default_root_dir=tmp_path)
    with pytest.raises(ValueError, match=r"data\.resample=True .*reload_dataloaders_every_n_epochs 1"):
        trainer.fit(Classifier(channels=4, feature_dim=8), dm)


def test_no_generated_sample_reaches_validation_or_test(real, cgan_ckpt, tmp_path):
    dm = mixed(real, cgan_ckpt, tmp_path, ratio="2:1")
    for loader, split in ((dm.val_dataloader(), "val"), (dm.test_dataloader(), "test")):
        images = torch.cat([x for x, _ in loader])
        assert torch.equal(images, real.real_images(split))


def test_the_cache_is_reused_only_for_the_same_generator_checkpoint(real, cgan_ckpt, tmp_path):
    first = mixed(real, cgan_ckpt, tmp_path, ratio="1:4").generated_dataset().tensors[0]
    again = mixed(real, cgan_ckpt, tmp_path, ratio="1:4")
    again._model = "not loaded"  # a cache hit never touches the generator
    assert torch.equal(again.generated_dataset().tensors[0], first)
    other_ckpt = tmp_path / "other.ckpt"
    state = torch.load(cgan_ckpt, weights_only=False)
    state["state_dict"] = {k: v + 0.1 if v.is_floating_point() else v for k, v in state["state_dict"].items()}
    torch.save(state, other_ckpt)
    other = mixed(real, other_ckpt, tmp_path, ratio="1:4").generated_dataset().tensors[0]
    assert not torch.equal(other, first)
    assert len(list((tmp_path / "generated").glob("*.pt"))) == 2


def test_bad_settings_fail_with_a_clear_message(real, cgan_ckpt, tmp_path):
    with pytest.raises(ValueError, match=r"data\.ratio=0"):
        mixed(real, cgan_ckpt, tmp_path, ratio=0)
    with pytest.raises(ValueError, match=r"data\.class_mode='balanced' is not allowed"):
        mixed(real, cgan_ckpt, tmp_path, class_mode="balanced")
    with pytest.raises(ValueError, match=r"data\.generator_ckpt=.*no such checkpoint"):
        MixedDataModule(real, str(tmp_path / "missing.ckpt"))
    dcgan = checkpoint(tmp_path / "dcgan", "wgan.yaml")
    with pytest.raises(ValueError, match=r"generator must be conditional"):
        mixed(real, dcgan, tmp_path).generated_dataset()


def test_the_classifier_trains_on_real_plus_generated_through_the_cli(cgan_ckpt, tmp_path):
    cli = run([
        "fit", "--config", str(REPO / "configs" / "classifier_mixed.yaml"),
        f"--data.generator_ckpt={cgan_ckpt}",
        f"--data.cache_dir={tmp_path}", f"--trainer.default_root_dir={tmp_path}", "--trainer.max_epochs=1",
        "--data.ratio=1:4", "--data.schedule=3:1", "--trainer.enable_progress_bar=false",
    ])  # fmt: skip
    dm = cli.datamodule
    assert cli.model.img_shape == dm.img_shape == (1, 28, 28) and cli.model.num_classes == 10
    assert cli.trainer.num_training_batches == len(dm.train_dataloader())
    assert "val/acc" in cli.trainer.callback_metrics


# ------------------------------------------------------------------------------------------ the filter


class BrightnessJudge(torch.nn.Module):
    """A stand-in filter classifier: class 0 for images brighter than ``threshold`` on average, else 1, more
    confidently the further from it (``scale`` per unit of mean brightness)."""

    def __init__(self, threshold: float, scale: float = 20.0) -> None:
        super().__init__()
        self.threshold, self.scale = threshold, scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = torch.full((len(x), 10), -50.0)
        logits[:, 0] = self.scale * (x.mean(dim=(1, 2, 3)) - self.threshold)
        logits[:, 1] = 0.0
        return logits


def two_classes() -> DigitsDataModule:
    """The same module with only the training digits 0 and 1."""
    two = DigitsDataModule(batch_size=32, seed=0, val_fraction=0.1, test_fraction=0.8)
    train = two.train_dataset
    keep = train.labels <= 1
    two.train_dataset = SplitDataset(two.samples, train.indices[keep], train.labels[keep])
    return two


@pytest.fixture
def judge_file(tmp_path, monkeypatch):
    """A filter checkpoint path whose loading yields the BrightnessJudge set in ``judge_file.judge``."""
    import lightning_gan.metrics.judge as judge_module

    path = tmp_path / "filter.ckpt"
    path.write_bytes(b"a classifier checkpoint")
    holder = type("Holder", (), {"judge": None, "path": path})()
    monkeypatch.setattr(judge_module, "load_judge", lambda p: holder.judge)
    return holder


def test_the_filter_keeps_only_samples_the_classifier_assigns_to_their_class(cgan_ckpt, tmp_path, judge_file):
    two = two_classes()
    plain_images, plain_labels = mixed(two, cgan_ckpt, tmp_path / "plain").generated_dataset().tensors
    means = plain_images.mean(dim=(1, 2, 3))
    judge_file.judge = BrightnessJudge(float(means.median()), scale=3 / float(means.std()))
    plain_agree = judge_file.judge(plain_images).argmax(dim=1) == plain_labels
    assert 0.2 < plain_agree.float().mean() < 0.8  # unfiltered, many samples disagree with the classifier

    dm = mixed(two, cgan_ckpt, tmp_path / "filtered", filter_ckpt=str(judge_file.path))
    images, labels = dm.generated_dataset().tensors
    assert torch.equal(judge_file.judge(images).argmax(dim=1), labels)  # every kept sample agrees
    assert torch.equal(labels, plain_labels)  # the same classes in the same order: only samples were redrawn
    assert 0.2 < dm.acceptance < 0.8
    assert torch.equal(images[plain_agree], plain_images[plain_agree])  # first-round keepers stay as drawn

    confident = mixed(
        two, cgan_ckpt, tmp_path / "conf", filter_ckpt=str(judge_file.path), min_confidence=0.99
    )
    images, labels = confident.generated_dataset().tensors
    probs = judge_file.judge(images).softmax(dim=1).gather(1, labels[:, None])
    assert (probs >= 0.99).all() and confident.acceptance < dm.acceptance


def test_a_filter_that_never_agrees_names_the_class_and_the_fix(cgan_ckpt, tmp_path, judge_file):
    judge_file.judge = BrightnessJudge(threshold=10.0)  # always class 1: no digit 0 ever passes
    dm = mixed(two_classes(), cgan_ckpt, tmp_path, filter_ckpt=str(judge_file.path), max_draws=3)
    with pytest.raises(
        ValueError, match=r"data\.filter_ckpt=.*max_draws=3.*of class '0'.*train the generator"
    ):
        dm.generated_dataset()


def test_the_cache_key_includes_the_filter_and_its_confidence(real, cgan_ckpt, tmp_path, judge_file):
    paths = {
        mixed(real, cgan_ckpt, tmp_path)._cache_path(0),
        mixed(real, cgan_ckpt, tmp_path, filter_ckpt=str(judge_file.path))._cache_path(0),
        mixed(real, cgan_ckpt, tmp_path, filter_ckpt=str(judge_file.path), min_confidence=0.5)._cache_path(0),
    }
    assert len(paths) == 3
    other = tmp_path / "other.ckpt"
    other.write_bytes(b"another classifier")
    assert mixed(real, cgan_ckpt, tmp_path, filter_ckpt=str(other))._cache_path(0) not in paths


@pytest.mark.parametrize(
    ("kwargs", "key"),
    [
        ({"min_confidence": 1.0}, "data.min_confidence=1.0"),
        ({"filter_ckpt": "nope.ckpt"}, "data.filter_ckpt='nope.ckpt'"),
        ({"max_draws": 0}, "data.max_draws=0"),
    ],
)
def test_bad_filter_settings_name_the_key(real, cgan_ckpt, tmp_path, kwargs, key):
    with pytest.raises(ValueError, match=re.escape(f"{key} is not allowed")):
        mixed(real, cgan_ckpt, tmp_path, **kwargs)


def augment_benchmark():
    if str(REPO / "benchmarks") not in sys.path:  # as when run as a script: its sibling results_log imports
        sys.path.insert(0, str(REPO / "benchmarks"))
    spec = importlib.util.spec_from_file_location("augment_benchmark", REPO / "benchmarks" / "augment.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_augment_benchmark_keeps_what_it_measured_when_killed_and_a_rerun_measures_only_the_rest(
    cgan_ckpt, tmp_path, monkeypatch
):
    bench = augment_benchmark()
    monkeypatch.setattr(bench, "FACTORS", [{"ratio": "1:2"}])  # 4 settings: real cnn and resnet, default, 1:2
    measure, calls = bench.accuracies, []

    def killed_at_the_third(*args):
        calls.append(args[1:3])
        if len(calls) == 3:
            raise KeyboardInterrupt  # the run dies in the middle of the grid
        return measure(*args)

    argv = ["--data=digits", "--seeds", "0", "--steps=2", f"--gan-ckpt={cgan_ckpt}", f"--out={tmp_path}"]
    monkeypatch.setattr(bench, "accuracies", killed_at_the_third)
    with pytest.raises(KeyboardInterrupt):
        bench.main(argv)
    kept = [json.loads(line) for line in (tmp_path / "results.jsonl").read_text().splitlines()]
    assert [entry["setting"] for entry in kept] == ["real only (cnn)", "real only (resnet)"]

    calls.clear()
    monkeypatch.setattr(bench, "accuracies", lambda *args: calls.append(args[1:3]) or measure(*args))
    bench.main(argv)
    assert calls == [("cnn", 0), ("cnn", 0)]  # the default and the 1:2 row
    with open(tmp_path / "augment.csv") as f:
        rows = {row["setting"]: row for row in csv.DictReader(f)}
    assert list(rows) == ["real only (cnn)", "real only (resnet)", "real+gen default", "real+gen ratio=1:2"]
    assert float(rows["real only (resnet)"]["val_acc"]) == kept[1]["val"]

    # results are reused only for the same GAN bytes, data and classifier budget
    context = {"data": "digits", "per_class": 100, "steps": 2, "gan": bench.file_digest(cgan_ckpt)}
    real_cnn = {"mixed": False, **bench.DEFAULT, "filter_weights": None}
    results = bench.Results(tmp_path / "results.jsonl", context)
    assert results.get(real_cnn, 0) == (kept[0]["val"], kept[0]["test"])
    for change in ({"gan": "another checkpoint"}, {"steps": 3}, {"per_class": 50}):
        assert bench.Results(tmp_path / "results.jsonl", {**context, **change}).get(real_cnn, 0) is None
    # each run retrains the filter; filtered rows are keyed by its weights, which the same seed reproduces
    small = bench.real_data("digits", 100)
    first, again, other = (bench.train_classifier(small, "cnn", seed, 2, tmp_path) for seed in (0, 0, 1))
    assert bench.weights_digest(first) == bench.weights_digest(again) != bench.weights_digest(other)


def test_a_gan_that_trained_on_the_classifier_s_test_digits_is_refused_naming_both(real, tmp_path):
    leaky = checkpoint(tmp_path / "leaky", "cgan.yaml", test_fraction=0.1)  # 80% of all digits, test ones too
    with pytest.raises(ValueError) as refused:
        mixed(real, leaky, tmp_path)
    message = str(refused.value)
    assert f"data.generator_ckpt={str(leaky)!r} is not allowed: the GAN trained on" in message
    test_seen = re.search(r"([\d,]+) of the 4,000 test samples", message)
    assert test_seen and int(test_seen.group(1).replace(",", "")) > 2500  # most of the 4,000 test digits
    assert "data.real=DigitsDataModule" in message


def test_a_gan_checkpoint_without_a_record_is_refused_unless_the_flag_accepts_it(real, cgan_ckpt, tmp_path):
    state = torch.load(cgan_ckpt, map_location="cpu", weights_only=True)
    assert len(state["training_data"]["train_hashes"]) == len(real.train_dataset)
    del state["training_data"]  # as written before checkpoints recorded their data
    old = tmp_path / "old.ckpt"
    torch.save(state, old)
    with pytest.raises(ValueError, match=r"records no training data .* --data\.allow_unrecorded_generator="):
        mixed(real, old, tmp_path)
    accepted = mixed(real, old, tmp_path, allow_unrecorded_generator=True)
    assert accepted.num_generated == len(real.train_dataset)


@needs_data
def test_a_gan_of_other_subjects_than_the_classifier_s_training_ones_is_refused_naming_them(tmp_path):
    from lightning_gan.data import HARDataModule

    gan_data, classifier_data = HARDataModule(seed=0), HARDataModule(seed=1)  # other validation subjects
    shared = sorted(set(gan_data.subjects["train"]) & set(classifier_data.subjects["val"]))
    assert shared
    ckpt = tmp_path / "har_gan.ckpt"
    torch.save({"training_data": gan_data.training_record()}, ckpt)
    with pytest.raises(ValueError, match=re.escape(f"the val subjects {shared}")):
        MixedDataModule(classifier_data, str(ckpt), cache_dir=str(tmp_path))
    MixedDataModule(gan_data, str(ckpt), cache_dir=str(tmp_path))  # its own split: nothing shared
