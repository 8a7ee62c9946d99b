"""The judge classifier: the Classifier model, training it without touching the caller's RNG, its torchmetrics
wrapper, the digits judge cache and the classifier_digits config."""

from __future__ import annotations

import math
import re
from pathlib import Path
from types import SimpleNamespace
from unittest import mock

import pytest
import torch
from lightning.pytorch import Trainer
from torch.utils.data import TensorDataset

from lightning_gan.cli import run
from lightning_gan.data import DigitsDataModule
from lightning_gan.data.samples import SplitDataset
from lightning_gan.metrics import JudgeFeatures, cached_digits_judge, load_judge, train_judge
from lightning_gan.metrics.judge import judge_accuracy
from lightning_gan.models import Classifier

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def digits() -> DigitsDataModule:
    return DigitsDataModule(batch_size=64)


@pytest.fixture(scope="module")
def trained(digits):
    """One epoch of train_judge on the digits (the slow part of this file, shared), with the global RNG state
    before and after and what it logged."""
    torch.manual_seed(123)
    before = torch.random.get_rng_state()
    with mock.patch("lightning_gan.metrics.judge.rank_zero_info") as info:
        judge = train_judge(digits, epochs=1, progress=False)
    after = torch.random.get_rng_state()
    return SimpleNamespace(judge=judge, before=before, after=after, logged=info.call_args.args[0])


def images(n: int = 6, shape: tuple[int, ...] = (1, 28, 28)) -> torch.Tensor:
    return torch.rand(n, *shape, generator=torch.Generator().manual_seed(0)) * 2 - 1


# --- the Classifier model -----------------------------------------------------------------------------------


@pytest.mark.parametrize("img_shape", [(1, 28, 28), (3, 32, 32), (1, 8, 8)])
def test_classifier_gives_logits_and_penultimate_features(img_shape):
    model = Classifier(img_shape, num_classes=7, channels=4, feature_dim=12).eval()
    x = images(5, img_shape)
    logits, features = model(x), model.features(x)
    assert logits.shape == (5, 7) and features.shape == (5, 12)
    # the logits are the linear head applied to exactly these features
    torch.testing.assert_close(logits, model.head(features))


@pytest.mark.parametrize(
    ("kwargs", "key"),
    [
        ({"num_classes": 1}, "model.num_classes=1"),
        ({"feature_dim": 0}, "model.feature_dim=0"),
        ({"channels": 0}, "model.channels=0"),
        ({"img_shape": (1, 4, 6)}, "model.img_shape=(1, 4, 6)"),
        ({"img_shape": (0, 28, 28)}, "model.img_shape=(0, 28, 28)"),
        ({"lr": 0.0}, "model.lr=0.0"),
    ],
)
def test_classifier_rejects_bad_settings_naming_the_key(kwargs, key):
    with pytest.raises(ValueError, match=re.escape(f"{key} is not allowed")):
        Classifier(**kwargs)


def test_classifier_trains_and_logs_accuracy_and_loss_per_stage(tmp_path, digits):
    model = Classifier(digits.img_shape, digits.num_classes, channels=4, feature_dim=8)
    trainer = Trainer(
        default_root_dir=tmp_path,
        max_epochs=1,
        limit_train_batches=3,
        limit_val_batches=2,
        limit_test_batches=2,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    before = [p.detach().clone() for p in model.parameters()]
    trainer.fit(model, datamodule=digits)
    assert any(not torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))
    fit_metrics = dict(trainer.callback_metrics)
    trainer.test(model, datamodule=digits, verbose=False)
    assert {"train/loss", "train/acc", "val/loss", "val/acc"} <= set(fit_metrics)
    assert {"test/loss", "test/acc"} <= set(trainer.callback_metrics)
    # each stage's accuracy is the plain share of right answers on the batches it saw (validation ran after
    # the last training batch, so with the final weights)
    n = 2 * digits.batch_size
    model.eval()
    for stage, logged in (("val", fit_metrics["val/acc"]), ("test", trainer.callback_metrics["test/acc"])):
        x, y = digits.real_images(stage), digits.split_labels(stage)
        assert logged.item() == pytest.approx((model(x[:n]).argmax(1) == y[:n]).float().mean().item())


# --- train_judge --------------------------------------------------------------------------------------------


def test_train_judge_reaches_90_percent_on_digits_and_reports_it(trained, digits):
    accuracy = judge_accuracy(trained.judge, digits.val_dataset)
    assert accuracy > 0.9
    assert f"{accuracy:.2%}" in trained.logged and "500 validation images" in trained.logged
    assert not trained.judge.training


def test_train_judge_leaves_the_global_rng_alone(trained):
    assert torch.equal(trained.before, trained.after)


