"""Generator and discriminator networks: plain nn.Modules, shapes in, tensors out."""

from lightning_gan.nets.attention import SelfAttention
from lightning_gan.nets.conditioning import (
    ConditionalBatchNorm,
    ConditionalBatchNorm1d,
    ConditionalBatchNorm2d,
    ConditionalSequential,
    LabelMaps,
    LatentConditioning,
    ProjectionHead,
)
from lightning_gan.nets.dcgan import DCGANDiscriminator, DCGANGenerator
from lightning_gan.nets.discriminator import ConditionalDiscriminator
from lightning_gan.nets.layers import DOut, apply_spectral_norm, has_batchnorm
from lightning_gan.nets.mlp import MLPDiscriminator, MLPGenerator
from lightning_gan.nets.resnet_gan import (
    ResNetDiscriminator,
    ResNetGenerator,
    SignalResNetDiscriminator,
    SignalResNetGenerator,
)
from lightning_gan.nets.signal import SignalDiscriminator, SignalGenerator
from lightning_gan.nets.vbn import VirtualBatchNorm

__all__ = [
    "ConditionalBatchNorm",
    "ConditionalBatchNorm1d",
    "ConditionalBatchNorm2d",
    "ConditionalDiscriminator",
    "ConditionalSequential",
    "DCGANDiscriminator",
    "DCGANGenerator",
    "DOut",
    "LabelMaps",
    "LatentConditioning",
    "MLPDiscriminator",
    "MLPGenerator",
    "ProjectionHead",
    "ResNetDiscriminator",
    "ResNetGenerator",
    "SelfAttention",
    "SignalDiscriminator",
    "SignalGenerator",
    "SignalResNetDiscriminator",
    "SignalResNetGenerator",
    "VirtualBatchNorm",
    "apply_spectral_norm",
    "has_batchnorm",
]
