"""GANMetrics against independent NumPy/SciPy computations; its behaviour on real and collapsed samples."""

from __future__ import annotations

import csv
from functools import partial

import numpy as np
import pytest
import scipy.linalg
import torch
from lightning.pytorch import Trainer
from torchmetrics.image.fid import FrechetInceptionDistance
from torchmetrics.image.inception import InceptionScore

from lightning_gan.callbacks import GANMetrics
from lightning_gan.data import DigitsDataModule
from lightning_gan.loggers import CSVLogger
from lightning_gan.metrics import JudgeFeatures, cached_digits_judge, save_judge
from lightning_gan.metrics.coverage import ClassCoverage
from lightning_gan.models import GAN, Classifier
from lightning_gan.nets import DCGANDiscriminator, DCGANGenerator


def numpy_fid(real: np.ndarray, fake: np.ndarray) -> float:
    """Fréchet distance of Gaussians fitted to the features (Heusel et al. 2017, eq. 6), SciPy's sqrtm."""
    mu1, mu2 = real.mean(0), fake.mean(0)
    s1, s2 = np.cov(real, rowvar=False), np.cov(fake, rowvar=False)
    covmean = scipy.linalg.sqrtm(s1 @ s2).real
    return float(((mu1 - mu2) ** 2).sum() + np.trace(s1 + s2 - 2 * covmean))


