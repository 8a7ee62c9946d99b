"""lightning-gan: GANs in PyTorch Lightning with one manual-optimization training step for every model.

from lightning_gan import ACGAN, DigitsDataModule, GANMetrics
"""

from lightning_gan.callbacks import (
    DivergenceWatch,
    GANCheckpoint,
    GANMetrics,
    GeneratorEMA,
    LossCurves,
    SampleGrid,
)
from lightning_gan.data import ArrayDataModule, DigitsDataModule, GANDataModule, ImageFolderDataModule
from lightning_gan.models import ACGAN, CDCGAN, CGAN, DCGAN, GAN, SSGAN, WGAN, WGANGP, WGANSN, Classifier

__all__ = [
    "ACGAN", "CDCGAN", "CGAN", "DCGAN", "GAN", "SSGAN", "WGAN", "WGANGP", "WGANSN", "ArrayDataModule",
    "Classifier", "DigitsDataModule", "DivergenceWatch", "GANCheckpoint", "GANDataModule", "GANMetrics",
    "GeneratorEMA", "ImageFolderDataModule", "LossCurves", "SampleGrid",
]  # fmt: skip
