"""Framework overhead per generator step: a plain PyTorch loop against GAN through the Lightning Trainer.

Both train the same DCGAN nets (same init), on the same digits, batch 128, n_critic 1, with identical math
(fake drawn under no_grad for D, D's parameters frozen during G's update), in one process, one after the
other, and repeated in alternation so that machine noise hits both. A step's time is the wall time between
the ends of consecutive steps (data loading included). Prints median seconds per step and the ratio.

    python benchmarks/step_overhead.py [--steps 60] [--warmup 10] [--rounds 3]
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time

import torch
from lightning.pytorch import Callback, Trainer, seed_everything

from lightning_gan.data import DigitsDataModule
from lightning_gan.losses import get_loss
from lightning_gan.models import GAN


def plain_loop(model: GAN, dm: DigitsDataModule, steps: int, device: str = "cpu") -> list[float]:
    """The loop one would copy from a blog, with the same math as GAN.training_step."""
    model.to(device)
    generator, discriminator = model.generator, model.discriminator
    loss = get_loss("bce")
    opt_g = torch.optim.Adam(generator.parameters(), lr=2e-4, betas=(0.5, 0.999))
    opt_d = torch.optim.Adam(discriminator.parameters(), lr=2e-4, betas=(0.5, 0.999))
    loader = dm.train_dataloader()
    times, done, last = [], 0, time.perf_counter()
    while done < steps:
        for real, _ in loader:
            real = real.to(device, non_blocking=True)
            with torch.no_grad():
                fake = generator(torch.randn(len(real), model.latent_dim, device=device))
            d_loss = loss.d(discriminator(real).logits, discriminator(fake).logits)
            opt_d.zero_grad(set_to_none=True)
            d_loss.backward()
            opt_d.step()

            discriminator.requires_grad_(False)
            g_loss = loss.g(
                discriminator(generator(torch.randn(len(real), model.latent_dim, device=device))).logits
            )
            opt_g.zero_grad(set_to_none=True)
            g_loss.backward()
            opt_g.step()
            discriminator.requires_grad_(True)
            assert torch.isfinite(d_loss) and torch.isfinite(g_loss)  # also waits for the GPU

            now = time.perf_counter()
            times.append(now - last)
            last, done = now, done + 1
            if done == steps:
                break
    return times


class StepTimer(Callback):
    def __init__(self):
        self.times, self.last = [], None

    def on_train_batch_end(self, trainer, *args):
        if trainer.strategy.root_device.type == "cuda":
            torch.cuda.synchronize()
        now = time.perf_counter()
        if self.last is not None:
            self.times.append(now - self.last)
        self.last = now


def lightning_loop(model: GAN, dm: DigitsDataModule, steps: int, **trainer_kwargs) -> list[float]:
    """Seconds per generator step of ``model`` trained by the Trainer (``accelerator="cpu"`` unless given)."""
    timer = StepTimer()
    trainer = Trainer(
        max_steps=steps + 1,
        accelerator=trainer_kwargs.pop("accelerator", "cpu"),
        devices=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[timer],
        log_every_n_steps=50,
        **trainer_kwargs,
    )
    trainer.fit(model, dm)
    return timer.times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    seed_everything(0, verbose=False)
    base = GAN(img_shape=(1, 28, 28))
    plain, framework = [], []
    for _ in range(args.rounds):
        # A fresh data module each time: one attached to a Trainer hands out per-step groups of batches.
        dm = DigitsDataModule(batch_size=128, seed=0)
        plain += plain_loop(copy.deepcopy(base), dm, args.warmup + args.steps)[args.warmup :]
        dm = DigitsDataModule(batch_size=128, seed=0)
        framework += lightning_loop(copy.deepcopy(base), dm, args.warmup + args.steps)[args.warmup :]
    p, f = statistics.median(plain), statistics.median(framework)
    print(f"torch threads: {torch.get_num_threads()}, steps timed per loop: {len(plain)} / {len(framework)}")
    print(f"plain PyTorch loop : {p * 1e3:8.2f} ms per generator step (median)")
    print(f"GAN via Trainer    : {f * 1e3:8.2f} ms per generator step (median)")
    print(f"ratio (framework / plain): {f / p:.3f}  -> overhead {100 * (f / p - 1):+.1f}% (target <= +5%)")


if __name__ == "__main__":
    main()