def numpy_inception_score(logits: np.ndarray) -> float:
    """exp(E_x KL(p(y|x) || p(y))) over one split (Salimans et al. 2016)."""
    p = np.exp(logits - logits.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    marginal = p.mean(0, keepdims=True)
    return float(np.exp((p * (np.log(p) - np.log(marginal))).sum(1).mean()))


@pytest.fixture(scope="module")
def judge_path(tmp_path_factory):
    """An untrained judge (fixed seed): agreement with the reference does not need a good one."""
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("judge") / "judge.ckpt"
    save_judge(Classifier(img_shape=(1, 28, 28), num_classes=10, feature_dim=16), path)
    return path


@pytest.fixture(scope="module")
def trained_judge(tmp_path_factory):
    return cached_digits_judge(DigitsDataModule(), tmp_path_factory.mktemp("cache"))


def frozen_gan(seed: int = 0) -> GAN:
    """A GAN whose G does not change in training (lr_g=0, no BatchNorm): the same samples in every run."""
    torch.manual_seed(seed)
    return GAN(
        generator=partial(DCGANGenerator, base_channels=8, norm="none"),
        discriminator=partial(DCGANDiscriminator, base_channels=8),
        latent_dim=8,
        lr_g=0.0,
    )


def fit_with_metrics(tmp_path, metrics: GANMetrics, **trainer_kwargs) -> tuple[GAN, Trainer]:
    model = frozen_gan()
    trainer = Trainer(
        default_root_dir=tmp_path, logger=CSVLogger(tmp_path), callbacks=[metrics],
        log_every_n_steps=1,
        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False, accelerator="cpu",
        **{"max_steps": 2, **trainer_kwargs},
    )  # fmt: skip
    trainer.fit(model, DigitsDataModule(batch_size=16))
    return model, trainer


def test_fid_and_is_equal_an_independent_numpy_scipy_computation(tmp_path, judge_path):
    metrics = GANMetrics(every_n_steps=2, num_samples=300, judge=str(judge_path), is_splits=1, kid_subsets=3)
    model, _ = fit_with_metrics(tmp_path, metrics)
    figures = metrics.history[-1]

    judge = Classifier.load_from_checkpoint(judge_path).eval()
    z = torch.randn(300, 8, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        fake = model.sample(300, z=z)
        real = DigitsDataModule(batch_size=16).real_images("val")
        fake_features, real_features = judge.features(fake).double(), judge.features(real).double()
        fake_logits = judge(fake).double()
    assert figures["fid"] == pytest.approx(numpy_fid(real_features.numpy(), fake_features.numpy()), rel=1e-3)
    assert figures["is"] == pytest.approx(numpy_inception_score(fake_logits.numpy()), rel=1e-3)
    assert np.isfinite(figures["kid"])


def test_same_samples_give_the_same_figures_and_training_randomness_is_untouched(tmp_path, judge_path):
    metrics = GANMetrics(every_n_steps=1, num_samples=200, judge=str(judge_path), is_splits=4, kid_subsets=5)
    model, trainer = fit_with_metrics(tmp_path, metrics)
    state = torch.random.get_rng_state()
    again = metrics.evaluate(trainer, model)
    assert torch.equal(torch.random.get_rng_state(), state)
    assert again == {k: v for k, v in metrics.history[-2].items() if k != "step"}  # G frozen: same figures
    with open(tmp_path / "lightning_logs" / "version_0" / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    logged = [r for r in rows if r.get("metrics/fid")]
    assert [int(float(r["step"])) for r in logged] == [1, 2]  # logged at the generator steps evaluated


def test_real_vs_real_fid_is_about_zero_and_real_vs_noise_is_large(trained_judge):
    features = JudgeFeatures(trained_judge, "features")
    real = DigitsDataModule().real_images("val")
    fid = FrechetInceptionDistance(feature=features, reset_real_features=False)
    fid.update(real, real=True)
    fid.update(real, real=False)
    same = fid.compute().item()
    fid.reset()
    fid.update(torch.rand_like(real) * 2 - 1, real=False)
    noise = fid.compute().item()
    assert abs(same) < 1e-6 and noise > 1000 * max(abs(same), 1e-3)


def test_real_data_scores_far_higher_is_and_coverage_than_a_one_image_generator(trained_judge):
    logits = JudgeFeatures(trained_judge, "logits")
    dm = DigitsDataModule()
    real = dm.real_images("val")
    one_image = real[:1].expand(len(real), -1, -1, -1)
    scores = {}
    for name, images in (("real", real), ("one", one_image)):
        inception = InceptionScore(feature=logits, splits=1)
        inception.update(images)
        coverage = ClassCoverage(torch.bincount(dm.split_labels("val")).double())
        coverage.update(logits(images))
        scores[name] = (inception.compute()[0].item(), coverage.compute()["classes_covered"].item())
    assert scores["real"][0] > 5 * scores["one"][0] and scores["one"][0] == pytest.approx(1.0, abs=1e-4)
    assert scores["real"][1] == 10 and scores["one"][1] == 1


def test_without_a_judge_on_other_data_it_fails_before_training(tmp_path):
    from lightning_gan.data import ArrayDataModule

    path = tmp_path / "data.npz"
    np.savez(path, images=np.zeros((64, 1, 28, 28), dtype=np.uint8))
    trainer = Trainer(max_steps=1, logger=False, callbacks=[GANMetrics()], enable_checkpointing=False)
    with pytest.raises(ValueError, match=r"GANMetrics\.judge=None is not allowed"):
        trainer.fit(frozen_gan(), ArrayDataModule(str(path), batch_size=16))


def test_bad_settings_are_named(tmp_path):
    with pytest.raises(ValueError, match=r"GANMetrics\.every_n_steps=0"):
        GANMetrics(every_n_steps=0)
    with pytest.raises(FileNotFoundError, match=r"GANMetrics\.judge="):
        GANMetrics(judge=str(tmp_path / "missing.ckpt"))


def logged_metrics(root) -> dict[str, float]:
    with open(root / "lightning_logs" / "version_0" / "metrics.csv") as f:
        row = [r for r in csv.DictReader(f) if r.get("metrics/fid")][-1]
    return {k: float(v) for k, v in row.items() if k.startswith("metrics/")}


def test_metrics_under_ddp_on_two_processes_equal_the_single_process_figures(tmp_path, judge_path):
    """Each rank decodes its contiguous share of the same z and real images; torchmetrics gathers them."""
    figures = {}
    ddp = {"devices": 2, "strategy": "ddp_spawn"}  # the GAN sets find_unused_parameters itself
    for name, kwargs in (("single", {"devices": 1}), ("ddp", ddp)):
        metrics = GANMetrics(
            every_n_steps=2, num_samples=300, judge=str(judge_path), is_splits=3, kid_subsets=4
        )
        fit_with_metrics(tmp_path / name, metrics, **kwargs)
        figures[name] = logged_metrics(tmp_path / name)
    assert set(figures["ddp"]) == set(figures["single"]) >= {"metrics/fid", "metrics/is", "metrics/kid"}
    for key, value in figures["single"].items():
        assert figures["ddp"][key] == pytest.approx(value, rel=1e-4, abs=1e-6), key


def test_default_digits_judge_is_trained_once_cached_and_leaves_training_untouched(tmp_path):
    """No judge given on the digits: one is trained at the first evaluation (inside no_grad), cached, and the
    run's own random stream is the same as without any evaluation."""

    def g_weights(callbacks) -> torch.Tensor:
        torch.manual_seed(0)
        model = GAN(
            generator=partial(DCGANGenerator, base_channels=8),
            discriminator=partial(DCGANDiscriminator, base_channels=8),
            latent_dim=8,
        )
        Trainer(
            max_steps=3, logger=False, callbacks=callbacks, enable_checkpointing=False,
            enable_progress_bar=False, enable_model_summary=False, accelerator="cpu",
        ).fit(model, DigitsDataModule(batch_size=16))  # fmt: skip
        return torch.cat([p.detach().flatten() for p in model.generator.parameters()])

    metrics = GANMetrics(every_n_steps=2, num_samples=200, judge_cache_dir=str(tmp_path))
    with_metrics = g_weights([metrics])
    assert len(list(tmp_path.glob("judge-digits-*.ckpt"))) == 1
    assert {"is", "fid", "kid", "coverage", "class_kl"} <= set(metrics.history[0])
    assert torch.equal(with_metrics, g_weights([]))


class RealDigits(torch.nn.Module):
    """A stand-in conditional generator: for each asked label it returns a real validation digit of class
    ``label + shift`` that the judge classifies right, so the judge agrees with the asked label exactly when
    shift is 0."""

    conditional = True
    latent_dim = 4
    num_classes = 10

    def __init__(self, shift: int, judge: Classifier):
        super().__init__()
        images, labels = DigitsDataModule().real_images("val"), DigitsDataModule().split_labels("val")
        with torch.no_grad():
            right = judge(images).argmax(1) == labels
        self.register_buffer("per_class", torch.stack([images[(labels == k) & right][0] for k in range(10)]))
        self.shift = shift

    @property
    def device(self):
        return self.per_class.device

    def sample_latent(self, num_samples, generator=None):
        return torch.randn(num_samples, self.latent_dim, generator=generator)

    def sample(self, num_samples, labels=None, *, z=None, **kwargs):
        return self.per_class[(labels + self.shift) % 10]


def test_label_agreement_of_a_conditional_model_is_the_judges_agreement_with_the_asked_label(
    tmp_path, trained_judge
):
    from types import SimpleNamespace

    judge = tmp_path / "judge.ckpt"
    save_judge(trained_judge, judge)
    trainer = SimpleNamespace(datamodule=DigitsDataModule(), global_rank=0, world_size=1, global_step=1)
    agreement = {}
    for shift in (0, 1):
        metrics = GANMetrics(num_samples=200, judge=str(judge), kid_subsets=2)
        agreement[shift] = metrics.evaluate(trainer, RealDigits(shift, trained_judge))["label_agreement"]
    assert agreement == {0: 1.0, 1: 0.0}


def test_the_best_checkpoint_is_kept_by_fid(tmp_path, judge_path):
    from lightning_gan.callbacks import GANCheckpoint

    metrics = GANMetrics(every_n_steps=1, num_samples=200, judge=str(judge_path), kid_subsets=2)
    best = GANCheckpoint(
        dirpath=tmp_path / "ckpt", monitor="metrics/fid", mode="min", save_top_k=1, every_n_train_steps=1,
        filename="best-{step}",
    )  # fmt: skip
    model = GAN(
        generator=partial(DCGANGenerator, base_channels=8),
        discriminator=partial(DCGANDiscriminator, base_channels=8),
        latent_dim=8,
        lr_g=1e-2,  # G moves a lot: FID changes from step to step
    )
    Trainer(
        max_steps=4, logger=False, callbacks=[metrics, best], enable_progress_bar=False,
        enable_model_summary=False, accelerator="cpu",
    ).fit(model, DigitsDataModule(batch_size=16))  # fmt: skip
    fids = {row["step"]: row["fid"] for row in metrics.history}
    best_step = min(fids, key=fids.get)
    assert [p.name for p in (tmp_path / "ckpt").glob("*.ckpt")] == [f"best-step={best_step}.ckpt"]
    assert best.best_model_score.item() == pytest.approx(fids[best_step], rel=1e-6)


def test_metrics_appear_only_in_the_rows_of_the_steps_evaluated(tmp_path, judge_path):
    # Logged through pl_module.log from a hook, Lightning wrote step 2's figures again into the row of step 3.
    metrics = GANMetrics(every_n_steps=2, num_samples=64, judge=str(judge_path))
    _, trainer = fit_with_metrics(tmp_path, metrics, max_steps=5)
    with open(tmp_path / "lightning_logs" / "version_0" / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    assert sorted(int(float(r["step"])) for r in rows if r.get("metrics/fid")) == [2, 4]
    assert sorted({int(float(r["step"])) for r in rows if r.get("loss/g")}) == [1, 2, 3, 4, 5]
    assert float(trainer.callback_metrics["metrics/fid"]) == metrics.history[-1]["fid"]


def test_the_data_modules_judge_scores_other_data(tmp_path, judge_path):
    """``--data.judge``: a judge for one's own data, without editing GANMetrics in a trainer config."""
    from lightning_gan.data import ArrayDataModule

    path = tmp_path / "data.npz"
    rng = np.random.default_rng(0)
    np.savez(path, images=rng.integers(0, 256, (160, 1, 28, 28), dtype=np.uint8), labels=np.arange(160) % 10)
    metrics = GANMetrics(every_n_steps=1, num_samples=64, kid_subsets=2)
    trainer = Trainer(max_steps=1, logger=False, callbacks=[metrics], enable_checkpointing=False)
    trainer.fit(frozen_gan(), ArrayDataModule(str(path), batch_size=16, judge=str(judge_path)))
    assert metrics.history and metrics.history[0]["fid"] > 0
    with pytest.raises(FileNotFoundError, match=r"data\.judge="):
        ArrayDataModule(str(path), judge=str(tmp_path / "missing.ckpt"))
