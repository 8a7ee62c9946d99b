"""Which samples a GAN trained on, recorded in its checkpoints, and the check that keeps a classifier's
validation and test samples out of the generated data it trains on."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

if TYPE_CHECKING:
    from lightning_gan.data.base import GANDataModule

#: The flag that accepts a generator checkpoint that records no training data.
ALLOW_FLAG = "data.allow_unrecorded_generator"


def sample_hashes(samples: Tensor) -> Tensor:
    """A 64-bit hash of each sample's values, (N,) int64: which samples a split holds, comparable between
    data modules that load the same data with other split settings. Taken before any resizing.

    Example:
        >>> x = torch.arange(12.0).view(3, 4)
        >>> bool((sample_hashes(x) == sample_hashes(x[[2, 0, 1]])[[1, 2, 0]]).all())
        True
    """
    rows = samples.detach().to("cpu", torch.float32).contiguous().view(len(samples), -1).numpy()
    return torch.tensor(
        [int.from_bytes(hashlib.blake2b(row.tobytes(), digest_size=8).digest(), "little", signed=True)
         for row in rows],
        dtype=torch.int64,
    )  # fmt: skip


def check_no_leak(real: GANDataModule, generator_ckpt: Path, allow_unrecorded: bool = False) -> None:
    """Refuses a generator checkpoint whose training samples (or, for data of people, whose subjects)
    include any of ``real``'s validation or test samples, naming both and the counts: its samples would carry
    them into a classifier's training. A checkpoint that records nothing (written before the record existed)
    is refused too, unless ``allow_unrecorded``."""
    record: dict[str, Any] | None = torch.load(
        generator_ckpt, map_location="cpu", weights_only=True, mmap=True
    ).get("training_data")
    if record is None:
        if allow_unrecorded:
            return
        raise ValueError(
            f"data.generator_ckpt={str(generator_ckpt)!r} is not allowed: it records no training data "
            "(written before lightning-gan recorded it), so it may have trained on the classifier's "
            "validation or test samples; retrain the GAN on the classifier's training split, or pass "
            f"--{ALLOW_FLAG}=true to use it anyway"
        )
    seen = set(record["train_hashes"].tolist())
    leaks = []
    for split in ("val", "test"):
        hashes = real.split_hashes(split).tolist()
        shared = sum(h in seen for h in hashes)
        if shared:
            leaks.append(f"{shared:,} of the {len(hashes):,} {split} samples")
        groups = sorted(set(record.get("groups") or []) & set(real.groups(split) or []))
        if groups:
            leaks.append(f"the {split} subjects {groups}")
    if leaks:
        raise ValueError(
            f"data.generator_ckpt={str(generator_ckpt)!r} is not allowed: the GAN trained on "
            f"{' and '.join(leaks)} of data.real={type(real).__name__} ({record['data']} there), which would "
            "leak them into the classifier's training; train the GAN on the classifier's training split only "
            "(the same data settings: seed, fractions, subjects)"
        )
