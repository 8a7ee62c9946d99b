"""Real plus generated training data for a classifier: the source notes' use of a conditional GAN.

The generated part is drawn from a trained conditional generator (a checkpoint of ``lightning-gan fit``):
how many (``ratio``, generated:real as the notes wrote it), of which classes (``class_mode``) and how the two
streams alternate within an epoch (``schedule``). Validation and test data are always the real module's.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

import torch
from lightning.pytorch import LightningDataModule
from lightning.pytorch.utilities import rank_zero_info
from torch import Tensor
from torch.utils.data import ConcatDataset, DataLoader, TensorDataset

from lightning_gan.data.base import GANDataModule
from lightning_gan.data.provenance import check_no_leak
from lightning_gan.data.sampler import seeded_generator
from lightning_gan.data.samples import collate_images
from lightning_gan.validation import require, require_int

ClassMode = Literal["fixed", "random"]


def parse_ratio(ratio: str | float) -> float:
    """Generated per real sample: ``"1:4"`` -> 0.25 (a quarter as many generated as real), ``"2:1"`` -> 2.0.

    Example:
        >>> parse_ratio("1:1.5"), parse_ratio("2:1"), parse_ratio(0.5)
        (0.6666666666666666, 2.0, 0.5)
    """
    if isinstance(ratio, str):
        match = re.fullmatch(r"\s*([0-9.]+)\s*:\s*([0-9.]+)\s*", ratio)
        require(match is not None, "data.ratio", ratio, 'write generated:real, e.g. "1:1", "1:2.5", "2:1"')
        generated, real = float(match[1]), float(match[2])
        require(generated > 0 and real > 0, "data.ratio", ratio, "both sides must be > 0")
        return generated / real
    require(ratio > 0, "data.ratio", ratio, 'must be > 0 (generated per real sample), or "generated:real"')
    return float(ratio)


def parse_schedule(schedule: str) -> tuple[int, int] | None:
    """``"mixed"`` -> None (both streams shuffled into every batch); ``"3:1"`` -> 3 generated batches, then 1
    real batch, repeated."""
    if schedule == "mixed":
        return None
    match = re.fullmatch(r"\s*(\d+)\s*:\s*(\d+)\s*", schedule)
    require(
        match is not None and int(match[1]) > 0 and int(match[2]) > 0,
        "data.schedule",
        schedule,
        'use "mixed" or "k:m" (k generated batches, then m real batches, e.g. "3:1", "15:5")',
    )
    return int(match[1]), int(match[2])


def class_counts(total: int, proportions: Tensor) -> Tensor:
    """Splits ``total`` over classes in ``proportions``, exact up to rounding (largest remainders)."""
    exact = proportions / proportions.sum() * total
    counts = exact.floor().long()
    remainder = total - int(counts.sum())
    counts[torch.argsort(exact - counts, descending=True)[:remainder]] += 1
    return counts


class AlternatingLoader:
    """Yields ``k`` batches of ``generated``, then ``m`` of ``real``, repeated. A stream that runs out
    leaves the rest of the epoch to the other one, so an epoch holds every batch of both, once."""

    def __init__(self, generated: DataLoader, real: DataLoader, pattern: tuple[int, int]) -> None:
        self.generated, self.real, self.pattern = generated, real, pattern

    def __len__(self) -> int:
        return len(self.generated) + len(self.real)

    def __iter__(self) -> Iterator[Any]:
        streams = [iter(self.generated), iter(self.real)]
        live = [True, True]
        while any(live):
            for which, count in enumerate(self.pattern):
                for _ in range(count if live[1 - which] else len(self)):  # the other ran out: drain this one
                    if not live[which]:
                        break
                    try:
                        yield next(streams[which])
                    except StopIteration:
                        live[which] = False


class MixedDataModule(LightningDataModule):
    """Training data = the real module's training split + samples of a conditional generator.

    Args:
        real: The real, labelled data (e.g. the bundled digits); its validation and test splits are used as
            they are, never mixed.
        generator_ckpt: Checkpoint of a conditional GAN (CGAN, CDCGAN, ACGAN) trained on the same classes.
        class_mode: ``fixed``: generated classes in the real training data's class proportions; ``random``:
            uniformly random classes.
        ratio: Generated:real amount as the notes wrote it: ``"1:1"``, ``"1:1.5"``, ... ``"1:4"`` (a quarter
            as many generated as real), also ``"2:1"``; or a number (generated per real sample).
        schedule: ``mixed``: both streams shuffled into every batch; ``"k:m"``: k generated batches, then m
            real ones, repeated (the notes compared 1:1, 3:1 and 15:5).
        resample: Draw new samples every epoch instead of once (cached on disk by checkpoint hash).
        batch_size: Batch size of the training loader (default: the real module's).
        seed: Seeds the generated classes and latent vectors (epoch ``e`` adds ``e`` when resampling) and the
            shuffling.
        no_ema: Sample with G's trained weights even when the checkpoint holds an EMA of them.
        cache_dir: Where drawn samples are cached (default: ``$LIGHTNING_GAN_CACHE`` or
            ``~/.cache/lightning_gan``).
        filter_ckpt: A classifier checkpoint (``lightning-gan fit --config configs/classifier_*.yaml`` on the
            same real training data): keep only the generated samples it assigns to the class they were
            drawn for, with probability >= ``min_confidence``; rejected ones are drawn again from new
            latent vectors. None keeps every sample.
        min_confidence: With ``filter_ckpt``: the least probability of the asked class, in [0, 1).
        max_draws: With ``filter_ckpt``: give up (with an error naming the class) after drawing this many
            times the requested number of samples.
        allow_unrecorded_generator: Accept a ``generator_ckpt`` that does not record the samples it trained
            on (written before checkpoints recorded them). Recorded ones are always checked: a GAN that
            trained on any of ``real``'s validation or test samples (or subjects) is refused before training.
    """

    def __init__(
        self,
        real: GANDataModule,
        generator_ckpt: str,
        *,
        class_mode: ClassMode = "fixed",
        ratio: str | float = "1:1",
        schedule: str = "mixed",
        resample: bool = False,
        batch_size: int | None = None,
        seed: int = 0,
        no_ema: bool = False,
        cache_dir: str | None = None,
        filter_ckpt: str | None = None,
        min_confidence: float = 0.0,
        max_draws: int = 20,
        allow_unrecorded_generator: bool = False,
    ) -> None:
        super().__init__()
        require(class_mode in ("fixed", "random"), "data.class_mode", class_mode, "choose fixed or random")
        self.ratio = parse_ratio(ratio)
        self.pattern = parse_schedule(schedule)
        if batch_size is not None:
            require_int("data.batch_size", batch_size, 1)
        require(
            Path(generator_ckpt).is_file(), "data.generator_ckpt", generator_ckpt, "no such checkpoint file"
        )
        if filter_ckpt is not None:
            require(Path(filter_ckpt).is_file(), "data.filter_ckpt", filter_ckpt, "no such checkpoint file")
        require(
            isinstance(min_confidence, int | float) and 0 <= min_confidence < 1,
            "data.min_confidence",
            min_confidence,
            "must be in [0, 1)",
        )
        require_int("data.max_draws", max_draws, 1)
        check_no_leak(real, Path(generator_ckpt), allow_unrecorded_generator)
        self.filter_ckpt = Path(filter_ckpt) if filter_ckpt is not None else None
        self.min_confidence = float(min_confidence)
        self.max_draws = max_draws
        self.acceptance: float | None = None  # share of drawn samples the filter kept, once drawn
        self.real = real
        self.generator_ckpt = Path(generator_ckpt)
        self.class_mode = class_mode
        self.resample = resample
        self.batch_size = batch_size or real.batch_size
        self.seed = seed
        self.no_ema = no_ema
        self.cache_dir = cache_dir
        # What the CLI links into the model, and what the classifier evaluates on: the real module's.
        self.img_shape, self.num_classes, self.class_names = (
            real.img_shape,
            real.num_classes,
            real.class_names,
        )
        self.val_dataset, self.test_dataset = real.val_dataset, real.test_dataset
        real_labels = real.split_labels("train")
        require(
            bool((real_labels >= 0).all()),
            "data.real",
            type(real).__name__,
            "the real training data must be labelled (data.num_labelled hides labels)",
        )
        self.num_generated = round(self.ratio * len(real_labels))
        self.real_proportions = torch.bincount(real_labels, minlength=self.num_classes).double()
        self._model = None  # loaded on first use
        self._filter: torch.nn.Module | None = None

    # ------------------------------------------------------------------ generated samples
    def generated_labels(self, epoch: int = 0) -> Tensor:
        """The classes asked of the generator, in a shuffled order."""
        rng = seeded_generator(self.seed + epoch)
        if self.class_mode == "fixed":
            counts = class_counts(self.num_generated, self.real_proportions)
            labels = torch.arange(self.num_classes).repeat_interleave(counts)
            return labels[torch.randperm(len(labels), generator=rng)]
        return torch.randint(self.num_classes, (self.num_generated,), generator=rng)

    def _cache_path(self, epoch: int) -> Path:
        from lightning_gan.metrics.judge import default_cache_dir

        digest = hashlib.sha256(self.generator_ckpt.read_bytes()).hexdigest()[:16]
        settings = (
            f"{self.class_mode}-{self.num_generated}-{self.seed + epoch}-{'g' if self.no_ema else 'ema'}"
        )
        if self.filter_ckpt is not None:
            judge = hashlib.sha256(self.filter_ckpt.read_bytes()).hexdigest()[:16]
            settings += f"-filter{judge}-{self.min_confidence:g}-{self.max_draws}"
        root = Path(self.cache_dir) if self.cache_dir is not None else default_cache_dir()
        return root / "generated" / f"{digest}-{settings}.pt"

    def generated_dataset(self, epoch: int = 0) -> TensorDataset:
        """Samples of the generator checkpoint: cached on disk under the checkpoint's hash and settings."""
        path = self._cache_path(epoch)
        if path.is_file():  # memory-mapped: pages are read as samples are, and the page cache can drop them
            images, labels = torch.load(path, weights_only=True, mmap=True)
            return TensorDataset(images, labels)
        if self._model is None:
            from lightning_gan.generate import load_gan

            self._model = load_gan(self.generator_ckpt)
            require(
                self._model.conditional,
                "data.generator_ckpt",
                str(self.generator_ckpt),
                "the generator must be conditional (CGAN, CDCGAN or ACGAN): its samples need labels",
            )
            require(
                self._model.num_classes == self.num_classes,
                "data.generator_ckpt",
                str(self.generator_ckpt),
                f"its {self._model.num_classes} classes differ from the real data's {self.num_classes}",
            )
        labels = self.generated_labels(epoch)
        images = self._draw(labels, seeded_generator(self.seed + epoch))
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save((images, labels), path)
        rank_zero_info(
            f"[MixedDataModule] drew {len(labels)} samples of {self.generator_ckpt}, cached at {path}"
        )
        return self.generated_dataset(epoch)  # the saved file, memory-mapped

    def _sample(self, labels: Tensor, rng: torch.Generator) -> Tensor:
        """Samples (N, C, H, W) of ``labels`` from new latent vectors of ``rng``, 500 at a time."""
        z = self._model.sample_latent(len(labels), generator=rng).cpu()
        chunks = [
            self._model.sample(len(zb), lb, z=zb, ema=not self.no_ema)
            for zb, lb in zip(z.split(500), labels.split(500), strict=True)
        ]
        return torch.cat(chunks) if chunks else torch.empty(0, *self.img_shape)

    @torch.no_grad()
    def _accepted(self, images: Tensor, labels: Tensor) -> Tensor:
        """Which samples (N,) bool the filter classifier assigns to their label with enough confidence."""
        if self.filter_ckpt is None:
            return torch.ones(len(labels), dtype=torch.bool)
        if self._filter is None:
            from lightning_gan.metrics.judge import load_judge

            self._filter = load_judge(self.filter_ckpt).eval()
        probs = torch.cat([self._filter(x).softmax(dim=1) for x in images.split(500)])  # (N, K)
        require(
            probs.shape[1] == self.num_classes,
            "data.filter_ckpt",
            str(self.filter_ckpt),
            f"its {probs.shape[1]} classes differ from the real data's {self.num_classes}",
        )
        asked = probs.gather(1, labels[:, None]).squeeze(1)
        return (probs.argmax(dim=1) == labels) & (asked >= self.min_confidence)

    def _draw(self, labels: Tensor, rng: torch.Generator) -> Tensor:
        """One sample per label; with a filter, rejected positions are drawn again (new z) until all pass."""
        images = torch.empty(len(labels), *self.img_shape)
        pending = torch.arange(len(labels))  # positions still to fill
        drawn = 0
        while len(pending):
            if drawn >= self.max_draws * len(labels):
                short = torch.bincount(labels[pending], minlength=self.num_classes)
                worst = int(short.argmax())
                fix = (
                    "lower data.min_confidence or train the generator longer"
                    if self.min_confidence > 0
                    else "train the generator longer, or check that the filter classifier knows these classes"
                )
                raise ValueError(
                    f"data.filter_ckpt={str(self.filter_ckpt)!r} rejects too many samples: after drawing "
                    f"{drawn} for {len(labels)} places (data.max_draws={self.max_draws}, "
                    f"data.min_confidence={self.min_confidence}), {len(pending)} still fail, "
                    f"{int(short[worst])} of them of class {self.class_names[worst]!r}: {fix}"
                )
            batch = self._sample(labels[pending], rng)
            drawn += len(pending)
            ok = self._accepted(batch, labels[pending])
            images[pending[ok]] = batch[ok]
            pending = pending[~ok]
        self.acceptance = len(labels) / drawn if drawn else 1.0
        if self.filter_ckpt is not None:
            rank_zero_info(f"[MixedDataModule] the filter kept {100 * self.acceptance:.1f}% of drawn samples")
        return images

    # ------------------------------------------------------------------ loaders
    def setup(self, stage: str) -> None:
        if self.resample and stage == "fit" and self.trainer is not None:  # only fit reads training data
            every = self.trainer.reload_dataloaders_every_n_epochs
            require(every == 1, "data.resample", True, "needs --trainer.reload_dataloaders_every_n_epochs 1")

    def train_dataloader(self) -> DataLoader | AlternatingLoader:
        epoch = self.trainer.current_epoch if self.resample and self.trainer is not None else 0
        generated, real = self.generated_dataset(epoch), self.real.train_dataset
        rng = seeded_generator(self.seed * 7919 + epoch)
        # generated samples are float, real ones as stored (uint8 pixels): collate_images forms both batches
        loading = {"collate_fn": collate_images, "num_workers": self.real.num_workers}
        if self.pattern is None:
            return DataLoader(
                ConcatDataset([generated, real]), self.batch_size, shuffle=True, generator=rng, **loading
            )
        return AlternatingLoader(
            DataLoader(generated, self.batch_size, shuffle=True, generator=rng, **loading),
            DataLoader(real, self.batch_size, shuffle=True, generator=rng, **loading),
            self.pattern,
        )

    def val_dataloader(self) -> DataLoader:
        return self.real.val_dataloader()

    def test_dataloader(self) -> DataLoader:
        return self.real.test_dataloader()
