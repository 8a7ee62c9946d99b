"""Generator and discriminator networks: plain nn.Modules, shapes in, tensors out."""

from lightning_gan.nets.dcgan import DCGANDiscriminator, DCGANGenerator
from lightning_gan.nets.layers import DOut, apply_spectral_norm, has_batchnorm

__all__ = ["DCGANDiscriminator", "DCGANGenerator", "DOut", "apply_spectral_norm", "has_batchnorm"]
