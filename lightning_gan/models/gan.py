"""The one GAN training algorithm every preset reuses.

One call of :meth:`GAN.training_step` is one *generator step*: ``n_critic`` discriminator updates, each on
its own real batch drawn from the DataLoader, then one generator update. The data module hands the step a
list of ``n_critic`` batches (see :class:`lightning_gan.data.StepLoader`), so Lightning's batch count,
progress bar, ``log_every_n_steps`` and logged ``step`` are all in generator steps.

Lightning's ``global_step`` counts every ``LightningOptimizer.step()`` under manual optimization. D's steps
go through the strategy directly (precision plugins such as AMP's GradScaler still apply), so only G's step
is counted: ``trainer.global_step``, ``--trainer.max_steps``, checkpoint names and ``ckpt["global_step"]``
all mean generator steps.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Literal, get_args

import torch
import torch.nn.functional as F
from lightning.pytorch.cli import LRSchedulerCallable
from lightning.pytorch.core.optimizer import LightningOptimizer, do_nothing_closure
from torch import Tensor, nn

from lightning_gan.losses import AdvLoss, clip_weights_, get_loss, gradient_penalty
from lightning_gan.models.lifecycle import GANLifecycle
from lightning_gan.nets import DCGANDiscriminator, DCGANGenerator, DOut, apply_spectral_norm, has_batchnorm
from lightning_gan.rng import StepRNG
from lightning_gan.validation import require

OptimizerName = Literal["adam", "rmsprop"]
#: How labels enter: none; cgan (G and D take the label); acgan (G takes it, D classifies, Odena et al. 2017);
#: ssgan (D has K class logits, "fake" is the implicit K+1-th class, Salimans et al. 2016, sec. 5).
Conditioning = Literal["none", "cgan", "acgan", "ssgan"]
GeneratorFactory = Callable[[int, tuple[int, int, int], int], nn.Module]
DiscriminatorFactory = Callable[[tuple[int, int, int], int], nn.Module]
Batch = Sequence[Tensor]  # (images (N, C, H, W) in [-1, 1], labels (N,))


def make_optimizer(
    name: str, params: Sequence[nn.Parameter], lr: float, betas: tuple[float, float]
) -> torch.optim.Optimizer:
    """Builds the optimizer a user names with ``--model.optimizer_g`` / ``--model.optimizer_d``."""
    if name == "adam":
        return torch.optim.Adam(params, lr=lr, betas=betas)
    if name == "rmsprop":  # WGAN (Arjovsky et al. 2017, Alg. 1) uses RMSprop: momentum-free, betas unused
        return torch.optim.RMSprop(params, lr=lr)
    raise ValueError(f"optimizer {name!r} is not allowed: choose adam or rmsprop")


class GAN(GANLifecycle):
    """A GAN trained by the shared manual-optimization step (n_critic, TTUR, any loss, clip/GP/SN).

    Args:
        generator: Builds G as ``generator(latent_dim, img_shape, num_classes)``; a class path in YAML.
        discriminator: Builds D as ``discriminator(img_shape, num_classes)``; returns :class:`DOut`.
        img_shape: (C, H, W) of the data; the CLI links it from the data module.
        num_classes: Number of classes of the data (0 = unlabelled); linked from the data module.
        latent_dim: Size of z.
        loss: Adversarial loss, one of ``bce``, ``minimax``, ``lsgan``, ``hinge``, ``wasserstein``.
        n_critic: Discriminator updates per generator update, each on a fresh real batch.
        lr_g, lr_d: Learning rates (TTUR, Heusel et al. 2017); 0 freezes that network.
        betas_g, betas_d: Adam betas per network.
        optimizer_g, optimizer_d: ``adam`` or ``rmsprop``.
        clip_value: WGAN weight clipping of every D parameter to [-c, c] after each D step; 0 = off.
        gp_weight: WGAN-GP gradient penalty weight; 0 = off.
        spectral_norm: Wrap every conv/linear layer of D in spectral normalisation (Miyato et al. 2018).
        scheduler_g, scheduler_d: Optional LR schedulers, stepped once per generator step.
        conditioning: ``none``, ``cgan``, ``acgan`` or ``ssgan`` (see :data:`Conditioning`).
        class_weight: Weight of the class loss: ACGAN adds it to D's and G's objectives; SSGAN's L_label.
        soft_labels: Label smoothing of the class targets (0 = one-hot); the notes' soft ACGAN targets.
        unsupervised_weight: SSGAN's w in L_D = L_label + (w/2)(L_unlabel + L_fake).
        fake_class_loss: ACGAN: D also learns to classify generated images by their asked class (Odena et al.
            2017). Off (the default everywhere, the measured better one), D's classifier learns from real
            images only, so G cannot pass the label to it through cues that are not the digit's shape.
        compile: ``torch.compile`` G and D in place (names in checkpoints unchanged). A gradient penalty
            differentiates D's input gradient again (double backward), which compiled code does not support:
            D then stays eager, with a warning, and G is compiled.
        channels_last: Keep the conv nets' weights and the real batches in channels-last memory layout (faster
            convolutions on recent GPUs with mixed precision).

    Example:
        >>> model = GAN(img_shape=(1, 28, 28), latent_dim=16)
        >>> model.sample(4).shape
        torch.Size([4, 1, 28, 28])
    """

    def __init__(
        self,
        generator: GeneratorFactory = DCGANGenerator,
        discriminator: DiscriminatorFactory = DCGANDiscriminator,
        *,
        img_shape: tuple[int, int, int] = (1, 28, 28),
        num_classes: int = 0,
        latent_dim: int = 100,
        loss: AdvLoss = "bce",
        n_critic: int = 1,
        lr_g: float = 2e-4,
        lr_d: float = 2e-4,
        betas_g: tuple[float, float] = (0.5, 0.999),
        betas_d: tuple[float, float] = (0.5, 0.999),
        optimizer_g: OptimizerName = "adam",
        optimizer_d: OptimizerName = "adam",
        clip_value: float = 0.0,
        gp_weight: float = 0.0,
        spectral_norm: bool = False,
        scheduler_g: LRSchedulerCallable | None = None,
        scheduler_d: LRSchedulerCallable | None = None,
        conditioning: Conditioning = "none",
        class_weight: float = 1.0,
        soft_labels: float = 0.0,
        unsupervised_weight: float = 1.0,
        fake_class_loss: bool = False,
        compile: bool = False,
        channels_last: bool = False,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.automatic_optimization = False

        require(
            isinstance(n_critic, int) and n_critic >= 1, "model.n_critic", n_critic, "must be an integer >= 1"
        )
        require(
            isinstance(latent_dim, int) and latent_dim >= 1, "model.latent_dim", latent_dim, "must be >= 1"
        )
        for key, value in (("lr_g", lr_g), ("lr_d", lr_d)):
            require(value >= 0, f"model.{key}", value, "must be >= 0 (0 freezes the network)")
        for key, value in (("betas_g", betas_g), ("betas_d", betas_d)):
            require(
                len(value) == 2 and all(0 <= b < 1 for b in value), f"model.{key}", value, "need 0 <= b < 1"
            )
        require(clip_value >= 0, "model.clip_value", clip_value, "must be >= 0 (0 = off)")
        require(gp_weight >= 0, "model.gp_weight", gp_weight, "must be >= 0 (0 = off)")
        require(
            conditioning in get_args(Conditioning),
            "model.conditioning",
            conditioning,
            f"choose one of {', '.join(get_args(Conditioning))}",
        )
        require(
            conditioning == "none" or num_classes >= 2,
            "model.conditioning",
            conditioning,
            f"needs labelled data with at least 2 classes; the data have num_classes={num_classes}",
        )
        require(class_weight >= 0, "model.class_weight", class_weight, "must be >= 0")
        require(0 <= soft_labels < 1, "model.soft_labels", soft_labels, "must satisfy 0 <= soft_labels < 1")
        require(unsupervised_weight >= 0, "model.unsupervised_weight", unsupervised_weight, "must be >= 0")
        self.adversarial_loss = get_loss(loss)
        self.scheduler_factories = {"scheduler_g": scheduler_g, "scheduler_d": scheduler_d}

        self.latent_dim = latent_dim
        self.img_shape = tuple(img_shape)
        self.num_classes = num_classes
        self.conditioning = conditioning
        # Which network sees the label, and whether D has a class head: the three switches of the modes.
        self.g_takes_label = conditioning in ("cgan", "acgan")
        self.d_takes_label = conditioning == "cgan"
        self.class_head = num_classes if conditioning in ("acgan", "ssgan") else 0
        self.generator = generator(latent_dim, self.img_shape, num_classes if self.g_takes_label else 0)
        d_classes = num_classes if self.d_takes_label else 0
        if self.class_head:
            self.discriminator = discriminator(self.img_shape, d_classes, class_head=self.class_head)
        else:
            self.discriminator = discriminator(self.img_shape, d_classes)
        # ACGAN/SSGAN: accuracy of D's class head on real validation images
        self._class_metrics(num_classes)
        if has_batchnorm(self.discriminator):
            # BN couples the samples of a batch: the per-sample gradient GP penalises is then not D's own, and
            # SN's Lipschitz bound does not hold through BN's division by the batch std (Gulrajani et al.
            # 2017, sec. 4).
            require(
                gp_weight == 0,
                "model.gp_weight",
                gp_weight,
                "a gradient penalty needs a discriminator "
                "without BatchNorm: set model.discriminator.init_args.norm to layer, instance or none",
            )
            require(
                not spectral_norm,
                "model.spectral_norm",
                spectral_norm,
                "spectral norm needs a discriminator "
                "without BatchNorm: set model.discriminator.init_args.norm to layer, instance or none",
            )
        if spectral_norm:
            apply_spectral_norm(self.discriminator)
        # An exponential moving average of G's weights, created and updated by the GeneratorEMA callback;
        # sampling uses it when present. It lives on the module so that checkpoints and `generate` carry it.
        self.generator_ema: nn.Module | None = None
        self._resume_rng_states: dict | None = None  # from a checkpoint, set before the next step
        self.step_rng = StepRNG()  # every draw of the training step comes from this stream
        self._compiled = False

    # ---------------------------------------------------------------- what the rest of the project calls
    @property
    def batches_per_step(self) -> int:
        """Real batches one training step consumes; the data module groups batches by this."""
        return self.hparams.n_critic

    @property
    def conditional(self) -> bool:
        """Whether G draws a sample of an asked class (CGAN, ACGAN)."""
        return self.g_takes_label

    def sample_latent(self, num_samples: int, generator: torch.Generator | None = None) -> Tensor:
        """z ~ N(0, I), shape (num_samples, latent_dim), on the module's device."""
        return torch.randn(num_samples, self.latent_dim, device=self.device, generator=generator)

    @torch.no_grad()
    def sample(
        self,
        num_samples: int,
        labels: Tensor | None = None,
        *,
        z: Tensor | None = None,
        generator: torch.Generator | None = None,
        ema: bool = True,
    ) -> Tensor:
        """Draws images from G in eval mode. Returns (num_samples, C, H, W) in [-1, 1].

        Args:
            num_samples: How many images.
            labels: (num_samples,) class of each image, for conditional models; ignored otherwise.
            z: (num_samples, latent_dim) latent vectors to decode; drawn with ``generator`` when None.
            generator: Random source for z, for reproducible samples.
            ema: Use the EMA of G's weights when the run keeps one (see ``GeneratorEMA``).
        """
        if z is None:
            z = self.sample_latent(num_samples, generator=generator)
        net = self.generator_ema if ema and self.generator_ema is not None else self.generator
        was_training = net.training
        net.eval()
        try:
            return net(z, labels if self.conditional else None)
        finally:
            net.train(was_training)

    # ---------------------------------------------------------------- the training step, written once
    def configure_optimizers(self) -> list[dict]:
        hp = self.hparams
        opt_g = make_optimizer(hp.optimizer_g, list(self.generator.parameters()), hp.lr_g, tuple(hp.betas_g))
        opt_d = make_optimizer(
            hp.optimizer_d, list(self.discriminator.parameters()), hp.lr_d, tuple(hp.betas_d)
        )
        configs = []
        for opt, (key, scheduler) in zip((opt_g, opt_d), self.scheduler_factories.items(), strict=True):
            config: dict = {"optimizer": opt}
            if scheduler is not None:
                sched = scheduler(opt)
                require(
                    not isinstance(sched, torch.optim.lr_scheduler.ReduceLROnPlateau),
                    f"model.{key}",
                    type(sched).__name__,
                    "schedulers here are stepped per generator step without a metric",
                )
                config["lr_scheduler"] = {"scheduler": sched, "interval": "step"}
            configs.append(config)
        return configs

    def training_step(self, batches: Sequence[Batch], batch_idx: int) -> None:
        if not (
            isinstance(batches, list | tuple)
            and len(batches) == self.hparams.n_critic
            and all(isinstance(b, list | tuple) for b in batches)
        ):
            raise TypeError(
                "GAN.training_step expects a list of "
                f"model.n_critic={self.hparams.n_critic} real batches per "
                "generator step; train with a lightning_gan data module (or wrap your DataLoader in "
                "lightning_gan.data.StepLoader)"
            )
        if self.hparams.channels_last:
            batches = [
                (x.contiguous(memory_format=torch.channels_last) if x.ndim == 4 else x, *rest)
                for x, *rest in batches
            ]
        opt_g, opt_d = self.optimizers()
        batch_size = len(batches[-1][0])
        with self.step_rng(self.device):
            d_logs = [self.discriminator_step(opt_d, *batch) for batch in batches]
            g_logs = self.generator_step(opt_g, batch_size)
        schedulers = self.lr_schedulers()
        for scheduler in schedulers if isinstance(schedulers, list) else [schedulers] if schedulers else []:
            scheduler.step()

        # The D figures are the mean over the n_critic updates of this generator step.
        logs = {key: torch.stack([log[key] for log in d_logs]).mean() for key in d_logs[0]} | g_logs
        self.log_dict(logs, prog_bar=True, batch_size=batch_size)
        self.log(
            "step", float(self.global_step), batch_size=batch_size
        )  # x-axis of every logged row: G steps

    # ---------------------------------------------------------------- what: the losses, for any conditioning
    def fake_labels(self, num_samples: int) -> Tensor | None:
        """Uniformly drawn classes for the samples G is asked for, or None for an unconditional G."""
        if not self.g_takes_label:
            return None
        return torch.randint(self.num_classes, (num_samples,), device=self.device)

    def scores(self, out: DOut) -> Tensor:
        """D's real/fake score. For SSGAN, D(x) = Z/(Z+1) with Z = sum_k exp(l_k), so its logit is
        logsumexp_k l_k (Salimans et al. 2016, sec. 5): the adversarial losses then apply unchanged."""
        return torch.logsumexp(out.class_logits, dim=1) if self.conditioning == "ssgan" else out.logits

    def class_loss(self, class_logits: Tensor, labels: Tensor) -> Tensor:
        """Cross entropy on the samples whose label is known (label >= 0; hidden labels are -1)."""
        known = labels >= 0
        if not known.any():
            return class_logits.sum() * 0  # keeps the graph (and DDP's reducer) whole
        return F.cross_entropy(class_logits[known], labels[known], label_smoothing=self.hparams.soft_labels)

    def d_loss(
        self, real: Tensor, labels: Tensor, fake: Tensor, fake_labels: Tensor | None
    ) -> tuple[Tensor, dict[str, Tensor]]:
        """D's objective on a real batch (with its labels, -1 = hidden) and a generated one."""
        hp = self.hparams
        real_cond = labels if self.d_takes_label else None
        fake_cond = fake_labels if self.d_takes_label else None
        real_out, fake_out = self.discriminator(real, real_cond), self.discriminator(fake, fake_cond)
        real_scores, fake_scores = self.scores(real_out), self.scores(fake_out)
        adversarial = self.adversarial_loss.d(real_scores, fake_scores)
        # SSGAN: L_D = L_label + (w/2)(L_unlabel + L_fake); every other mode weighs the adversarial loss 1.
        loss = adversarial * (hp.unsupervised_weight / 2 if self.conditioning == "ssgan" else 1.0)
        logs = {
            "loss/d": adversarial.detach(),
            "d/real_score": real_scores.detach().mean(),
            "d/fake_score": fake_scores.detach().mean(),
        }
        if self.class_head:
            class_real = self.class_loss(real_out.class_logits, labels)
            loss = loss + hp.class_weight * class_real
            logs["loss/class_real"] = class_real.detach()
            if self.conditioning == "acgan" and hp.fake_class_loss:  # D classifies samples by asked class
                class_fake = self.class_loss(fake_out.class_logits, fake_labels)
                loss = loss + hp.class_weight * class_fake
                logs["loss/class_fake"] = class_fake.detach()
        if hp.gp_weight > 0:
            scaler = getattr(self.trainer.precision_plugin, "scaler", None) if self._trainer else None
            penalty = gradient_penalty(
                lambda x: self.scores(self.discriminator(x, real_cond)), real, fake, scaler=scaler
            )
            loss = loss + hp.gp_weight * penalty
            logs["loss/gp"] = penalty.detach()
        return loss, logs

    def g_loss(self, fake: Tensor, fake_labels: Tensor | None) -> tuple[Tensor, dict[str, Tensor]]:
        """G's objective on its samples of the asked classes."""
        out = self.discriminator(fake, fake_labels if self.d_takes_label else None)
        loss = self.adversarial_loss.g(self.scores(out))
        logs = {"loss/g": loss.detach()}
        if self.conditioning == "acgan":
            class_fake = self.class_loss(out.class_logits, fake_labels)
            loss = loss + self.hparams.class_weight * class_fake
            logs["loss/g_class"] = class_fake.detach()
        return loss, logs

    def training_noise(self, batch_size: int) -> tuple[Tensor | None, Tensor]:
        """Asked classes (or None) and z for ``batch_size`` samples of this process.

        Under DDP every rank draws the classes and z of all ranks' samples from the step's stream
        (:attr:`step_rng`) and keeps its own share: the ranks decode different samples, yet their streams
        stay identical, so the one state a checkpoint saves resumes every rank exactly.
        """
        world = self.trainer.world_size if self._trainer is not None else 1
        rank = self.trainer.global_rank if self._trainer is not None else 0
        labels = self.fake_labels(batch_size * world)
        z = self.sample_latent(batch_size * world)
        share = slice(rank * batch_size, (rank + 1) * batch_size)
        return (None if labels is None else labels[share]), z[share]

    # ---------------------------------------------------------------- when: one update of each network
    def discriminator_step(
        self, opt_d: LightningOptimizer, real: Tensor, labels: Tensor
    ) -> dict[str, Tensor]:
        """One D update on one real batch. Returns detached figures to log."""
        fake_labels, z = self.training_noise(len(real))
        with torch.no_grad():
            fake = self.generator(z, fake_labels)
        with self.toggled_optimizer(opt_d):
            loss, logs = self.d_loss(real, labels, fake, fake_labels)
            opt_d.zero_grad(set_to_none=True)
            self.manual_backward(loss)
            # Lightning counts every LightningOptimizer.step() in global_step; stepping D through the strategy
            # (still running precision plugins and on_before_optimizer_step hooks) keeps it out of the count.
            self.trainer.strategy.optimizer_step(opt_d.optimizer, closure=do_nothing_closure)
        if self.hparams.clip_value > 0:
            clip_weights_(self.discriminator, self.hparams.clip_value)
        return logs

    def generator_step(self, opt_g: LightningOptimizer, batch_size: int) -> dict[str, Tensor]:
        """One G update on ``batch_size`` fresh samples; this is the step ``global_step`` counts."""
        fake_labels, z = self.training_noise(batch_size)
        with self.toggled_optimizer(opt_g):
            loss, logs = self.g_loss(self.generator(z, fake_labels), fake_labels)
            opt_g.zero_grad(set_to_none=True)
            self.manual_backward(loss)
            opt_g.step()
        return logs
