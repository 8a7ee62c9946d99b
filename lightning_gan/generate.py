"""``lightning-gan generate``: draw samples from a trained checkpoint into an ``.npz`` plus a PNG grid."""

from __future__ import annotations

import pickle
import zipfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from jsonargparse import ArgumentParser
from torch import nn
from tqdm import tqdm

from lightning_gan.images import sample_picture, save_png
from lightning_gan.latent import check_truncation
from lightning_gan.models import GAN
from lightning_gan.models.class_head import DiscriminatorClassifier
from lightning_gan.validation import require, require_int


def load_gan(ckpt_path: str | Path, map_location: str | torch.device = "cpu") -> GAN:
    """Loads any GAN preset from a checkpoint; errors name the file and what is wrong with it."""
    path = Path(ckpt_path)
    if not path.is_file():
        raise FileNotFoundError(f"ckpt_path={str(path)!r}: no such checkpoint file")
    try:
        # A LightningCLI checkpoint records the preset's class path, so the base class loads any preset.
        return GAN.load_from_checkpoint(path, map_location=map_location)
    except (pickle.UnpicklingError, EOFError, RuntimeError, zipfile.BadZipFile, KeyError) as err:
        raise ValueError(
            f"ckpt_path={str(path)!r} is not a readable lightning-gan checkpoint "
            f"({type(err).__name__}: {err})"
        ) from err


def load_discriminator(ckpt_path: str | Path, map_location: str | torch.device = "cpu") -> nn.Module:
    """A checkpoint's D as a plain classifier (:class:`DiscriminatorClassifier`, in eval mode): images in
    [-1, 1] in, class logits out. For ACGAN and SSGAN checkpoints, whose D has a class head; its BatchNorm
    statistics are those of real training images, which every checkpoint holds for D."""
    model = load_gan(ckpt_path, map_location)
    require(
        bool(model.class_head),
        "ckpt_path",
        str(ckpt_path),
        f"its D has no class head (model.conditioning={model.conditioning!r}): use an acgan or ssgan one",
    )
    return DiscriminatorClassifier(model.discriminator).eval().requires_grad_(False)


def generate(
    ckpt_path: str,
    num_samples: int = 1000,
    output: str = "samples.npz",
    seed: int = 0,
    batch_size: int = 500,
    no_ema: bool = False,
    class_label: int | None = None,
    per_class: int | None = None,
    truncation: float | None = None,
) -> Path:
    """Samples a trained generator.

    Writes ``output`` (.npz) with ``images`` float32 (N, C, H, W) in [-1, 1] (plus ``labels`` int64 (N,) for
    conditional models) and a grid of the first 64 samples beside it (same name, .png); signal windows are
    drawn as line plots of their channels (:func:`lightning_gan.images.sample_picture`).

    Args:
        ckpt_path: Checkpoint written by ``lightning-gan fit``.
        num_samples: How many samples.
        output: Path of the .npz file to write.
        seed: Seeds the latent vectors (drawn on the CPU, so the same seed gives the same z on any device)
            and G's own noise at sampling (``block_noise``, ``dropout_at_sampling``).
        batch_size: Samples per forward pass.
        no_ema: Sample with G's trained weights even when the checkpoint holds an EMA of them.
        class_label: Conditional models: all samples of this class (default: uniformly drawn classes).
        per_class: Conditional models: this many samples of each class, in class order (num_samples is
            then ignored).
        truncation: Draw z from the gaussian truncated at this |z| (coordinates beyond it drawn again):
            samples nearer the mode, less varied. Needs a model trained with ``--model.latent gaussian``.
    """
    require_int("num_samples", num_samples, 1)
    require_int("batch_size", batch_size, 1)
    check_truncation(truncation)
    out = Path(output)
    if out.suffix != ".npz":
        raise ValueError(f"output={output!r} is not allowed: the file name must end in .npz")
    device = "cuda" if torch.cuda.is_available() else "cpu"
    model = load_gan(ckpt_path, map_location=device)
    rng = torch.Generator().manual_seed(seed)
    labels = _labels(model, num_samples, class_label, per_class, rng)
    if labels is not None:
        num_samples = len(labels)
    # every z in one draw: torch's CPU randn takes another path for fewer than 16 numbers, so drawing per
    # batch would make the samples depend on the batch size
    latents = model.sample_latent(num_samples, generator=rng, truncation=truncation).cpu()
    chunks = []
    # G's own randomness at sampling (block_noise, dropout_at_sampling) also follows the seed
    with torch.random.fork_rng(devices=[torch.cuda.current_device()] if device == "cuda" else []):
        torch.manual_seed(seed)
        for start in tqdm(range(0, num_samples, batch_size), desc="generate", unit="batch"):
            n = min(batch_size, num_samples - start)
            z = latents[start : start + n].to(device)
            batch_labels = None if labels is None else labels[start : start + n].to(device)
            chunks.append(model.sample(n, batch_labels, z=z, ema=not no_ema).float().cpu())
    images = torch.cat(chunks)
    arrays = {"images": images.numpy().astype(np.float32)}
    if labels is not None:
        arrays["labels"] = labels.numpy().astype(np.int64)
    out.parent.mkdir(parents=True, exist_ok=True)
    np.savez(out, **arrays)
    if per_class is not None:  # one row per class, up to 16 of each
        shown = min(per_class, 16)
        rows = images.view(model.num_classes, per_class, *images.shape[1:])[:, :shown]
        names = [f"class {k}" for k in range(model.num_classes)]
        save_png(sample_picture(rows.flatten(0, 1), nrow=shown, row_names=names), out.with_suffix(".png"))
    else:
        save_png(sample_picture(images[:64]), out.with_suffix(".png"))
    print(f"wrote {num_samples} samples to {out} and a grid to {out.with_suffix('.png')}")
    return out


def _labels(
    model: GAN, num_samples: int, class_label: int | None, per_class: int | None, rng: torch.Generator
) -> torch.Tensor | None:
    """The class of each sample a conditional model is asked for; None for an unconditional one."""
    asked = "class_label" if class_label is not None else "per_class" if per_class is not None else None
    if not model.conditional:
        require(
            asked is None,
            asked or "",
            class_label if per_class is None else per_class,
            f"the model is unconditional (conditioning={model.conditioning!r}): no class can be asked",
        )
        return None
    require(
        class_label is None or per_class is None, "class_label", class_label, "give class_label or per_class"
    )
    if class_label is not None:
        require(
            0 <= class_label < model.num_classes,
            "class_label",
            class_label,
            f"classes are 0..{model.num_classes - 1}",
        )
        return torch.full((num_samples,), class_label, dtype=torch.long)
    if per_class is not None:
        require_int("per_class", per_class, 1)
        return torch.arange(model.num_classes).repeat_interleave(per_class)
    return torch.randint(model.num_classes, (num_samples,), generator=rng)


def generate_cli(args: Sequence[str]) -> None:
    """Parses ``lightning-gan generate`` arguments; bad values and unreadable files are usage errors."""
    parser = ArgumentParser(prog="lightning-gan generate", description=generate.__doc__.split("\n")[0])
    parser.add_function_arguments(generate, as_positional=False)
    cfg = parser.parse_args(list(args))
    try:
        generate(**cfg.as_dict())
    except (ValueError, FileNotFoundError) as err:
        parser.error(str(err))
