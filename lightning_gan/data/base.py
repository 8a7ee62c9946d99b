"""The data module every lightning-gan dataset builds on: split, loaders and mid-epoch resume."""

import warnings
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch import LightningDataModule
from torch import Tensor
from torch.utils.data import DataLoader, Subset

from lightning_gan.data.sampler import ResumableSampler, SamplerState, StepLoader, seeded_generator
from lightning_gan.data.samples import (
    CROP_MODES,
    PreparedSamples,
    Samples,
    SplitDataset,
    TensorSamples,
    collate_images,
)
from lightning_gan.validation import is_int, require, require_int

SPLITS = ("train", "val", "test")


def _check_fraction(key: str, value: object) -> None:
    if not isinstance(value, int | float) or isinstance(value, bool) or not 0 <= value < 1:
        raise ValueError(f"{key}={value!r} is not allowed: must be a number with 0 <= {key} < 1")


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


class GANDataModule(LightningDataModule):
    """Indexes a data set at construction, splits it by seed, and serves GAN-step batches.

    Subclasses implement :meth:`load_samples` (samples read one at a time, in DataLoader workers) or
    :meth:`load_data` (everything as tensors, for small sets). Indexing happens in ``__init__`` so that
    ``img_shape``, ``num_classes`` and ``class_names`` exist as soon as the module does (the CLI links them
    into the model); pixels are read, cropped, resized and augmented per item, and stay as stored (uint8)
    until the batch is formed. ``train_dataloader`` yields one item per training step: a list of
    ``model.batches_per_step`` batches, or plain batches if the model has no such attribute.

    Args:
        batch_size: Images per batch.
        num_workers: DataLoader worker processes.
        seed: Seeds the split, the training order and the augmentations.
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
        crop: Crop every image to ``crop x crop``: with ``crop_mode="center"`` the centre of the image as
            stored, before resizing (CelebA: ``crop=178, image_size=64``); with ``"random"`` a random window
            of the resized training image (``image_size=72, crop=64``; validation and test take the centre).
        crop_mode: "center" or "random".
        hflip: Mirror training images left-right at random (p = 1/2). Off by default; never for signals.
        cache: Decode every sample once (after centre crop and resize) and keep it in memory, uint8 for
            pixels: for sets that fit, today's speed. None: only data that is in memory already (the digits,
            ``.npz``/``.pt`` arrays); image folders and ``.npy`` files are read per item.
    """

    #: At most this many images of a split are held in memory by :meth:`real_images` (a seeded choice).
    REAL_IMAGES_LIMIT = 10_000

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
        crop: int | None = None,
        crop_mode: str = "center",
        hflip: bool = False,
        cache: bool | None = None,
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
        require(crop is None or (is_int(crop) and crop >= 1), "data.crop", crop, "must be an integer >= 1")
        require(crop_mode in CROP_MODES, "data.crop_mode", crop_mode, f"must be one of {CROP_MODES}")
        require(isinstance(hflip, bool), "data.hflip", hflip, "must be true or false")
        require(cache is None or isinstance(cache, bool), "data.cache", cache, "must be true, false or None")
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.seed = seed
        self.val_fraction = val_fraction
        self.test_fraction = test_fraction
        self.image_size = image_size
        self.num_labelled = num_labelled
        self.train_per_class = train_per_class
        self.judge = judge
        self.crop, self.crop_mode, self.hflip, self.cache = crop, crop_mode, hflip, cache

        samples = self.load_samples()
        labels, class_names = samples.labels, samples.class_names
        self.class_names: list[str] = class_names
        self.num_classes: int = len(class_names)
        random_crop = crop is not None and crop_mode == "random"
        centre, size = (None if random_crop else crop), image_size
        if cache or (cache is None and isinstance(samples, TensorSamples) and samples.in_memory):
            samples = PreparedSamples(samples, centre, size)
            centre, size = None, None  # applied once, here
        self.samples = samples
        self.img_shape: tuple[int, int, int] = self._shape(samples, centre, size)
        train, val, test = self.split_samples(labels)
        if train_per_class is not None:
            require_int("data.train_per_class", train_per_class, 1)
            # the same even per-class choice as num_labelled, from its own stream (seed + 1)
            kept = _hide_labels(labels[train], train_per_class * len(class_names), seed + 1) >= 0
            train = train[kept]
        settings = {"centre_crop": centre, "size": size, "crop": crop if random_crop else None}
        self.train_dataset = SplitDataset(
            samples,
            train,
            _hide_labels(labels[train], num_labelled, seed),
            **settings,
            random_crop=random_crop,
            hflip=hflip,
            seed=seed,
        )
        self.val_dataset = SplitDataset(samples, val, labels[val], **settings)
        self.test_dataset = SplitDataset(samples, test, labels[test], **settings)
        if batch_size > len(self.train_dataset):
            raise ValueError(
                f"data.batch_size={batch_size} is larger than the {len(self.train_dataset)} training samples"
            )
        self._hashes: dict[str, Tensor] = {}
        self._real: dict[tuple[str, int], Tensor] = {}
        self._sampler: ResumableSampler | None = None
        self._resume_state: SamplerState | None = None

    def _shape(self, samples: Samples, centre: int | None, size: int | None) -> tuple[int, int, int]:
        channels, height, width = samples.native_shape
        if centre is not None:
            require(centre <= min(height, width), "data.crop", centre,
                    f"must fit in the images, which are {width}x{height}")  # fmt: skip
            height = width = centre
        if size is not None:
            height = width = size
        if self.crop is not None and self.crop_mode == "random":
            require(self.crop <= min(height, width), "data.crop", self.crop,
                    f"must fit in the resized images, which are {width}x{height}")  # fmt: skip
            height = width = self.crop
        return channels, height, width

    def split_samples(self, labels: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Train, validation and test indices: each class split by ``seed`` in the fractions' proportions."""
        return _split_indices(labels, self.val_fraction, self.test_fraction, self.seed)

    def load_samples(self) -> Samples:
        """The data set, indexed: labels and class names known, pixels read per item. By default, the
        tensors of :meth:`load_data`, in memory."""
        images, labels, class_names = self.load_data()
        return TensorSamples(images, labels, class_names)

    def load_data(self) -> tuple[Tensor, Tensor, list[str]]:
        """All images (N, C, H, W), uint8 or float32 in [-1, 1], labels (N,) int64 and the class names.

        Unlabelled data has labels all -1 and no class names. Implement this or :meth:`load_samples`.
        """
        raise NotImplementedError(f"{type(self).__name__} implements neither load_samples nor load_data")

    def _dataset(self, split: str) -> SplitDataset:
        if split not in SPLITS:
            raise ValueError(f"split={split!r} is not allowed: must be one of {SPLITS}")
        return getattr(self, f"{split}_dataset")

    def split_labels(self, split: str) -> Tensor:
        """The labels of ``split``'s samples (N,) int64, -1 where hidden; no pixels are read."""
        return self._dataset(split).labels

    def real_images(self, split: str = "val", limit: int | None = None) -> Tensor:
        """Images of ``split`` ("train", "val" or "test"), (N, C, H, W) float32 in [-1, 1], unaugmented.

        At most ``limit`` of them (default :attr:`REAL_IMAGES_LIMIT`; a seeded choice from a larger split),
        read once through the DataLoader's workers and then kept in memory: this is the one place where a
        split is held whole, so it is bounded.
        """
        dataset = self._dataset(split)
        limit = self.REAL_IMAGES_LIMIT if limit is None else limit
        require_int("limit", limit, 1)
        if (split, limit) not in self._real:
            chosen = torch.arange(len(dataset))
            if len(dataset) > limit:
                order = torch.randperm(len(dataset), generator=seeded_generator(self.seed + 2))
                chosen = order[:limit].sort().values
            loader = self._eval_loader(Subset(dataset.unaugmented(), chosen.tolist()), own=True)
            batches = [images for images, _ in loader]
            self._real[(split, limit)] = torch.cat(batches) if batches else torch.empty(0, *self.img_shape)
        return self._real[(split, limit)]

    def split_hashes(self, split: str) -> Tensor:
        """:func:`~lightning_gan.data.provenance.sample_hashes`-like identities of ``split``'s samples,
        computed on first use (for files, from their names, without reading pixels)."""
        if split not in self._hashes:
            self._hashes[split] = self._dataset(split).keys()
        return self._hashes[split]

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
        sampler = ResumableSampler(
            len(self.train_dataset), seed=self.seed, num_replicas=replicas, rank=rank, tag_epoch=True
        )
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
                collate_fn=collate_images,
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

    def _eval_loader(self, dataset: SplitDataset | Subset, own: bool = False) -> DataLoader:
        """A loader in dataset order; ``own``: one that this module iterates itself (not Lightning), with a
        generator of its own so that it never draws from torch's global one (training's random stream)."""
        in_memory = isinstance(self.samples, PreparedSamples)
        workers = 0 if own and in_memory else self.num_workers  # no processes to start for an in-memory read
        return DataLoader(
            dataset,
            batch_size=self.batch_size,
            shuffle=False,
            collate_fn=collate_images,
            num_workers=workers,
            persistent_workers=not own and workers > 0,
            generator=seeded_generator(self.seed) if own else None,
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