def test_train_judge_is_reproducible_from_its_seed_and_shows_progress(digits, capsys):
    # a subset keeps this fast: the claim is about determinism, not accuracy
    small = SimpleNamespace(
        train_dataset=SplitDataset(
            digits.samples, digits.train_dataset.indices[:256], digits.split_labels("train")[:256]
        ),
        val_dataset=SplitDataset(
            digits.samples, digits.val_dataset.indices[:64], digits.split_labels("val")[:64]
        ),
        img_shape=digits.img_shape,
        num_classes=digits.num_classes,
    )
    a = train_judge(small, epochs=1, seed=5, progress=True)
    assert "training the judge" in capsys.readouterr().err
    with torch.no_grad():  # as inside GANMetrics' evaluation: training must still get gradients
        b = train_judge(small, epochs=1, seed=5, progress=False)
    assert "training the judge" not in capsys.readouterr().err
    c = train_judge(small, epochs=1, seed=6, progress=False)
    x = digits.real_images("val")[:8]
    torch.testing.assert_close(a(x), b(x))
    assert not torch.allclose(a(x), c(x))


# --- JudgeFeatures ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("output", "size"), [("logits", 10), ("features", 64)])
def test_judge_features_gives_logits_or_penultimate_features(trained, output, size):
    wrapped = JudgeFeatures(trained.judge, output)
    x = images(6)
    out = wrapped(x)
    assert wrapped.num_features == size and out.shape == (6, size) and out.dtype == torch.float32
    reference = trained.judge(x) if output == "logits" else trained.judge.features(x)
    torch.testing.assert_close(out, reference)


def test_judge_features_scales_uint8_like_float(trained):
    wrapped = JudgeFeatures(trained.judge, "features")
    pixels = torch.randint(
        0, 256, (4, 1, 28, 28), dtype=torch.uint8, generator=torch.Generator().manual_seed(1)
    )
    torch.testing.assert_close(wrapped(pixels), wrapped(pixels.float() / 127.5 - 1))
    assert not torch.allclose(wrapped(pixels), wrapped(pixels.float()))  # raw 0..255 would differ


def test_judge_features_stays_in_eval_mode_without_grad(trained):
    wrapped = JudgeFeatures(trained.judge, "logits")
    x = images(4)
    expected = wrapped(x)
    wrapped.train()
    assert not wrapped.training and not trained.judge.training
    assert not any(p.requires_grad for p in wrapped.parameters())
    torch.testing.assert_close(wrapped(x), expected)  # BN used its running statistics, not the batch's


def test_judge_features_rejects_other_image_shapes(trained):
    with pytest.raises(ValueError, match=r"\(3, 32, 32\).*img_shape=\(1, 28, 28\)"):
        JudgeFeatures(trained.judge, "features")(images(2, (3, 32, 32)))


def test_judge_features_plugs_into_torchmetrics_fid(trained, digits):
    from torchmetrics.image.fid import FrechetInceptionDistance

    fid = FrechetInceptionDistance(feature=JudgeFeatures(trained.judge, "features"))
    real = digits.real_images("val")
    fid.update(real[:250], real=True)
    fid.update(real[250:], real=False)
    same = fid.compute().item()
    fid.reset()
    fid.update(real, real=True)
    fid.update(images(500), real=False)  # noise
    assert 0 <= same < fid.compute().item()


# --- load_judge and the digits cache ------------------------------------------------------------------------


def test_load_judge_errors_name_the_path(tmp_path, digits):
    missing = tmp_path / "nope.ckpt"
    with pytest.raises(FileNotFoundError, match=re.escape(str(missing))):
        load_judge(missing)
    garbage = tmp_path / "garbage.ckpt"
    garbage.write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match=re.escape(str(garbage))):
        load_judge(garbage)
    other = tmp_path / "other.ckpt"  # a readable torch file, but a different network
    torch.save({"state_dict": {"weight": torch.zeros(2)}, "hyper_parameters": {}}, other)
    with pytest.raises(ValueError, match=re.escape(str(other))):
        load_judge(other)


def test_cached_digits_judge_trains_once_then_loads_from_cache_dir(tmp_path, trained, digits):
    with mock.patch("lightning_gan.metrics.judge.train_judge", return_value=trained.judge) as train:
        first = cached_digits_judge(digits, tmp_path / "cache")
    train.assert_called_once()
    files = list((tmp_path / "cache").iterdir())
    assert len(files) == 1 and re.fullmatch(r"judge-digits-[0-9a-f]{12}\.ckpt", files[0].name)
    with mock.patch("lightning_gan.metrics.judge.train_judge") as train:
        second = cached_digits_judge(digits, tmp_path / "cache")
    train.assert_not_called()
    x = images(4)
    torch.testing.assert_close(second(x), trained.judge(x))
    torch.testing.assert_close(second.features(x), first.features(x))
    assert not second.training


def test_cached_digits_judge_key_and_default_folder(tmp_path, trained, monkeypatch, digits):
    monkeypatch.setenv("LIGHTNING_GAN_CACHE", str(tmp_path / "env"))
    with mock.patch("lightning_gan.metrics.judge.train_judge", return_value=trained.judge):
        cached_digits_judge(digits)
        # another split is another judge: it must not be served the first one
        cached_digits_judge(DigitsDataModule(batch_size=64, seed=1))
    assert len(list((tmp_path / "env").glob("judge-digits-*.ckpt"))) == 2


