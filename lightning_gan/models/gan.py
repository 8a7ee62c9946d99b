"""The one GAN training algorithm every preset reuses.

One call of :meth:`GAN.training_step` is one *generator step*: ``n_critic`` discriminator updates, each on
its own real batch drawn from the DataLoader, then one generator update (``update_order="g_first"``: the
generator update first). The optional loss terms (feature matching, R1, ...) are added in one place, see
:mod:`lightning_gan.models.objectives`; gradient-norm clipping is in ``on_before_optimizer_step``. The data
module hands the step a list of ``n_critic`` batches (see :class:`lightning_gan.data.StepLoader`), so
Lightning's batch count, progress bar, ``log_every_n_steps`` and logged ``step`` are all in generator steps.

Lightning's ``global_step`` counts every ``LightningOptimizer.step()`` under manual optimization. D's steps
go through the strategy directly (precision plugins such as AMP's GradScaler still apply), so only G's step
is counted: ``trainer.global_step``, ``--trainer.max_steps``, checkpoint names and ``ckpt["global_step"]``
all mean generator steps.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Literal, get_args

import torch
from lightning.pytorch.cli import LRSchedulerCallable
from lightning.pytorch.core.optimizer import LightningOptimizer, do_nothing_closure
from torch import Tensor, nn

from lightning_gan.latent import LatentKind, check_latent
from lightning_gan.losses import AdvLoss, clip_weights_, get_loss
from lightning_gan.models.lifecycle import GANLifecycle, OptimizerName, record_python_hparams
from lightning_gan.models.objectives import GANObjectives
from lightning_gan.models.sampling import GANSampling
from lightning_gan.models.terms import FeatureLayer, LossTerms
from lightning_gan.nets import DCGANDiscriminator, DCGANGenerator, apply_spectral_norm, has_batchnorm
from lightning_gan.rng import StepRNG
from lightning_gan.transforms import DiffAugment, InstanceNoise, NoiseKind
from lightning_gan.validation import require, require_int

#: How labels enter: none; cgan (G and D take the label); acgan (G takes it, D classifies, Odena et al. 2017);
#: ssgan (D has K class logits, "fake" is the implicit K+1-th class, Salimans et al. 2016, sec. 5).
Conditioning = Literal["none", "cgan", "acgan", "ssgan"]
UpdateOrder = Literal["d_first", "g_first"]
GeneratorFactory = Callable[[int, tuple[int, int, int], int], nn.Module]
DiscriminatorFactory = Callable[[tuple[int, int, int], int], nn.Module]
Batch = Sequence[Tensor]  # (images (N, C, H, W) in [-1, 1], labels (N,))


class GAN(GANSampling, GANObjectives, GANLifecycle):
    """A GAN trained by the shared manual-optimization step (n_critic, TTUR, any loss, clip/GP/SN, and the
    stabilisers: README's switch table gives each key's source).

    Args:
        generator: Builds G as ``generator(latent_dim, img_shape, num_classes)``; a class path in YAML.
        discriminator: Builds D as ``discriminator(img_shape, num_classes)``; returns :class:`DOut`.
        img_shape: (C, H, W) of the data; the CLI links it from the data module.
        num_classes: Number of classes of the data (0 = unlabelled); linked from the data module.
        latent_dim: Size of z.
        latent: Distribution of z: ``gaussian``, ``uniform`` (U(-1, 1)) or ``laplace``
            (:mod:`lightning_gan.latent`), wherever z is drawn.
        loss: Adversarial loss, one of ``bce``, ``minimax``, ``lsgan``, ``hinge``, ``wasserstein``.
        n_critic: Discriminator updates per generator update, each on a fresh real batch.
        lr_g, lr_d: Learning rates (TTUR, Heusel et al. 2017); 0 freezes that network.
        betas_g, betas_d: Adam betas per network.
        optimizer_g, optimizer_d: ``adam``, ``adamw``, ``adamax``, ``radam`` or ``rmsprop``.
        weight_decay_g, weight_decay_d: Weight decay per network (decoupled for ``adamw``, L2 otherwise).
        clip_value: WGAN weight clipping of every D parameter to [-c, c] after each D step; 0 = off.
        gp_weight: WGAN-GP gradient penalty weight; 0 = off.
        spectral_norm: Wrap every conv/linear layer of D in spectral normalisation (Miyato et al. 2018).
        spectral_norm_g: Wrap every conv/linear layer (and label embedding) of G too, as SAGAN and BigGAN do.
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
        feature_matching: Weight w of ``w * ||E f(x) - E f(G(z))||^2`` in G's loss, f D's ``feature_layer``.
        feature_matching_reduction: ``mean`` (over the F features: the authors' code) or ``sum`` (the paper's
            norm) of the squared differences.
        feature_layer: ``penultimate`` or a block index of D (see :mod:`lightning_gan.models.terms`).
        feature_matching_only: Feature matching is G's whole objective (no adversarial G term).
        hist_avg_g, hist_avg_d: Weights of historical averaging, ``||theta - mean of past theta||^2``.
        one_sided_smoothing: s: D's target for real samples is 1 - s, fake stays 0 (bce, minimax, lsgan).
        grad_clip_g, grad_clip_d: Bound on the total gradient norm of G's / D's updates; 0 = off.
        grad_clip_g_from, grad_clip_d_from: Clip only once this many generator steps are done.
        update_order: ``d_first`` (n_critic D updates, then G) or ``g_first``.
        mode_seeking: Weight of the mode-seeking term (pairs of z of one class should differ in G(z)).
        r1_weight: gamma of the R1 penalty ``gamma/2 E ||grad D(x)||^2`` on real samples; 0 = off.
        r1_every: Lazy R1: applied at every k-th D update (weighted k times).
        instance_noise: ``none``, ``gaussian`` or ``uniform`` noise on every input D scores in training.
        instance_noise_scale: Its sigma (gaussian) or upper bound a of U(0, a) (uniform).
        instance_noise_anneal: Generator steps over which the scale falls linearly to 0; 0 = constant.
        augment: DiffAugment's augmentations of every input D scores in training, e.g. ``translation,cutout``
            (:class:`lightning_gan.transforms.DiffAugment`); ``none`` = off.
        augment_p: Probability of each augmentation per sample (the start of an adaptive p).
        augment_adaptive, augment_target, augment_ada_steps: Adaptive p as StyleGAN2-ADA: steer
            E[sign D(real)] to the target; ada_steps generator steps take p from 0 to 1.

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
        latent: LatentKind = "gaussian",
        loss: AdvLoss = "bce",
        n_critic: int = 1,
        lr_g: float = 2e-4,
        lr_d: float = 2e-4,
        betas_g: tuple[float, float] = (0.5, 0.999),
        betas_d: tuple[float, float] = (0.5, 0.999),
        optimizer_g: OptimizerName = "adam",
        optimizer_d: OptimizerName = "adam",
        weight_decay_g: float = 0.0,
        weight_decay_d: float = 0.0,
        clip_value: float = 0.0,
        gp_weight: float = 0.0,
        spectral_norm: bool = False,
        spectral_norm_g: bool = False,
        scheduler_g: LRSchedulerCallable | None = None,
        scheduler_d: LRSchedulerCallable | None = None,
        conditioning: Conditioning = "none",
        class_weight: float = 1.0,
        soft_labels: float = 0.0,
        unsupervised_weight: float = 1.0,
        fake_class_loss: bool = False,
        compile: bool = False,
        channels_last: bool = False,
        feature_matching: float = 0.0,
        feature_layer: FeatureLayer = "penultimate",
        feature_matching_only: bool = False,
        feature_matching_reduction: Literal["mean", "sum"] = "mean",
        hist_avg_g: float = 0.0,
        hist_avg_d: float = 0.0,
        one_sided_smoothing: float = 0.0,
        grad_clip_g: float = 0.0,
        grad_clip_d: float = 0.0,
        grad_clip_g_from: int = 0,
        grad_clip_d_from: int = 0,
        update_order: UpdateOrder = "d_first",
        mode_seeking: float = 0.0,
        r1_weight: float = 0.0,
        r1_every: int = 1,
        instance_noise: NoiseKind = "none",
        instance_noise_scale: float = 0.0,
        instance_noise_anneal: int = 0,
        augment: str = "none",
        augment_p: float = 0.0,
        augment_adaptive: bool = False,
        augment_target: float | None = None,
        augment_ada_steps: int = 500,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        record_python_hparams(
            self.hparams, type(self), ("generator", "discriminator", "scheduler_g", "scheduler_d")
        )
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
        for key, value in (
            ("weight_decay_g", weight_decay_g),
            ("weight_decay_d", weight_decay_d),
            ("clip_value", clip_value),
            ("grad_clip_g", grad_clip_g),
            ("grad_clip_d", grad_clip_d),
        ):
            require(value >= 0, f"model.{key}", value, "must be >= 0 (0 = off)")
        for key, value in (("grad_clip_g_from", grad_clip_g_from), ("grad_clip_d_from", grad_clip_d_from)):
            require_int(f"model.{key}", value, 0)
        orders = get_args(UpdateOrder)
        require(update_order in orders, "model.update_order", update_order, f"choose {' or '.join(orders)}")
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
        self.adversarial_loss = get_loss(loss, one_sided_smoothing)
        self.scheduler_factories = {"scheduler_g": scheduler_g, "scheduler_d": scheduler_d}

        self.latent_dim = latent_dim
        check_latent(latent)
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
            for key, value, what in (
                ("gp_weight", gp_weight, "a gradient penalty"),
                ("r1_weight", r1_weight, "an R1 penalty"),
                ("spectral_norm", spectral_norm, "spectral norm"),
            ):
                require(
                    not value,
                    f"model.{key}",
                    value,
                    f"{what} needs a discriminator without BatchNorm: "
                    "set model.discriminator.init_args.norm to layer, group, instance or none",
                )
        if spectral_norm:
            apply_spectral_norm(self.discriminator)
        if spectral_norm_g:  # Zhang et al. 2019 (SAGAN), sec. 4.1
            apply_spectral_norm(self.generator)
        self.instance_noise = InstanceNoise(instance_noise, instance_noise_scale, instance_noise_anneal)
        self.augment = DiffAugment(augment, augment_p, augment_adaptive, augment_target, augment_ada_steps)
        self.loss_terms = LossTerms(
            self.generator,
            self.discriminator,  # after spectral norm: its historical average is over SN's parameters
            gp_weight=gp_weight,
            r1_weight=r1_weight,
            r1_every=r1_every,
            feature_matching=feature_matching,
            feature_layer=feature_layer,
            feature_matching_only=feature_matching_only,
            feature_matching_reduction=feature_matching_reduction,
            hist_avg_g=hist_avg_g,
            hist_avg_d=hist_avg_d,
            mode_seeking=mode_seeking,
        )
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

    # ---------------------------------------------------------------- the training step, written once
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
        g_first = self.hparams.update_order == "g_first"
        first_d_step = self.global_step * self.hparams.n_critic  # D's updates of the run so far
        with self.step_rng(self.device):
            if g_first:  # G's real batch (for feature matching) is the one its update precedes
                g_logs = self.generator_step(opt_g, batches[0])
            d_logs = [
                self.discriminator_step(opt_d, *batch, first_d_step + i) for i, batch in enumerate(batches)
            ]
            if not g_first:
                g_logs = self.generator_step(opt_g, batches[-1])
        r_t = self.augment.adjust(lambda t: self.trainer.strategy.reduce(t, reduce_op="sum"))
        if r_t is not None:
            g_logs["d/augment_rt"] = r_t.float()
        schedulers = self.lr_schedulers()
        for scheduler in schedulers if isinstance(schedulers, list) else [schedulers] if schedulers else []:
            scheduler.step()

        # The D figures are the mean over the n_critic updates of this generator step (that computed them: a
        # lazy regulariser's only over the updates it was applied at).
        keys = dict.fromkeys(key for log in d_logs for key in log)
        logs = {key: torch.stack([log[key] for log in d_logs if key in log]).mean() for key in keys} | g_logs
        self.log_dict(logs, prog_bar=True, batch_size=batch_size)
        self.log(
            "step", float(self.global_step), batch_size=batch_size
        )  # x-axis of every logged row: G steps

    # ---------------------------------------------------------------- when: one update of each network
    def discriminator_step(
        self, opt_d: LightningOptimizer, real: Tensor, labels: Tensor, d_step: int = 0
    ) -> dict[str, Tensor]:
        """D's ``d_step``-th update of the run (0-based) on one real batch. Returns figures to log."""
        fake_labels, z = self.training_noise(len(real))
        with torch.no_grad():
            fake = self.generator(z, fake_labels)
        with self.toggled_optimizer(opt_d):
            loss, logs = self.d_loss(real, labels, fake, fake_labels, d_step)
            opt_d.zero_grad(set_to_none=True)
            self.manual_backward(loss)
            # Lightning counts every LightningOptimizer.step() in global_step; stepping D through the strategy
            # (still running precision plugins and on_before_optimizer_step hooks) keeps it out of the count.
            self.trainer.strategy.optimizer_step(opt_d.optimizer, closure=do_nothing_closure)
        if self.hparams.clip_value > 0:
            clip_weights_(self.discriminator, self.hparams.clip_value)
        return logs

    def generator_step(self, opt_g: LightningOptimizer, real_batch: Batch) -> dict[str, Tensor]:
        """One G update on as many fresh samples as the real batch has (which feature matching compares them
        with); this is the step ``global_step`` counts."""
        real, labels = real_batch[0], real_batch[1]
        fake_labels, z = self.training_noise(len(real), paired=self.loss_terms.pairs_latents)
        with self.toggled_optimizer(opt_g):
            loss, logs = self.g_loss(self.generator(z, fake_labels), fake_labels, z, real, labels)
            opt_g.zero_grad(set_to_none=True)
            self.manual_backward(loss)
            opt_g.step()
        return logs
