"""The data module every lightning-gan dataset builds on: split, loaders and mid-epoch resume."""

import warnings
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from lightning.pytorch import LightningDataModule
from torch import Tensor
from torch.utils.data import DataLoader, TensorDataset

from lightning_gan.data.provenance import sample_hashes
from lightning_gan.data.sampler import ResumableSampler, SamplerState, StepLoader, seeded_generator
from lightning_gan.validation import require, require_int

SPLITS = ("train", "val", "test")


def _check_fraction(key: str, value: object) -> None:
    if not isinstance(value, int | float) or isinstance(value, bool) or not 0 <= value < 1:
        raise ValueError(f"{key}={value!r} is not allowed: must be a number with 0 <= {key} < 1")


def _resize(images: Tensor, size: int) -> Tensor:
    """(N, C, H, W) in [-1, 1] -> (N, C, size, size), antialiased where it shrinks."""
    if images.shape[-2:] == (size, size):
        return images
    shrinks = size < max(images.shape[-2:])
    resized = F.interpolate(
        images, size=(size, size), mode="bilinear", antialias=shrinks, align_corners=False
    )
    return resized.clamp_(-1, 1)  # the filters are convex, so this only removes float rounding


def _split_indices(
    labels: Tensor, val_fraction: float, test_fraction: float, seed: int
) -> tuple[Tensor, Tensor, Tensor]:
    """Train, val and test indices; each label (-1 for unlabelled) is split in the same proportions."""
    generator = seeded_generator(seed)
    parts: tuple[list[Tensor], list[Tensor], list[Tensor]] = ([], [], [])
    for label in labels.unique():  # sorted, so the generator is drawn in the same order every time
        members = torch.nonzero(labels == label).flatten()
        members = members[torch.randperm(len(members), generator=generator)]
        n_val, n_test = round(len(members) * val_fraction), round(len(members) * test_fraction)
        parts[1].append(members[:n_val])
        parts[2].append(members[n_val : n_val + n_test])
        parts[0].append(members[n_val + n_test :])
    train, val, test = (torch.cat(part).sort().values for part in parts)
    return train, val, test


def _hide_labels(labels: Tensor, num_labelled: int | None, seed: int) -> Tensor:
    """Keeps ``num_labelled`` labels, split evenly over the classes (the first classes get the remainder),
    and sets the rest to -1; the choice depends on ``seed`` only."""
    if num_labelled is None:
        return labels
    classes = labels[labels >= 0].unique()
    require_int("data.num_labelled", num_labelled, len(classes))
    generator = seeded_generator(seed + 1)  # not the split's stream: the same split for any num_labelled
    hidden = torch.full_like(labels, -1)
    for i, label in enumerate(classes):
        members = torch.nonzero(labels == label).flatten()
        keep = num_labelled // len(classes) + (i < num_labelled % len(classes))
        require(
            keep <= len(members), "data.num_labelled", num_labelled, f"class {int(label)} has {len(members)}"
        )
        chosen = members[torch.randperm(len(members), generator=generator)[:keep]]
        hidden[chosen] = label
    return hidden


