"""Inception score, FID, KID, class coverage and label agreement of generated samples, every K steps."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.loggers import WandbLogger
from lightning.pytorch.utilities import rank_zero_info
from torch import Tensor, nn
from torchmetrics.classification import MulticlassAccuracy
from torchmetrics.image.fid import FrechetInceptionDistance
from torchmetrics.image.inception import InceptionScore
from torchmetrics.image.kid import KernelInceptionDistance

from lightning_gan.data import DigitsDataModule
from lightning_gan.metrics.coverage import ClassCoverage
from lightning_gan.validation import require_int


def _shard(n: int, rank: int, world_size: int) -> slice:
    """Rank ``rank``'s contiguous share of ``n`` items. torchmetrics gathers list states in rank order, so
    contiguous shards put the samples back in single-process order (IS splits and KID subsets then match)."""
    return slice(n * rank // world_size, n * (rank + 1) // world_size)


#: Which way each metric improves: W&B's run summary shows the best value (as sweep tables and the best-by-FID
#: checkpoint see it), not the last one.
BEST = {
    "is": "max", "fid": "min", "kid": "min", "coverage": "max", "classes_covered": "max", "class_kl": "min",
    "label_agreement": "max",
}  # fmt: skip


class GANMetrics(Callback):
    """Measures ``num_samples`` generated images every ``every_n_steps`` generator steps.

    Logged, with the generator step as x-axis: ``metrics/is`` (exp E_x KL(p(y|x) || p(y)), Salimans et al.
    2016) on the judge's logits; ``metrics/fid`` and ``metrics/kid`` against the real validation images on the
    judge's penultimate features. With ``inception_weights``, all three use the standard FID InceptionV3 (IS
    its logits without the fc bias, as the papers' IS; FID/KID its pool3 features), comparable with papers;
    ``metrics/coverage``, ``metrics/classes_covered`` and ``metrics/class_kl`` (mode dropping, see
    :class:`ClassCoverage`); for conditional models ``metrics/label_agreement``, how often the judge
    agrees with the asked label. Real statistics are computed once. Figures are reproducible: the latent
    vectors come from a generator seeded with ``seed``, and IS splits and KID subsets are drawn inside
    ``torch.random.fork_rng`` with that seed, so training's random stream is not touched either.

    Args:
        every_n_steps: Generator steps between evaluations.
        num_samples: Generated images per evaluation.
        judge: Path of a classifier checkpoint (from ``lightning-gan fit --config
            configs/classifier_digits.yaml``). When None, the data module's ``judge`` (``--data.judge``); when
            that is None too, on the bundled digits one is trained on first use and cached.
        inception_weights: Path of local FID InceptionV3 weights; FID/KID then use its 2048-d features and
            IS its unbiased logits.
        is_splits: Splits of the Inception score.
        kid_subsets: Subsets of KID; the subset size is the smaller of ``kid_subset_size`` and both set sizes.
        kid_subset_size: Largest KID subset.
        min_share: Coverage threshold, as a fraction of each class's real share.
        batch_size: Images per forward pass.
        seed: Seeds the latent vectors, IS splits and KID subsets.
        judge_cache_dir: Where a trained digits judge is cached (default ``$LIGHTNING_GAN_CACHE`` or
            ``~/.cache/lightning_gan``).
    """

    def __init__(
        self,
        every_n_steps: int = 500,
        num_samples: int = 2000,
        judge: str | None = None,
        inception_weights: str | None = None,
        is_splits: int = 10,
        kid_subsets: int = 100,
        kid_subset_size: int = 1000,
        min_share: float = 0.5,
        batch_size: int = 500,
        seed: int = 0,
        judge_cache_dir: str | None = None,
    ) -> None:
        for key, value, low in (
            ("every_n_steps", every_n_steps, 1),
            ("num_samples", num_samples, 2),
            ("is_splits", is_splits, 1),
            ("kid_subsets", kid_subsets, 1),
            ("kid_subset_size", kid_subset_size, 2),
            ("batch_size", batch_size, 1),
        ):
            require_int(f"GANMetrics.{key}", value, low)
        if num_samples < is_splits:
            raise ValueError(f"GANMetrics.num_samples={num_samples} is not allowed: must be >= is_splits")
        for key, path in (("judge", judge), ("inception_weights", inception_weights)):
            if path is not None and not Path(path).is_file():
                raise FileNotFoundError(f"GANMetrics.{key}={path!r}: no such file")
        self.every_n_steps = every_n_steps
        self.num_samples = num_samples
        self.judge_path = judge
        self.inception_weights = inception_weights
        self.is_splits = is_splits
        self.kid_subsets = kid_subsets
        self.kid_subset_size = kid_subset_size
        self.min_share = min_share
        self.batch_size = batch_size
        self.seed = seed
        self.judge_cache_dir = judge_cache_dir
        self.metrics: nn.ModuleDict | None = None
        self.eval_seconds = 0.0
        self.history: list[dict[str, float]] = []

    # ------------------------------------------------------------------ building the metrics once
    def _judge(self, trainer: Trainer) -> nn.Module:
        from lightning_gan.metrics.judge import cached_digits_judge, load_judge

        path = self._judge_path(trainer)
        if path is not None:
            return load_judge(path)
        # setup() made sure that the data are the bundled digits
        return cached_digits_judge(trainer.datamodule, self.judge_cache_dir, strategy=trainer.strategy)

    def _judge_path(self, trainer: Trainer) -> str | None:
        """Its own judge, else the data module's (``--data.judge``), else None (the built-in digits judge)."""
        return self.judge_path or getattr(trainer.datamodule, "judge", None)

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        if stage == "fit" and trainer.is_global_zero:
            for logger in trainer.loggers:
                if isinstance(logger, WandbLogger):
                    for name, best in BEST.items():
                        logger.experiment.define_metric(f"metrics/{name}", summary=best)
        # Fail before training when no judge can be had; the judge itself is built at the first evaluation,
        # so a short run (or a test) never trains one.
        if (
            stage == "fit"
            and self._judge_path(trainer) is None
            and not isinstance(trainer.datamodule, DigitsDataModule)
        ):
            raise ValueError(
                "GANMetrics.judge=None is not allowed: there is no built-in judge outside the digits; "
                "train one on your data with `lightning-gan fit --config configs/classifier_digits.yaml "
                "--data ...` and pass its checkpoint as --data.judge (or GANMetrics' judge)"
            )

    def _score_nets(self, judge: nn.Module) -> tuple[nn.Module, nn.Module]:
        """The networks IS and FID/KID are computed on: the judge's logits and features, or, with
        ``inception_weights``, the FID InceptionV3's logits without the fc bias (the papers' IS) and its
        pool3 features, from one network."""
        from lightning_gan.metrics.judge import JudgeFeatures

        if self.inception_weights is None:
            return JudgeFeatures(judge, "logits"), JudgeFeatures(judge, "features")
        from lightning_gan.metrics.inception import load_fid_inception

        inception = load_fid_inception(self.inception_weights)
        return inception.with_output("logits_unbiased"), inception

    def _build(self, trainer: Trainer, pl_module: LightningModule) -> None:
        from lightning_gan.metrics.judge import JudgeFeatures

        real = trainer.datamodule.real_images("val")
        judge = self._judge(trainer)
        logits = JudgeFeatures(judge, "logits")
        is_logits, features = self._score_nets(judge)
        subset = min(self.kid_subset_size, len(real), self.num_samples)
        metrics = {
            "is": InceptionScore(feature=is_logits, splits=self.is_splits),
            "fid": FrechetInceptionDistance(feature=features, reset_real_features=False),
            "kid": KernelInceptionDistance(
                feature=features, subsets=self.kid_subsets, subset_size=subset, reset_real_features=False
            ),
        }
        num_classes = trainer.datamodule.num_classes  # the real data's classes, which the judge predicts
        if num_classes >= 2:
            real_labels = trainer.datamodule.split_labels("val")
            histogram = torch.bincount(real_labels[real_labels >= 0], minlength=num_classes).double()
            metrics["coverage"] = ClassCoverage(histogram, min_share=self.min_share)
            if getattr(pl_module, "conditional", False):
                metrics["label_agreement"] = MulticlassAccuracy(num_classes, average="micro")
        self.metrics = nn.ModuleDict(metrics).to(pl_module.device)
        self._logits = logits
        rank, world = trainer.global_rank, trainer.world_size
        for batch in real[_shard(len(real), rank, world)].split(self.batch_size):  # real statistics, once
            self.metrics["fid"].update(batch.to(pl_module.device), real=True)
            self.metrics["kid"].update(batch.to(pl_module.device), real=True)

    # ------------------------------------------------------------------ evaluation
    def on_train_batch_end(self, trainer: Trainer, pl_module: LightningModule, *args: Any) -> None:
        if trainer.global_step % self.every_n_steps == 0:
            named = {f"metrics/{k}": float(v) for k, v in self.evaluate(trainer, pl_module).items()}
            # Straight to the loggers, not through pl_module.log: Lightning keeps a value logged from a hook
            # and writes it again into every later row until it is logged anew, so metrics.csv showed step
            # 500's FID at steps 510, 520, ... The checkpoint monitors read callback_metrics.
            for logger in trainer.loggers:
                logger.log_metrics(named, step=trainer.global_step)
            trainer.callback_metrics.update({k: torch.tensor(v) for k, v in named.items()})

    @torch.no_grad()
    def evaluate(self, trainer: Trainer, pl_module: LightningModule) -> dict[str, float]:
        """Measures ``num_samples`` samples of the current generator (its EMA when the run keeps one)."""
        start = time.perf_counter()
        # Building the judge (its random init, or training it) and IS/KID's random splits all run on a
        # forked random state: a run measures the same with or without this callback.
        with torch.random.fork_rng(devices=[]):
            if self.metrics is None:
                self._build(trainer, pl_module)
            self.metrics.to(pl_module.device)
            rank, world = trainer.global_rank, trainer.world_size
            # Every rank draws the same z for all samples and decodes its own contiguous share of them.
            z = pl_module.sample_latent(self.num_samples, generator=torch.Generator().manual_seed(self.seed))
            labels = self._labels(pl_module)
            mine = _shard(self.num_samples, rank, world)
            for z_batch, label_batch in zip(
                z[mine].split(self.batch_size), self._split(labels, mine), strict=True
            ):
                self._update(pl_module, z_batch.to(pl_module.device), label_batch)
            torch.manual_seed(self.seed)  # fixes IS splits and KID subsets
            values = self._compute()
        for name in ("is", "kid", "coverage", "label_agreement"):
            if name in self.metrics:
                self.metrics[name].reset()
        self.metrics["fid"].reset()  # keeps the real statistics (reset_real_features=False)
        seconds = time.perf_counter() - start
        self.eval_seconds += seconds
        self.history.append({"step": trainer.global_step, **values})
        rank_zero_info(
            f"[GANMetrics] generator step {trainer.global_step}: "
            + ", ".join(f"{k}={v:.4g}" for k, v in values.items())
            + f" ({seconds:.1f}s)"
        )
        return values

    def _labels(self, pl_module: LightningModule) -> Tensor | None:
        if not getattr(pl_module, "conditional", False):
            return None
        return torch.arange(self.num_samples) % pl_module.num_classes  # balanced classes

    def _split(self, labels: Tensor | None, mine: slice) -> list[Tensor | None]:
        n = mine.stop - mine.start
        if labels is None:
            return [None] * len(range(0, n, self.batch_size))
        return list(labels[mine].split(self.batch_size))

    def _update(self, pl_module: LightningModule, z: Tensor, labels: Tensor | None) -> None:
        device = pl_module.device
        fake = pl_module.sample(len(z), None if labels is None else labels.to(device), z=z)
        self.metrics["fid"].update(fake, real=False)
        self.metrics["kid"].update(fake, real=False)
        self.metrics["is"].update(fake)
        if "coverage" in self.metrics:
            judge_logits = self._logits(fake)
            self.metrics["coverage"].update(judge_logits)
            if labels is not None:
                self.metrics["label_agreement"].update(judge_logits, labels.to(device))

    def _compute(self) -> dict[str, float]:
        is_mean, _ = self.metrics["is"].compute()
        kid_mean, _ = self.metrics["kid"].compute()
        values = {"is": is_mean.item(), "fid": self.metrics["fid"].compute().item(), "kid": kid_mean.item()}
        if "coverage" in self.metrics:
            values |= {k: v.item() for k, v in self.metrics["coverage"].compute().items()}
        if "label_agreement" in self.metrics:
            values["label_agreement"] = self.metrics["label_agreement"].compute().item()
        return values

    def state_dict(self) -> dict[str, Any]:
        return {"eval_seconds": self.eval_seconds, "history": self.history}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.eval_seconds = state_dict["eval_seconds"]
        self.history = state_dict["history"]
