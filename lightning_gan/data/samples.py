"""What a data module serves: samples indexed at construction and read one at a time, in DataLoader workers.

A :class:`Samples` knows every sample's label and identity (:meth:`Samples.keys`) without reading pixels;
:meth:`Samples.prepare` reads one sample, centre-crops and resizes it. A :class:`SplitDataset` is one split
of it, with the training augmentations (random crop, horizontal flip). Items stay as stored (uint8 for
pixels) until :func:`collate_images` forms the batch and scales it to float32 in [-1, 1].
"""

from __future__ import annotations

import hashlib
import math
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import Dataset, get_worker_info
from tqdm.auto import tqdm

from lightning_gan.data.provenance import sample_hashes
from lightning_gan.data.sampler import seeded_generator

#: How the crop window is placed: "center" before resizing, "random" after it (training images only).
CROP_MODES = ("center", "random")


def to_float(images: Tensor) -> Tensor:
    """uint8 pixels 0..255 -> float32 in [-1, 1]; float images pass through as float32."""
    return images.float() / 127.5 - 1 if images.dtype == torch.uint8 else images.float()


def _batch(shape: tuple[int, ...]) -> Tensor:
    """An empty float32 tensor of ``shape``; in a DataLoader worker, in shared memory, as ``default_collate``
    makes its batches: the batch then travels to the main process without a copy, and the worker does not
    allocate (and keep, in its heap) a new batch-sized buffer for each batch."""
    if get_worker_info() is None:
        return torch.empty(shape)
    storage = torch.empty(0)._typed_storage()._new_shared(math.prod(shape), device="cpu")
    return torch.empty(0).new(storage).resize_(shape)


def collate_images(items: Sequence[tuple[Tensor, int]]) -> tuple[Tensor, Tensor]:
    """Stacks (image, label) items into (images (B, C, H, W) float32 in [-1, 1], labels (B,) int64).

    uint8 images travel as uint8 until here, and are scaled in the batch: ``x / 127.5 - 1``.
    """
    shape = tuple(items[0][0].shape)
    batch = _batch((len(items), *shape))
    pixels = [image.dtype == torch.uint8 for image, _ in items]
    for row, (image, _) in zip(batch, items, strict=True):
        if tuple(image.shape) != shape:
            raise ValueError(f"a batch mixes images of shapes {shape} and {tuple(image.shape)}")
        row.copy_(image)  # uint8 to float32 exactly
    if all(pixels):
        batch.div_(127.5).sub_(1)
    else:
        for row, scale in zip(batch, pixels, strict=True):
            if scale:
                row.div_(127.5).sub_(1)
    return batch, torch.tensor([int(label) for _, label in items], dtype=torch.int64)


def resize(images: Tensor, size: int) -> Tensor:
    """(..., C, H, W) -> (..., C, size, size), bilinear, antialiased where it shrinks; uint8 stays uint8."""
    if images.shape[-2:] == (size, size):
        return images
    batch = to_float(images.reshape(-1, *images.shape[-3:]))
    shrinks = size < max(images.shape[-2:])
    resized = F.interpolate(batch, size=(size, size), mode="bilinear", antialias=shrinks, align_corners=False)
    resized = resized.clamp_(-1, 1).reshape(*images.shape[:-2], size, size)  # only float rounding is cut
    if images.dtype == torch.uint8:
        return ((resized + 1) * 127.5).round_().to(torch.uint8)
    return resized


def centre_window(height: int, width: int, crop: int) -> tuple[int, int]:
    """Top and left of the centred ``crop x crop`` window of a ``height x width`` image."""
    return (height - crop) // 2, (width - crop) // 2


def crop_and_resize(image: Tensor, crop: int | None, size: int | None, where: Callable[[], str]) -> Tensor:
    """(C, H, W) centre-cropped to ``crop x crop`` (None: whole), then resized to ``size`` (None: kept);
    ``where()`` names the image in the error for a crop larger than it."""
    if crop is not None:
        height, width = image.shape[-2:]
        if crop > min(height, width):
            raise ValueError(f"data.crop={crop} is larger than {where()}, which is {width}x{height}")
        top, left = centre_window(height, width, crop)
        image = image[..., top : top + crop, left : left + crop]
    return image if size is None else resize(image, size)


