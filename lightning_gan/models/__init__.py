from lightning_gan.models.classifier import Classifier
from lightning_gan.models.gan import GAN
from lightning_gan.models.presets import ACGAN, CDCGAN, CGAN, DCGAN, SSGAN, WGAN, WGANGP, WGANSN

__all__ = ["ACGAN", "CDCGAN", "CGAN", "DCGAN", "GAN", "SSGAN", "WGAN", "WGANGP", "WGANSN", "Classifier"]
