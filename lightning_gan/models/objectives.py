"""What the GAN's training step minimises: D's and G's objectives for any conditioning mode and loss, with
the enabled stabilisers (:class:`lightning_gan.models.terms.LossTerms`) added in one place."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from lightning_gan.models.terms import Terms
from lightning_gan.nets import DOut


class GANObjectives:
    """The objectives of :class:`lightning_gan.models.GAN` (a mixin: ``hparams``, ``generator``,
    ``discriminator``, ``adversarial_loss``, ``loss_terms`` and the conditioning switches are the GAN's)."""

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

    def d_view(self, x: Tensor) -> Tensor:
        """What D sees of a sample in training: ``x`` through the input transforms (augmentation, then
        instance noise)."""
        share = self.share
        return self.instance_noise(self.augment(x, share), self.global_step, share)

    @staticmethod
    def add_terms(loss: Tensor, logs: dict[str, Tensor], terms: Terms) -> tuple[Tensor, dict[str, Tensor]]:
        """The one place where the enabled stabilisers join an objective: ``loss + weight * value`` for each,
        and the unweighted value logged as ``loss/<name>``."""
        for name, (weight, value) in terms.items():
            loss = loss + weight * value
            logs[f"loss/{name}"] = value.detach()
        return loss, logs

    def d_loss(
        self, real: Tensor, labels: Tensor, fake: Tensor, fake_labels: Tensor | None, d_step: int = 0
    ) -> tuple[Tensor, dict[str, Tensor]]:
        """D's objective on a real batch (with its labels, -1 = hidden) and a generated one, at D's
        ``d_step``-th update of the run (0-based; lazy regularisers use it)."""
        hp = self.hparams
        real_cond = labels if self.d_takes_label else None
        fake_cond = fake_labels if self.d_takes_label else None
        real_out = self.discriminator(self.d_view(real), real_cond)
        fake_out = self.discriminator(self.d_view(fake), fake_cond)
        real_scores, fake_scores = self.scores(real_out), self.scores(fake_out)
        adversarial = self.adversarial_loss.d(real_scores, fake_scores)
        # SSGAN: L_D = L_label + (w/2)(L_unlabel + L_fake); every other mode weighs the adversarial loss 1.
        loss = adversarial * (hp.unsupervised_weight / 2 if self.conditioning == "ssgan" else 1.0)
        logs = {
            "loss/d": adversarial.detach(),
            "d/real_score": real_scores.detach().mean(),
            "d/fake_score": fake_scores.detach().mean(),
        }
        if self.instance_noise.kind != "none":
            logs["d/instance_noise"] = torch.tensor(self.instance_noise.scale_at(self.global_step))
        if self.augment.enabled:
            self.augment.observe(real_scores)
            logs["d/augment_p"] = self.augment.p.float()
        if self.class_head:
            class_real = self.class_loss(real_out.class_logits, labels)
            loss = loss + hp.class_weight * class_real
            logs["loss/class_real"] = class_real.detach()
            if self.conditioning == "acgan" and hp.fake_class_loss:  # D classifies samples by asked class
                class_fake = self.class_loss(fake_out.class_logits, fake_labels)
                loss = loss + hp.class_weight * class_fake
                logs["loss/class_fake"] = class_fake.detach()
        scaler = getattr(self.trainer.precision_plugin, "scaler", None) if self._trainer else None
        terms = self.loss_terms.d_terms(
            self.discriminator,
            lambda x: self.scores(self.discriminator(self.d_view(x), real_cond)),
            real,
            fake,
            d_step,
            scaler,
        )
        return self.add_terms(loss, logs, terms)

    def g_loss(
        self,
        fake: Tensor,
        fake_labels: Tensor | None,
        z: Tensor | None = None,
        real: Tensor | None = None,
        labels: Tensor | None = None,
    ) -> tuple[Tensor, dict[str, Tensor]]:
        """G's objective on its samples ``fake`` = G(z) of the asked classes; feature matching compares D's
        features of them with those of the ``real`` batch (with its ``labels``)."""
        terms = self.loss_terms
        fake_cond = fake_labels if self.d_takes_label else None
        out, fake_features = terms.features(self.discriminator, self.d_view(fake), fake_cond)
        adversarial = self.adversarial_loss.g(self.scores(out))
        logs = {"loss/g": adversarial.detach()}
        # Feature matching as G's whole objective (Salimans et al. 2016, sec. 5): no adversarial G term.
        loss = adversarial.new_zeros(()) if terms.fm_only else adversarial
        if self.conditioning == "acgan":
            class_fake = self.class_loss(out.class_logits, fake_labels)
            loss = loss + self.hparams.class_weight * class_fake
            logs["loss/g_class"] = class_fake.detach()
        real_features = None
        if terms.needs_real_batch_for_g:
            with torch.no_grad():
                real_cond = labels if self.d_takes_label else None
                _, real_features = terms.features(self.discriminator, self.d_view(real), real_cond)
        return self.add_terms(
            loss, logs, terms.g_terms(self.generator, fake_features, real_features, fake, z)
        )
