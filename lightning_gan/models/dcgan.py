"""DCGAN preset (Radford et al. 2016)."""

from lightning_gan.models.gan import GAN


class DCGAN(GAN):
    """DCGAN: the paper's defaults are :class:`GAN`'s (DCGAN nets, non-saturating BCE, Adam 2e-4, beta1 0.5,
    latent 100, n_critic 1); this named preset is what ``configs/dcgan.yaml`` selects."""
