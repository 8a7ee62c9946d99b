"""Feature extractors for IS, FID and KID that need no download: a judge classifier, the FID InceptionV3."""

from lightning_gan.metrics.inception import FIDInceptionV3, load_fid_inception
from lightning_gan.metrics.judge import (
    JudgeFeatures,
    cached_digits_judge,
    load_judge,
    save_judge,
    train_judge,
)

__all__ = [
    "FIDInceptionV3",
    "JudgeFeatures",
    "cached_digits_judge",
    "load_fid_inception",
    "load_judge",
    "save_judge",
    "train_judge",
]