def test_cached_digits_judge_needs_fewer_features_than_validation_images(tmp_path):
    dm = DigitsDataModule(batch_size=64, val_fraction=0.01)  # 50 validation images
    with (
        mock.patch("lightning_gan.metrics.judge.train_judge") as train,
        pytest.raises(ValueError, match=r"feature_dim=64 is not allowed.*50 validation images"),
    ):
        cached_digits_judge(dm, tmp_path)
    train.assert_not_called()


@pytest.mark.parametrize("rank", [0, 1])
def test_cached_digits_judge_trains_on_rank_zero_only(tmp_path, trained, digits, rank):
    strategy = SimpleNamespace(world_size=2, global_rank=rank, barrier=mock.Mock())
    if rank == 1:  # what rank 0 wrote before the barrier
        with mock.patch("lightning_gan.metrics.judge.train_judge", return_value=trained.judge):
            cached_digits_judge(digits, tmp_path)
    with mock.patch("lightning_gan.metrics.judge.train_judge", return_value=trained.judge) as train:
        judge = cached_digits_judge(digits, tmp_path, strategy=strategy)
    assert train.call_count == (1 if rank == 0 else 0)
    strategy.barrier.assert_called_once()
    torch.testing.assert_close(judge(images(2)), trained.judge(images(2)))


# --- the classifier_digits config ---------------------------------------------------------------------------


def test_classifier_digits_config_fits_and_keeps_the_best_by_val_acc(tmp_path):
    cli = run(
        [
            "fit",
            "--config",
            str(REPO / "configs" / "classifier_digits.yaml"),
            f"--trainer.default_root_dir={tmp_path}",
            "--trainer.max_epochs=2",
            "--trainer.limit_train_batches=2",
            "--trainer.limit_val_batches=1",
            "--trainer.enable_progress_bar=false",
            "--model.channels=4",
        ]
    )
    checkpoint = cli.trainer.checkpoint_callback
    assert checkpoint.monitor == "val/acc" and checkpoint.mode == "max"
    assert Path(checkpoint.best_model_path).name.startswith("best-")
    assert isinstance(load_judge(checkpoint.best_model_path), Classifier)


def test_the_digits_judge_learns_from_every_label_even_when_the_gan_sees_few(tmp_path):
    from lightning_gan.metrics import judge as judge_module

    with mock.patch.object(judge_module, "train_judge", wraps=judge_module.train_judge) as train:
        cached_digits_judge(DigitsDataModule(num_labelled=100), tmp_path)
    taught = train.call_args.args[0]
    assert (taught.split_labels("train") >= 0).all() and len(taught.train_dataset) == 4000
    cached_digits_judge(DigitsDataModule(), tmp_path)  # the same instrument: loaded from the same file
    assert train.call_count == 1


@pytest.mark.parametrize("img_shape", [(1, 28, 28), (3, 32, 32)])
def test_the_resnet_backbone_classifies_and_learns(img_shape):
    from lightning_gan.nets.resnet import BasicBlock, ResNetFeatures

    model = Classifier(img_shape=img_shape, num_classes=10, channels=8, feature_dim=16, backbone="resnet")
    assert isinstance(model.backbone, ResNetFeatures)
    assert sum(isinstance(m, BasicBlock) for m in model.modules()) == 6  # 3 stages x 2 blocks
    x, y = images(8, img_shape), torch.arange(8)
    assert model(x).shape == (8, 10) and model.features(x).shape == (8, 16)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(15):  # fits 8 images: the residual path trains end to end
        loss = torch.nn.functional.cross_entropy(model(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]
    with pytest.raises(ValueError, match=r"model\.backbone='vgg' is not allowed"):
        Classifier(backbone="vgg")


@pytest.mark.parametrize("schedule", ["constant", "cosine"])
def test_the_cosine_schedule_anneals_the_learning_rate_to_zero_over_the_run(schedule):
    from lightning.pytorch import Callback
    from torch.utils.data import DataLoader

    data = DataLoader(TensorDataset(images(40), torch.arange(40) % 10), batch_size=10)  # 4 steps per epoch
    model = Classifier(channels=4, feature_dim=8, lr=0.01, lr_schedule=schedule)
    seen = []

    class Record(Callback):
        def on_train_batch_start(self, trainer, *args):
            seen.append(trainer.optimizers[0].param_groups[0]["lr"])

    trainer = Trainer(max_epochs=2, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                      enable_model_summary=False, callbacks=[Record()])  # fmt: skip
    trainer.fit(model, data)
    assert len(seen) == 8 and seen[0] == pytest.approx(0.01)
    if schedule == "constant":
        assert seen == [pytest.approx(0.01)] * 8
    else:
        assert seen[4] == pytest.approx(0.005) and seen[-1] == pytest.approx(
            0.01 * (1 + math.cos(math.pi * 7 / 8)) / 2
        )
