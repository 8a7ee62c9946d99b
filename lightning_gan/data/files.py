"""The data module for the user's own image files: a folder per class."""

import hashlib
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from lightning_gan.data.base import GANDataModule
from lightning_gan.data.samples import Samples, centre_window

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp")
_GREY_MODES = ("1", "L", "LA")
#: Images whose headers are read at construction: the channels and the shape, and a bad file found early.
HEADER_SAMPLE = 64


def _visible(path: Path | os.DirEntry) -> bool:
    # skip .DS_Store, .ipynb_checkpoints and the like that tools leave in data folders
    return not path.name.startswith(".")


def _open(path: Path) -> Image.Image:
    """The image at ``path``, header read (pixels not yet decoded); a ValueError naming it if unreadable."""
    try:
        return Image.open(path)
    except OSError as error:  # also UnidentifiedImageError
        raise ValueError(f"cannot read image {path}: {error}") from error


class ImageFiles(Samples):
    """Image files, decoded one at a time: ``prepare`` reads, converts, centre-crops and resizes with PIL.

    File names are kept as one numpy array of bytes, not a list of Python strings: DataLoader workers
    share it without copying (touching millions of Python objects' reference counts would copy their pages).

    Args:
        root: The folder the paths lie in.
        paths: Every image file.
        labels: (N,) int64.
        class_names: One per class.
        channels: 1 or 3; None decides from the headers of up to :data:`HEADER_SAMPLE` images.
        check_size: Whether every image must have the first one's size (no resizing).
    """

    def __init__(
        self,
        root: Path,
        paths: list[Path],
        labels: Tensor,
        class_names: list[str],
        channels: int | None,
        check_size: bool,
    ) -> None:
        self.root, self.labels, self.class_names = str(root), labels, class_names
        self.names = np.array([path.relative_to(root).as_posix().encode() for path in paths])
        spread = sorted(
            {round(i * (len(paths) - 1) / max(HEADER_SAMPLE - 1, 1)) for i in range(HEADER_SAMPLE)}
        )
        headers = {}
        for i in spread:
            with _open(paths[i]) as image:
                headers[i] = (image.mode, image.size)
        grey = all(mode in _GREY_MODES for mode, _ in headers.values())
        self.mode = "L" if (channels or (1 if grey else 3)) == 1 else "RGB"
        self.first_size = headers[0][1]
        self.check_size = check_size
        if check_size:
            for i, (_, size) in headers.items():
                self._check_size(i, size)

    def path(self, index: int) -> Path:
        return Path(self.root, self.names[index].decode())

    def describe(self, index: int) -> str:
        return str(self.path(index))

    def _check_size(self, index: int, size: tuple[int, int]) -> None:
        if size != self.first_size:
            (width, height), (first_w, first_h) = size, self.first_size
            raise ValueError(
                f"images differ in size: {self.path(0)} is {first_w}x{first_h} but {self.path(index)} is "
                f"{width}x{height}; set data.image_size to resize them all"
            )

    @property
    def native_shape(self) -> tuple[int, int, int]:
        width, height = self.first_size
        return (1 if self.mode == "L" else 3), height, width

    def read(self, index: int) -> Tensor:
        return self.prepare(index, None, None)

    def prepare(self, index: int, crop: int | None, size: int | None) -> Tensor:
        path = self.path(index)
        with _open(path) as image:
            if self.check_size and crop is None:
                self._check_size(index, image.size)
            try:
                image = image.convert(self.mode)  # first: PIL resizes palette images nearest-neighbour only
            except OSError as error:  # truncated or corrupt pixel data
                raise ValueError(f"cannot read image {path}: {error}") from error
        if crop is not None:
            if crop > min(image.size):
                raise ValueError(
                    f"data.crop={crop} is larger than {path}, which is {image.width}x{image.height}"
                )
            top, left = centre_window(image.height, image.width, crop)
            image = image.crop((left, top, left + crop, top + crop))
        if size is not None and image.size != (size, size):
            image = image.resize((size, size), Image.Resampling.BILINEAR)
        pixels = torch.from_numpy(np.array(image))  # one copy; collate_images copies the (C, H, W) view once
        return pixels[None] if pixels.ndim == 2 else pixels.permute(2, 0, 1)

    def keys(self, indices: Tensor) -> Tensor:
        # a file's path under the root and its size: comparable between modules reading the same folder
        # (wherever it is mounted), and no pixel is read
        def key(index: int) -> int:
            name = self.names[index]
            record = name + b"\0" + str(self.path(index).stat().st_size).encode()
            return int.from_bytes(hashlib.blake2b(record, digest_size=8).digest(), "little", signed=True)

        return torch.tensor([key(int(i)) for i in indices], dtype=torch.int64)


class ImageFolderDataModule(GANDataModule):
    """Images in ``root/<class name>/<image>``; classes are the sub-folders in sorted order.

    The folder is indexed at construction (file names and labels; a few images' headers for the shape);
    images are decoded, cropped and resized by PIL in the DataLoader workers, one per item, so memory does
    not grow with their number. ``cache=True`` decodes them all once into memory (uint8), for small sets.

    Args:
        root: Folder with one sub-folder of images per class.
        channels: 1 (greyscale) or 3 (RGB); None picks 1 if the images sampled at construction (up to
            64, spread over the folder) are all greyscale, else 3. Set it for large folders of mixed modes.
        **kwargs: :class:`GANDataModule` arguments. Without ``image_size`` (or a centre ``crop``) all images
            must share one size; with it, each is resized by PIL to ``image_size x image_size``.
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
            # os.scandir: the file type comes with the listing, not from a stat per file (slow on a cluster's
            # file system, for 200,000 files)
            with os.scandir(class_dir) as entries:
                images = sorted(
                    class_dir / entry.name
                    for entry in entries
                    if entry.is_file() and _visible(entry) and entry.name.lower().endswith(IMAGE_SUFFIXES)
                )
            if not images:
                raise ValueError(
                    f"class folder {class_dir} has no images: expected files ending in {IMAGE_SUFFIXES}"
                )
            files.append(images)
        return [class_dir.name for class_dir in class_dirs], files

    def load_samples(self) -> ImageFiles:
        class_names, files = self._image_files()
        labels = [label for label, class_files in enumerate(files) for _ in class_files]
        paths = [path for class_files in files for path in class_files]
        one_size = self.image_size is None and self.crop is None  # else every image comes out the same size
        return ImageFiles(Path(self.root), paths, torch.tensor(labels, dtype=torch.int64), class_names,
                          self.channels, check_size=one_size)  # fmt: skip