class Samples(ABC):
    """Samples indexed at construction: labels, class names and identities known, pixels read on demand.

    Attributes:
        labels: (N,) int64, -1 where unlabelled.
        class_names: One name per class; empty for unlabelled data.
    """

    labels: Tensor
    class_names: list[str]

    def __len__(self) -> int:
        return len(self.labels)

    @property
    @abstractmethod
    def native_shape(self) -> tuple[int, int, int]:
        """(C, H, W) of the first sample as stored."""

    @abstractmethod
    def read(self, index: int) -> Tensor:
        """Sample ``index`` as stored: (C, H, W) uint8, or float32 in [-1, 1]."""

    @abstractmethod
    def keys(self, indices: Tensor) -> Tensor:
        """(len(indices),) int64 identities of those samples, comparable between data modules that read the
        same data with other split settings (see :func:`~lightning_gan.data.provenance.check_no_leak`)."""

    def describe(self, index: int) -> str:
        """Where sample ``index`` comes from, for error messages."""
        return f"sample {index}"

    def prepare(self, index: int, crop: int | None, size: int | None) -> Tensor:
        """Sample ``index`` centre-cropped to ``crop x crop`` (None: whole), then resized to ``size``."""
        return crop_and_resize(self.read(index), crop, size, lambda: self.describe(index))

    def prepare_all(self, crop: int | None, size: int | None) -> Tensor:
        """Every sample prepared, stacked: (N, C, H, W), with a progress bar."""
        items = (self.prepare(i, crop, size) for i in range(len(self)))
        return torch.stack(list(tqdm(items, total=len(self), desc="decoding images into memory", unit="img")))


class TensorSamples(Samples):
    """Samples held in one tensor or array (N, C, H, W): in memory, or memory-mapped from a ``.npy``.

    Args:
        images: uint8 pixels, or float in [-1, 1]; a read-only ``np.memmap`` is read row by row.
        labels: (N,) int64.
        class_names: One per class.
        name: The file the images come from, for error messages.
    """

    def __init__(
        self, images: Tensor | np.ndarray, labels: Tensor, class_names: list[str], name: str = "images"
    ) -> None:
        self.images, self.labels, self.class_names, self.name = images, labels, class_names, name

    @property
    def native_shape(self) -> tuple[int, int, int]:
        return tuple(self.images.shape[1:])

    @property
    def in_memory(self) -> bool:
        """Held as a tensor (not memory-mapped)."""
        return isinstance(self.images, Tensor)

    def describe(self, index: int) -> str:
        return f"{self.name}[{index}]"

    def read(self, index: int) -> Tensor:
        row = self.images[index]
        if isinstance(row, np.ndarray):
            row = torch.from_numpy(np.array(row))  # a copy: memory-mapped rows are read-only
            if row.is_floating_point() and not -1 <= row.min() <= row.max() <= 1:
                raise ValueError(
                    f"{self.describe(index)} lies in [{row.min():.4g}, {row.max():.4g}] but float images "
                    "must lie in [-1, 1]: scale them first (for 0..255 pixels: x / 127.5 - 1) or store uint8"
                )
        return row if row.dtype == torch.uint8 else row.float()

    def keys(self, indices: Tensor) -> Tensor:
        # content hashes of the float32 images in [-1, 1] (as lightning-gan always took them), 1,024 at a time
        chunks = [
            sample_hashes(torch.stack([to_float(self.read(int(i))) for i in part]))
            for part in indices.split(1024)
        ]
        return torch.cat(chunks) if chunks else torch.empty(0, dtype=torch.int64)

    def prepare_all(self, crop: int | None, size: int | None) -> Tensor:
        if crop is None and isinstance(self.images, Tensor):  # resized as one batch: today's speed
            return self.images if size is None else resize(self.images, size)
        return super().prepare_all(crop, size)


