"""How the GAN draws: the classes and latent vectors of its training step (from the step's own stream, shared
out over DDP ranks), and samples of its generator for everything else (grids, metrics, ``generate``, mixed
data), with z of the distribution ``--model.latent`` names."""

from __future__ import annotations

import torch
from torch import Tensor

from lightning_gan.latent import draw_latent
from lightning_gan.transforms import ONE_PROCESS, Share


class GANSampling:
    """The drawing of :class:`lightning_gan.models.GAN` (a mixin: ``hparams``, ``generator``,
    ``generator_ema``, ``latent_dim``, ``num_classes`` and the conditioning switches are the GAN's)."""

    @property
    def share(self) -> Share:
        """This process's share of the step's draws: its DDP rank and the number of ranks."""
        if self._trainer is None:
            return ONE_PROCESS
        return Share(self.trainer.global_rank, self.trainer.world_size)

    def fake_labels(self, num_samples: int) -> Tensor | None:
        """Uniformly drawn classes for the samples G is asked for, or None for an unconditional G."""
        if not self.g_takes_label:
            return None
        return torch.randint(self.num_classes, (num_samples,), device=self.device)

    def training_noise(self, batch_size: int, paired: bool = False) -> tuple[Tensor | None, Tensor]:
        """Asked classes (or None) and z for ``batch_size`` samples of this process.

        Under DDP every rank draws the classes and z of all ranks' samples from the step's stream
        (:attr:`step_rng`) and keeps its own share: the ranks decode different samples, yet their streams
        stay identical, so the one state a checkpoint saves resumes every rank exactly. ``paired``: the
        share's second half asks for the classes of its first half (the mode-seeking term's pairs).
        """
        rank, world = self.share
        labels = self.fake_labels(batch_size * world)
        z = self.sample_latent(batch_size * world)
        share = slice(rank * batch_size, (rank + 1) * batch_size)
        if labels is None:
            return None, z[share]
        labels = labels[share]
        if paired:
            half = batch_size // 2
            labels[half : 2 * half] = labels[:half]
        return labels, z[share]

    def sample_latent(
        self, num_samples: int, generator: torch.Generator | None = None, truncation: float | None = None
    ) -> Tensor:
        """z (num_samples, latent_dim) of ``model.latent``'s distribution, on the module's device (drawn on
        ``generator``'s device when given one); ``truncation``: see :func:`~lightning_gan.latent.draw_latent`.
        """
        z = draw_latent(
            self.hparams.latent, num_samples, self.latent_dim, generator=generator, device=self.device,
            truncation=truncation,
        )  # fmt: skip
        return z.to(self.device)

    @torch.no_grad()
    def sample(
        self,
        num_samples: int,
        labels: Tensor | None = None,
        *,
        z: Tensor | None = None,
        generator: torch.Generator | None = None,
        ema: bool = True,
        truncation: float | None = None,
    ) -> Tensor:
        """Draws images from G in eval mode. Returns (num_samples, C, H, W) in [-1, 1].

        Args:
            num_samples: How many images.
            labels: (num_samples,) class of each image, for conditional models; ignored otherwise.
            z: (num_samples, latent_dim) latent vectors to decode; drawn with ``generator`` when None.
            generator: Random source for z, for reproducible samples.
            ema: Use the EMA of G's weights when the run keeps one (see ``GeneratorEMA``).
            truncation: Draw z from the gaussian truncated at this |z| (the truncation trick); None = off.
        """
        if z is None:
            z = self.sample_latent(num_samples, generator=generator, truncation=truncation)
        net = self.generator_ema if ema and self.generator_ema is not None else self.generator
        was_training = net.training
        net.eval()
        try:
            return net(z, labels if self.conditional else None)
        finally:
            net.train(was_training)