class GANDataModule(LightningDataModule, ABC):
    """Loads an image set at construction, splits it by seed, and serves GAN-step batches.

    Subclasses implement :meth:`load_data`. Loading happens in ``__init__`` so that ``img_shape``,
    ``num_classes`` and ``class_names`` exist as soon as the module does (the CLI links them into the
    model). ``train_dataloader`` yields one item per training step: a list of
    ``model.batches_per_step`` batches, or plain batches if the model has no such attribute.

    Args:
        batch_size: Images per batch.
        num_workers: DataLoader worker processes.
        seed: Seeds the split and the training order.
        val_fraction: Share of each class held out for validation (metrics).
        test_fraction: Share of each class held out for testing; never used for training.
        image_size: Resize to ``image_size x image_size``; None keeps the native size.
        num_labelled: Keep only this many training labels (the same number per class, chosen by ``seed``)
            and hide the others as -1, for semi-supervised training; None keeps all. Validation and test
            labels are never hidden.
        train_per_class: Keep only this many training images of each class (chosen by ``seed``) and drop
            the rest: a small labelled set, as in the augmentation experiment. Validation and test are
            unchanged.
        judge: Checkpoint of a classifier of these data (``lightning-gan fit --config
            configs/classifier_digits.yaml --data ...``): what ``GANMetrics`` scores samples with when it is
            given no judge of its own. Needed for metrics on any data but the bundled digits.
    """

    def __init__(
        self,
        batch_size: int = 128,
        num_workers: int = 0,
        seed: int = 0,
        val_fraction: float = 0.1,
        test_fraction: float = 0.1,
        image_size: int | None = None,
        num_labelled: int | None = None,
        train_per_class: int | None = None,
        judge: str | None = None,
    ) -> None:
        super().__init__()
        require_int("data.batch_size", batch_size, 1)
        if judge is not None and not Path(judge).is_file():
            raise FileNotFoundError(f"data.judge={judge!r}: no such checkpoint file")
        require_int("data.num_workers", num_workers, 0)
        if not isinstance(seed, int) or isinstance(seed, bool):
            raise ValueError(f"data.seed={seed!r} is not allowed: must be an integer")
        _check_fraction("data.val_fraction", val_fraction)
        _check_fraction("data.test_fraction", test_fraction)
        if val_fraction + test_fraction >= 1:
            raise ValueError(
                f"data.val_fraction={val_fraction} and data.test_fraction={test_fraction} are not allowed: "
                "their sum must be < 1 to leave training samples"
            )
        if image_size is not None and (not isinstance(image_size, int) or image_size < 8):
            raise ValueError(
                f"data.image_size={image_size!r} is not allowed: must be an integer >= 8 or None"
            )
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.seed = seed
        self.val_fraction = val_fraction
        self.test_fraction = test_fraction
        self.image_size = image_size
        self.num_labelled = num_labelled
        self.train_per_class = train_per_class
        self.judge = judge

        images, labels, class_names = self.load_data()
        hashes = sample_hashes(images)  # before resizing: the same samples hash alike at any image_size
        if image_size is not None:
            images = _resize(images, image_size)
        self.class_names: list[str] = class_names
        self.num_classes: int = len(class_names)
        self.img_shape: tuple[int, int, int] = (images.shape[1], images.shape[2], images.shape[3])
        train, val, test = _split_indices(labels, val_fraction, test_fraction, seed)
        if train_per_class is not None:
            require_int("data.train_per_class", train_per_class, 1)
            # the same even per-class choice as num_labelled, from its own stream (seed + 1)
            kept = _hide_labels(labels[train], train_per_class * len(class_names), seed + 1) >= 0
            train = train[kept]
        self._split_hashes = {"train": hashes[train], "val": hashes[val], "test": hashes[test]}
        self.train_dataset = TensorDataset(images[train], _hide_labels(labels[train], num_labelled, seed))
        self.val_dataset = TensorDataset(images[val], labels[val])
        self.test_dataset = TensorDataset(images[test], labels[test])
        if batch_size > len(self.train_dataset):
            raise ValueError(
                f"data.batch_size={batch_size} is larger than the {len(self.train_dataset)} training samples"
            )
        self._sampler: ResumableSampler | None = None
        self._resume_state: SamplerState | None = None

    @abstractmethod
    def load_data(self) -> tuple[Tensor, Tensor, list[str]]:
        """Returns all images (N, C, H, W) float32 in [-1, 1], labels (N,) int64 and the class names.

        Unlabelled data has labels all -1 and no class names.
        """

    def real_images(self, split: str = "val") -> Tensor:
        """All images of ``split`` ("train", "val" or "test"), (N, C, H, W) in [-1, 1]; shared, not copied."""
        if split not in SPLITS:
            raise ValueError(f"split={split!r} is not allowed: must be one of {SPLITS}")
        return getattr(self, f"{split}_dataset").tensors[0]

    def split_hashes(self, split: str) -> Tensor:
        """:func:`sample_hashes` of ``split``'s samples ("train", "val" or "test")."""
        return self._split_hashes[split]

    def groups(self, split: str) -> list[int] | None:
        """The people (or other groups whose samples resemble each other) in ``split``; None where samples are
        independent. A GAN that trained on a person's samples must not feed a classifier tested on them."""
        return None

    def training_record(self) -> dict[str, Any]:
        """What a GAN checkpoint records of the data it trained on (see :func:`check_no_leak`)."""
        return {"data": type(self).__name__, "train_hashes": self.split_hashes("train"),
                "groups": self.groups("train")}  # fmt: skip

    def _batches_per_step(self) -> int | None:
        if self.trainer is None:
            return None
        return getattr(self.trainer.lightning_module, "batches_per_step", None)

    def train_dataloader(self) -> StepLoader:
        """Shuffled, ``drop_last`` batches grouped per training step; resumes where a checkpoint stopped."""
        replicas, rank = (
            (1, 0) if self.trainer is None else (self.trainer.world_size, self.trainer.global_rank)
        )
        sampler = ResumableSampler(len(self.train_dataset), seed=self.seed, num_replicas=replicas, rank=rank)
        if self._resume_state is not None:
            sampler.load_state_dict(self._resume_state)
            self._resume_state = None  # applied once: a later reload starts its epoch normally
        batches_per_step = self._batches_per_step()
        loader = StepLoader(
            DataLoader(
                self.train_dataset,
                batch_size=self.batch_size,
                sampler=sampler,
                drop_last=True,
                num_workers=self.num_workers,
                persistent_workers=self.num_workers > 0,
            ),
            batches_per_step=batches_per_step,
        )
        if len(loader) == 0:
            raise ValueError(
                f"data.batch_size={self.batch_size} gives {len(loader.loader)} batches per epoch on each of "
                f"{replicas} device(s), fewer than the {batches_per_step} batches one training step consumes"
            )
        self._sampler = sampler
        return loader

    def _eval_loader(self, dataset: TensorDataset) -> DataLoader:
        return DataLoader(
            dataset,
            batch_size=self.batch_size,
            shuffle=False,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
        )

    def val_dataloader(self) -> DataLoader:
        return self._eval_loader(self.val_dataset)

    def test_dataloader(self) -> DataLoader:
        return self._eval_loader(self.test_dataset)

    def state_dict(self) -> dict[str, Any]:
        """Where training stands in the epoch, for a mid-epoch resume.

        With a trainer, ``consumed`` comes from the fit loop's processed batches: the sampler's own count runs
        ahead of training, because DataLoader workers prefetch.
        """
        fit_loop = getattr(self.trainer, "fit_loop", None)
        if fit_loop is not None:
            processed = fit_loop.epoch_loop.batch_progress.current.processed
            consumed = processed * (self._batches_per_step() or 1) * self.batch_size
            state = {"epoch": self.trainer.current_epoch, "seed": self.seed, "consumed": consumed}
        elif self._sampler is not None:
            state = dict(self._sampler.state_dict())
        else:
            return {}
        return {**state, "batch_size": self.batch_size}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Keeps the state for the sampler that the next ``train_dataloader()`` call builds."""
        differ = [
            f"data.{key}={state_dict[key]} there, {getattr(self, key)} now"
            for key in ("seed", "batch_size")
            if state_dict[key] != getattr(self, key)
        ]
        if differ:
            raise ValueError(
                "The data settings differ from the checkpoint's, so a resumed epoch would repeat or skip "
                f"samples: {'; '.join(differ)}. Use the checkpoint's values."
            )
        self._resume_state = SamplerState(
            epoch=state_dict["epoch"], seed=state_dict["seed"], consumed=state_dict["consumed"]
        )
        # Lightning warns that a mid-epoch resume is unreliable unless the DataLoader itself is stateful; here
        # the data module carries the position, so the warning that follows this call would be wrong.
        warnings.filterwarnings(
            "ignore", message="You're resuming from a checkpoint that ended before the epoch"
        )
