"""Data modules, a resumable sampler and the loader that groups batches per GAN step."""

from lightning_gan.data.arrays import ArrayDataModule
from lightning_gan.data.base import GANDataModule
from lightning_gan.data.digits import DigitsDataModule
from lightning_gan.data.files import ImageFolderDataModule
from lightning_gan.data.har import HARDataModule
from lightning_gan.data.mixed import MixedDataModule
from lightning_gan.data.sampler import ResumableSampler, StepLoader
from lightning_gan.data.streaming import StreamingDataModule

__all__ = [
    "ArrayDataModule",
    "DigitsDataModule",
    "GANDataModule",
    "HARDataModule",
    "ImageFolderDataModule",
    "MixedDataModule",
    "ResumableSampler",
    "StepLoader",
    "StreamingDataModule",
]
