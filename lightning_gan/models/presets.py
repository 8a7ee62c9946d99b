"""The named GANs. Each is :class:`GAN` with other defaults (and one YAML in ``configs/``), never another
training step: conditioning, loss and Lipschitz handling stay independent switches on every preset."""

from __future__ import annotations

from functools import partial
from typing import Any

from lightning_gan.losses import AdvLoss
from lightning_gan.models.gan import GAN, Conditioning, DiscriminatorFactory, GeneratorFactory, OptimizerName
from lightning_gan.nets import DCGANDiscriminator, MLPDiscriminator, MLPGenerator


class DCGAN(GAN):
    """DCGAN (Radford et al. 2016): :class:`GAN`'s defaults are the paper's (DCGAN nets, non-saturating BCE,
    Adam 2e-4, beta1 0.5, latent 100, n_critic 1)."""


class CGAN(GAN):
    """Conditional GAN (Mirza & Osindero 2014) as in the source notes: MLP nets, G fed 100-d noise and a
    10-d label embedding, D fed the image and the label."""

    def __init__(
        self,
        generator: GeneratorFactory = MLPGenerator,
        discriminator: DiscriminatorFactory = MLPDiscriminator,
        *,
        conditioning: Conditioning = "cgan",
        **kwargs: Any,
    ) -> None:
        super().__init__(generator, discriminator, conditioning=conditioning, **kwargs)


class CDCGAN(GAN):
    """Convolutional conditional GAN: DCGAN nets, the label enters G (embedding) and D (label maps)."""

    def __init__(self, *, conditioning: Conditioning = "cgan", **kwargs: Any) -> None:
        super().__init__(conditioning=conditioning, **kwargs)


class ACGAN(GAN):
    """Auxiliary-classifier GAN (Odena et al. 2017): G takes the label, D also classifies; the class loss
    (``class_weight``, soft targets with ``soft_labels``) joins both objectives.

    D's classifier learns from real images only (``fake_class_loss=False``, GAN's default for every
    ``conditioning="acgan"`` run): with the paper's extra term on generated images, D and G agreed on labels
    that a real-digit classifier did not see (35.5% conditional correctness after 2,000 steps on the digits,
    against 95% without it; benchmarks/conditional.py).
    """

    def __init__(self, *, conditioning: Conditioning = "acgan", **kwargs: Any) -> None:
        super().__init__(conditioning=conditioning, **kwargs)


class SSGAN(GAN):
    """Semi-supervised GAN (Salimans et al. 2016, sec. 5): D has K class logits and "fake" as the implicit
    K+1-th class; L_D = L_label + (w/2)(L_unlabel + L_fake), L_G = -L_fake (the ``minimax`` G loss).
    Train it on data with few labels (``--data.num_labelled 100``)."""

    def __init__(
        self, *, conditioning: Conditioning = "ssgan", loss: AdvLoss = "minimax", **kwargs: Any
    ) -> None:
        super().__init__(conditioning=conditioning, loss=loss, **kwargs)


class WGAN(GAN):
    """Wasserstein GAN with weight clipping (Arjovsky et al. 2017, Alg. 1): c = 0.01, RMSprop 5e-5,
    n_critic 5."""

    def __init__(
        self,
        *,
        loss: AdvLoss = "wasserstein",
        n_critic: int = 5,
        clip_value: float = 0.01,
        optimizer_g: OptimizerName = "rmsprop",
        optimizer_d: OptimizerName = "rmsprop",
        lr_g: float = 5e-5,
        lr_d: float = 5e-5,
        **kwargs: Any,
    ) -> None:
        super().__init__(
            loss=loss, n_critic=n_critic, clip_value=clip_value, optimizer_g=optimizer_g,
            optimizer_d=optimizer_d, lr_g=lr_g, lr_d=lr_d, **kwargs,
        )  # fmt: skip


class _WGANAdam(GAN):
    """The Adam settings of WGAN-GP (Gulrajani et al. 2017, Alg. 1): lr 1e-4, betas (0, 0.9), n_critic 5,
    and a discriminator without BatchNorm (layer norm) unless one is given."""

    def __init__(
        self,
        *,
        discriminator: DiscriminatorFactory | None = None,
        loss: AdvLoss = "wasserstein",
        n_critic: int = 5,
        lr_g: float = 1e-4,
        lr_d: float = 1e-4,
        betas_g: tuple[float, float] = (0.0, 0.9),
        betas_d: tuple[float, float] = (0.0, 0.9),
        **kwargs: Any,
    ) -> None:
        super().__init__(
            discriminator=discriminator or partial(DCGANDiscriminator, norm="layer"), loss=loss,
            n_critic=n_critic, lr_g=lr_g, lr_d=lr_d, betas_g=betas_g, betas_d=betas_d, **kwargs,
        )  # fmt: skip


class WGANGP(_WGANAdam):
    """WGAN-GP (Gulrajani et al. 2017): gradient penalty lambda = 10 on interpolates, no BatchNorm in D."""

    def __init__(self, *, gp_weight: float = 10.0, **kwargs: Any) -> None:
        super().__init__(gp_weight=gp_weight, **kwargs)


class WGANSN(_WGANAdam):
    """Wasserstein loss with spectral norm on every layer of D (Miyato et al. 2018) instead of clipping or a
    penalty; no BatchNorm in D. The source notes found SN the most stable of the three."""

    def __init__(self, *, spectral_norm: bool = True, **kwargs: Any) -> None:
        super().__init__(spectral_norm=spectral_norm, **kwargs)
