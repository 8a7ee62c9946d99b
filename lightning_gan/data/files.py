"""Data modules for the user's own images: a folder per class, or one array file."""

from pathlib import Path
from typing import Any

import numpy as np
import torch
from einops import rearrange
from PIL import Image
from torch import Tensor

from lightning_gan.data.base import GANDataModule

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp")
_GREY_MODES = ("1", "L", "LA")


def _visible(path: Path) -> bool:
    # skip .DS_Store, .ipynb_checkpoints and the like that tools leave in data folders
    return not path.name.startswith(".")


class ImageFolderDataModule(GANDataModule):
    """Images in ``root/<class name>/<image>``; classes are the sub-folders in sorted order.

    Args:
        root: Folder with one sub-folder of images per class.
        channels: 1 (greyscale) or 3 (RGB); None picks 1 if every image is greyscale, else 3.
        **kwargs: :class:`GANDataModule` arguments. Without ``image_size`` all images must share one size;
            with it, each is resized by PIL to ``image_size x image_size``.
    """

    def __init__(self, root: str, channels: int | None = None, **kwargs: Any) -> None:
        if channels not in (None, 1, 3):
            raise ValueError(f"data.channels={channels!r} is not allowed: must be 1, 3 or None")
        self.root = root
        self.channels = channels
        super().__init__(**kwargs)

    def _image_files(self) -> tuple[list[str], list[list[Path]]]:
        root = Path(self.root)
        expected = "a folder with one sub-folder of images per class (root/<class>/<image>.png)"
        if not root.exists():
            raise FileNotFoundError(f"data.root={self.root!r} does not exist: expected {expected}")
        if not root.is_dir():
            raise ValueError(f"data.root={self.root!r} is not a directory: expected {expected}")
        class_dirs = sorted(path for path in root.iterdir() if path.is_dir() and _visible(path))
        if not class_dirs:
            raise ValueError(f"data.root={self.root!r} has no class sub-folders: expected {expected}")
        files = []
        for class_dir in class_dirs:
            images = sorted(
                path
                for path in class_dir.iterdir()
                if path.is_file() and _visible(path) and path.suffix.lower() in IMAGE_SUFFIXES
            )
            if not images:
                raise ValueError(
                    f"class folder {class_dir} has no images: expected files ending in {IMAGE_SUFFIXES}"
                )
            files.append(images)
        return [class_dir.name for class_dir in class_dirs], files

    def load_data(self) -> tuple[Tensor, Tensor, list[str]]:
        class_names, files = self._image_files()
        paths = [path for class_files in files for path in class_files]
        images = []
        for path in paths:
            try:
                with Image.open(path) as image:
                    image.load()
                    images.append(image)
            except OSError as error:  # also UnidentifiedImageError and truncated files
                raise ValueError(f"cannot read image {path}: {error}") from error
        channels = self.channels or (1 if all(image.mode in _GREY_MODES for image in images) else 3)
        if self.image_size is None:
            first = images[0]
            for path, image in zip(paths, images, strict=True):
                if image.size != first.size:
                    raise ValueError(
                        f"images differ in size: {paths[0]} is {first.width}x{first.height} but {path} is "
                        f"{image.width}x{image.height}; set data.image_size to resize them all"
                    )
        images = [image.convert("L" if channels == 1 else "RGB") for image in images]
        if self.image_size is not None:
            # convert first: PIL resizes palette images with nearest neighbour only
            size = (self.image_size, self.image_size)
            images = [image.resize(size, Image.Resampling.BILINEAR) for image in images]
        pixels = np.stack(
            [np.asarray(image).reshape(image.height, image.width, channels) for image in images]
        )
        labels = [label for label, class_files in enumerate(files) for _ in class_files]
        return (
            torch.from_numpy(rearrange(pixels, "n h w c -> n c h w")).float() / 127.5 - 1,
            torch.tensor(labels, dtype=torch.int64),
            class_names,
        )


class ArrayDataModule(GANDataModule):
    """Images (and optional labels) from a ``.npz`` or ``.pt`` file.

    The file holds ``images``: (N, C, H, W) with C in {1, 3}, or (N, H, W) for greyscale; uint8 0..255 or
    float already in [-1, 1]. Optional ``labels``: integers 0..K-1 of shape (N,).

    Args:
        path: The ``.npz`` (read with ``allow_pickle=False``) or ``.pt`` (``weights_only=True``) file.
        **kwargs: :class:`GANDataModule` arguments.
    """

    def __init__(self, path: str, **kwargs: Any) -> None:
        self.path = path
        super().__init__(**kwargs)

    def _read(self) -> dict[str, Tensor]:
        path = Path(self.path)
        if not path.is_file():
            raise FileNotFoundError(f"data.path={self.path!r} does not exist: expected a .npz or .pt file")
        if path.suffix.lower() == ".npz":
            with np.load(path, allow_pickle=False) as arrays:
                return {key: torch.from_numpy(arrays[key]) for key in arrays.files}
        if path.suffix.lower() == ".pt":
            content = torch.load(path, map_location="cpu", weights_only=True)
            if not isinstance(content, dict):
                raise ValueError(f"{path} holds a {type(content).__name__}: expected a dict with 'images'")
            return {key: torch.as_tensor(value) for key, value in content.items()}
        raise ValueError(f"data.path={self.path!r} has suffix {path.suffix!r}: expected .npz or .pt")

    def load_data(self) -> tuple[Tensor, Tensor, list[str]]:
        arrays, path = self._read(), self.path
        if "images" not in arrays:
            raise ValueError(f"{path} has no 'images' key: found {sorted(arrays)}")
        images = arrays["images"]
        if images.ndim == 3:
            images = images[:, None]  # (N, H, W) -> (N, 1, H, W)
        if images.ndim != 4 or images.shape[1] not in (1, 3) or len(images) == 0:
            raise ValueError(
                f"{path}: 'images' has shape {tuple(arrays['images'].shape)}: expected (N, C, H, W) with C 1 "
                "or 3, or (N, H, W), with N >= 1 (move the channel axis of channels-last arrays to 1)"
            )
        if images.dtype == torch.uint8:
            images = images.float() / 127.5 - 1
        elif images.is_floating_point():
            low, high = images.min().item(), images.max().item()
            if low < -1 or high > 1:
                raise ValueError(
                    f"{path}: float 'images' lie in [{low:.4g}, {high:.4g}] but must lie in [-1, 1]: "
                    "scale them first (for 0..255 pixels: x / 127.5 - 1) or store uint8"
                )
            images = images.float()
        else:
            raise ValueError(f"{path}: 'images' has dtype {images.dtype}: expected uint8 or float in [-1, 1]")
        if "labels" not in arrays:
            return images, torch.full((len(images),), -1, dtype=torch.int64), []
        labels = self._labels(arrays["labels"], len(images))
        return images, labels, [str(label) for label in range(int(labels.max()) + 1)]

    def _labels(self, labels: Tensor, num_images: int) -> Tensor:
        path = self.path
        if (
            labels.is_floating_point()
            or labels.is_complex()
            or labels.dtype == torch.bool
            or labels.ndim != 1
        ):
            raise ValueError(
                f"{path}: 'labels' has shape {tuple(labels.shape)} and dtype {labels.dtype}: "
                f"expected integers of shape ({num_images},)"
            )
        if len(labels) != num_images:
            raise ValueError(f"{path}: 'labels' has {len(labels)} entries but 'images' has {num_images}")
        if labels.min() < 0:
            raise ValueError(
                f"{path}: 'labels' has negative values (min {labels.min().item()}): expected 0..K-1"
            )
        return labels.long()
