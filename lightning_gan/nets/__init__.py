"""Generator and discriminator networks: plain nn.Modules, shapes in, tensors out."""

from lightning_gan.nets.conditioning import (
    ConditionalBatchNorm2d,
    ConditionalSequential,
    LabelMaps,
    LatentConditioning,
    ProjectionHead,
)
from lightning_gan.nets.dcgan import DCGANDiscriminator, DCGANGenerator
from lightning_gan.nets.layers import DOut, apply_spectral_norm, has_batchnorm
from lightning_gan.nets.mlp import MLPDiscriminator, MLPGenerator

__all__ = [
    "ConditionalBatchNorm2d",
    "ConditionalSequential",
    "DCGANDiscriminator",
    "DCGANGenerator",
    "DOut",
    "LabelMaps",
    "LatentConditioning",
    "MLPDiscriminator",
    "MLPGenerator",
    "ProjectionHead",
    "apply_spectral_norm",
    "has_batchnorm",
]