class PreparedSamples(Samples):
    """``samples`` prepared once and held in memory (``data.cache``); identities stay those of ``samples``."""

    def __init__(self, samples: Samples, crop: int | None, size: int | None) -> None:
        self.samples = samples
        self.labels, self.class_names = samples.labels, samples.class_names
        self.images = samples.prepare_all(crop, size)

    @property
    def native_shape(self) -> tuple[int, int, int]:
        return tuple(self.images.shape[1:])

    def describe(self, index: int) -> str:
        return self.samples.describe(index)

    def read(self, index: int) -> Tensor:
        return self.images[index]

    def prepare(self, index: int, crop: int | None, size: int | None) -> Tensor:
        return self.images[index]  # prepared already

    def keys(self, indices: Tensor) -> Tensor:
        return self.samples.keys(indices)


class SplitDataset(Dataset):
    """One split of ``samples``: items ``(image as stored, label)``, prepared and augmented.

    Training augmentations draw from a generator seeded by (``seed``, epoch, position) when the sampler yields
    ``(epoch, position)`` keys (:class:`~lightning_gan.data.sampler.ResumableSampler` with ``tag_epoch``):
    the same images at any ``num_workers`` and after a resume. Plain integer keys draw from torch's generator.

    Args:
        samples: What the split is drawn from.
        indices: (n,) the split's samples.
        labels: (n,) their labels (-1 where hidden).
        centre_crop: Centre crop of the image as stored, before resizing.
        size: Resize to ``size x size``.
        crop: Crop of the resized image: a random window if ``random_crop``, else the centre.
        random_crop: Place ``crop`` at random (training).
        hflip: Mirror each image left-right with probability 1/2 (training).
        seed: Seeds the augmentations.
    """

    def __init__(
        self,
        samples: Samples,
        indices: Tensor,
        labels: Tensor,
        *,
        centre_crop: int | None = None,
        size: int | None = None,
        crop: int | None = None,
        random_crop: bool = False,
        hflip: bool = False,
        seed: int = 0,
    ) -> None:
        self.samples, self.indices, self.labels = samples, indices, labels
        self.centre_crop, self.size, self.crop = centre_crop, size, crop
        self.random_crop, self.hflip, self.seed = random_crop, hflip, seed

    def __len__(self) -> int:
        return len(self.indices)

    def keys(self) -> Tensor:
        """:meth:`Samples.keys` of the split's samples."""
        return self.samples.keys(self.indices)

    def unaugmented(self) -> SplitDataset:
        """The same split with the crop centred and no flips: what evaluation sees."""
        settings = {"centre_crop": self.centre_crop, "size": self.size, "crop": self.crop}
        return SplitDataset(self.samples, self.indices, self.labels, **settings)

    def _generator(self, key: int | tuple[int, int]) -> torch.Generator | None:
        if not isinstance(key, tuple):
            return None
        epoch, position = key
        # torch's CPU generator keeps only a seed's low 32 bits: (seed, epoch, position) is hashed into them
        digest = hashlib.blake2b(f"{self.seed},{epoch},{position}".encode(), digest_size=4).digest()
        return seeded_generator(int.from_bytes(digest, "little"))

    def __getitem__(self, key: int | tuple[int, int]) -> tuple[Tensor, int]:
        position = key[1] if isinstance(key, tuple) else key
        image = self.samples.prepare(int(self.indices[position]), self.centre_crop, self.size)
        return self.augment(image, key), int(self.labels[position])

    def augment(self, image: Tensor, key: int | tuple[int, int]) -> Tensor:
        """The crop of the resized ``image`` (random in training) and the random flip, for item ``key``."""
        generator = self._generator(key) if self.random_crop or self.hflip else None
        if self.crop is not None:
            crop, (height, width) = self.crop, image.shape[-2:]
            if crop > min(height, width):
                raise ValueError(f"data.crop={crop} is larger than the resized images: {width}x{height}")
            if self.random_crop:
                draw = (int(torch.randint(n - crop + 1, (), generator=generator)) for n in (height, width))
                top, left = draw
            else:
                top, left = centre_window(height, width, crop)
            image = image[..., top : top + crop, left : left + crop]
        if self.hflip and torch.rand((), generator=generator) < 0.5:
            image = image.flip(-1)
        return image
