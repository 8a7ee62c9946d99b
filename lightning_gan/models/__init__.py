from lightning_gan.models.classifier import Classifier
from lightning_gan.models.dcgan import DCGAN
from lightning_gan.models.gan import GAN

__all__ = ["DCGAN", "GAN", "Classifier"]
