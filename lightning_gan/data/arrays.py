"""The data module for the user's images in one array file: ``.npy`` memory-mapped, ``.npz``/``.pt`` read."""

from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from lightning_gan.data.base import GANDataModule
from lightning_gan.data.samples import TensorSamples
from lightning_gan.validation import require

#: An ``.npz`` whose ``images`` are larger than this (bytes, uncompressed) is refused: it cannot be
#: memory-mapped, so every process (each DDP rank) would hold all of it; the message says how to save .npy.
NPZ_LIMIT = 2 * 2**30


class ArrayDataModule(GANDataModule):
    """Images (and optional labels) from a ``.npy``, ``.npz`` or ``.pt`` file.

    The images are (N, C, H, W) with C in {1, 3}, or (N, H, W) for greyscale; uint8 0..255 or float already
    in [-1, 1]. Labels are integers 0..K-1 of shape (N,). A ``.npy`` is memory-mapped: rows are read in the
    DataLoader workers, one per item, uint8 stays uint8 until the batch is formed, and memory does not grow
    with the file (a 20 GB array works). ``.npz`` and ``.pt`` files are read whole (``.npz`` up to
    :data:`NPZ_LIMIT`).

    Args:
        path: A ``.npy`` of the images; or a ``.npz`` (read with ``allow_pickle=False``) or ``.pt``
            (``weights_only=True``) holding ``images`` and optional ``labels``.
        labels: With a ``.npy``: a ``.npy`` of the labels (None: unlabelled).
        **kwargs: :class:`GANDataModule` arguments.
    """

    def __init__(self, path: str, labels: str | None = None, **kwargs: Any) -> None:
        self.path = path
        self.labels = labels
        super().__init__(**kwargs)

    def _read(self) -> dict[str, Tensor | np.ndarray]:
        path = Path(self.path)
        if not path.is_file():
            raise FileNotFoundError(
                f"data.path={self.path!r} does not exist: expected a .npy, .npz or .pt file"
            )
        suffix = path.suffix.lower()
        require(self.labels is None or suffix == ".npy", "data.labels", self.labels,
                f"only a .npy takes a labels file: {path.name} carries its own under 'labels'")  # fmt: skip
        if suffix == ".npy":
            arrays = {"images": np.load(path, mmap_mode="r", allow_pickle=False)}
            if self.labels is not None:
                if not Path(self.labels).is_file():
                    raise FileNotFoundError(
                        f"data.labels={self.labels!r} does not exist: expected a .npy file"
                    )
                arrays["labels"] = torch.from_numpy(np.load(self.labels, allow_pickle=False))
            return arrays
        if suffix == ".npz":
            with np.load(path, allow_pickle=False) as arrays:
                self._check_npz_size(arrays)
                return {key: torch.from_numpy(arrays[key]) for key in arrays.files}
        if suffix == ".pt":
            content = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
            if not isinstance(content, dict):
                raise ValueError(f"{path} holds a {type(content).__name__}: expected a dict with 'images'")
            return {key: torch.as_tensor(value) for key, value in content.items()}
        raise ValueError(f"data.path={self.path!r} has suffix {path.suffix!r}: expected .npy, .npz or .pt")

    def _check_npz_size(self, arrays: np.lib.npyio.NpzFile) -> None:
        info = arrays.zip.NameToInfo.get("images.npy")
        if info is not None and info.file_size > NPZ_LIMIT:
            raise ValueError(
                f"data.path={self.path!r}: its 'images' take {info.file_size / 2**30:.1f} GiB, more than the "
                f"{NPZ_LIMIT / 2**30:g} GiB an .npz may hold here: an .npz cannot be memory-mapped, so every "
                'process would hold all of it. Save the arrays as .npy files, once: python -c "import numpy '
                f"as np; a = np.load('{self.path}'); np.save('images.npy', a['images']); "
                "np.save('labels.npy', a['labels'])\" and pass --data.path images.npy "
                "--data.labels labels.npy"
            )

    def load_samples(self) -> TensorSamples:
        arrays, path = self._read(), self.path
        if "images" not in arrays:
            raise ValueError(f"{path} has no 'images' key: found {sorted(arrays)}")
        images = arrays["images"]
        if images.ndim == 3:
            images = images[:, None]  # (N, H, W) -> (N, 1, H, W); a view, also of a memory map
        if images.ndim != 4 or images.shape[1] not in (1, 3) or len(images) == 0:
            raise ValueError(
                f"{path}: 'images' has shape {tuple(arrays['images'].shape)}: expected (N, C, H, W) with C 1 "
                "or 3, or (N, H, W), with N >= 1 (move the channel axis of channels-last arrays to 1)"
            )
        if isinstance(images, np.ndarray):  # memory-mapped: float rows are range-checked as they are read
            if images.dtype != np.uint8 and images.dtype.kind != "f":
                raise ValueError(
                    f"{path}: 'images' has dtype {images.dtype}: expected uint8 or float in [-1, 1]"
                )
        elif images.is_floating_point():
            low, high = images.min().item(), images.max().item()
            if low < -1 or high > 1:
                raise ValueError(
                    f"{path}: float 'images' lie in [{low:.4g}, {high:.4g}] but must lie in [-1, 1]: "
                    "scale them first (for 0..255 pixels: x / 127.5 - 1) or store uint8"
                )
            images = images.float()
        elif images.dtype != torch.uint8:
            raise ValueError(f"{path}: 'images' has dtype {images.dtype}: expected uint8 or float in [-1, 1]")
        if "labels" not in arrays:
            return TensorSamples(
                images, torch.full((len(images),), -1, dtype=torch.int64), [], name=str(path)
            )
        labels = self._labels(arrays["labels"], len(images))
        class_names = [str(label) for label in range(int(labels.max()) + 1)]
        return TensorSamples(images, labels, class_names, name=str(path))

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
