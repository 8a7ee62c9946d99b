"""A classifier of the data's own domain as the feature extractor of IS, FID and KID: no InceptionV3 needed.

On digits, a small CNN trained on the digits judges samples better than an ImageNet network that never saw
one (and whose weights cannot be downloaded here). :class:`JudgeFeatures` hands a trained
:class:`~lightning_gan.models.Classifier` to torchmetrics; :func:`cached_digits_judge` trains one on the
bundled digits on first use and caches it, keyed by everything the judge depends on.
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import tempfile
from pathlib import Path
from typing import Literal

import lightning
import torch
import torch.nn.functional as F
from lightning.pytorch import LightningDataModule
from lightning.pytorch.strategies import Strategy
from lightning.pytorch.utilities import rank_zero_info
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset, Subset
from tqdm import tqdm

from lightning_gan.data import DigitsDataModule
from lightning_gan.data.sampler import seeded_generator
from lightning_gan.data.samples import collate_images
from lightning_gan.models.classifier import Classifier

JudgeOutput = Literal["logits", "features"]

#: Bump when the judge's network or training changes, so that old cache files are no longer used.
JUDGE_FORMAT = 1
JUDGE_EPOCHS = 3  # 98% validation accuracy on the bundled digits
JUDGE_SEED = 0
JUDGE_BATCH_SIZE = 64  # fixed, not the GAN's batch size, so that one cached judge serves every GAN run
EVAL_BATCH_SIZE = 500


class JudgeFeatures(nn.Module):
    """A trained :class:`Classifier` as torchmetrics' ``feature=`` module, always in eval mode, without grad.

    Args:
        classifier: The judge; its parameters are set to not require grad.
        output: ``"logits"`` (N, num_classes) for the Inception score, ``"features"`` (N, feature_dim), the
            penultimate layer, for FID and KID.

    Example:
        >>> judge = JudgeFeatures(Classifier(feature_dim=16), "features")
        >>> judge.num_features, judge(torch.zeros(2, 1, 28, 28, dtype=torch.uint8)).shape
        (16, torch.Size([2, 16]))
    """

    def __init__(self, classifier: Classifier, output: JudgeOutput) -> None:
        super().__init__()
        if output not in ("logits", "features"):
            raise ValueError(f"output={output!r} is not allowed: choose logits or features")
        self.classifier = classifier.requires_grad_(False)
        self.output = output
        # torchmetrics reads this instead of running a dummy image through the network
        self.num_features: int = classifier.num_classes if output == "logits" else classifier.feature_dim
        self.eval()

    def train(self, mode: bool = True) -> JudgeFeatures:
        """Stays in eval mode (as torchmetrics' ``NoTrainInceptionV3``): BN must keep its running statistics,
        and torchmetrics' ``Metric.train()`` would otherwise switch the judge to training."""
        return super().train(False)

    @torch.no_grad()
    def forward(self, x: Tensor) -> Tensor:
        """Images (N, C, H, W), float in [-1, 1] or uint8 in [0, 255] -> (N, num_features) float32."""
        if tuple(x.shape[1:]) != self.classifier.img_shape:
            raise ValueError(
                f"images of shape {tuple(x.shape[1:])} do not match the judge's "
                f"img_shape={self.classifier.img_shape}: train a judge on this data"
            )
        if x.dtype == torch.uint8:
            x = x.float() / 127.5 - 1  # [0, 255] -> [-1, 1], the range the judge was trained on
        out = self.classifier(x) if self.output == "logits" else self.classifier.features(x)
        return out.float()


def load_judge(path: str | Path, map_location: str | torch.device = "cpu") -> Classifier:
    """Loads a :class:`Classifier` checkpoint (``lightning-gan fit --config configs/classifier_digits.yaml``,
    or a cached judge), in eval mode.

    Raises:
        FileNotFoundError: If ``path`` is not a file.
        ValueError: If the file is unreadable or not a Classifier checkpoint.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"judge checkpoint {str(path)!r}: no such file")
    try:
        classifier = Classifier.load_from_checkpoint(path, map_location=map_location)
    # A foreign or damaged file fails in pickle, in torch's zip reader, in the hparams or in the strict
    # state_dict load; all of them mean the same thing to the user.
    except (
        RuntimeError,
        KeyError,
        TypeError,
        ValueError,
        AttributeError,
        EOFError,
        pickle.UnpicklingError,
    ) as err:
        raise ValueError(f"judge checkpoint {str(path)!r} is not a Classifier checkpoint: {err}") from err
    return classifier.eval()


@torch.no_grad()
def judge_accuracy(classifier: Classifier, dataset: Dataset) -> float:
    """Share of ``dataset``'s (image, label) items that ``classifier`` labels right, in eval mode."""
    was_training = classifier.training
    classifier.eval()
    correct = total = 0
    try:
        # a generator of its own: a DataLoader draws its workers' base seed from it, not from the global one
        loader = DataLoader(
            dataset, batch_size=EVAL_BATCH_SIZE, collate_fn=collate_images, generator=seeded_generator(0)
        )
        for images, labels in loader:
            correct += (classifier(images).argmax(dim=1) == labels).sum().item()
            total += len(labels)
    finally:
        classifier.train(was_training)
    return correct / total


def train_judge(
    datamodule: LightningDataModule,
    *,
    epochs: int = JUDGE_EPOCHS,
    seed: int = JUDGE_SEED,
    feature_dim: int = 64,
    progress: bool = True,
) -> Classifier:
    """Trains a :class:`Classifier` on ``datamodule.train_dataset``; logs its accuracy on ``val_dataset``.

    A plain PyTorch loop, not a Trainer: this runs inside a running Trainer's callback, where a nested Trainer
    would fight the outer one over loggers, progress bars and the strategy. It runs on the CPU, so that the
    same judge comes out on every machine, and inside ``torch.random.fork_rng``: the caller's random stream
    (the GAN's training) is the same whether or not a judge was trained.

    Args:
        datamodule: Has ``train_dataset``/``val_dataset`` :class:`~lightning_gan.data.samples.SplitDataset`
            splits, ``img_shape`` and ``num_classes`` (any :class:`~lightning_gan.data.GANDataModule`).
        epochs: Passes over the training set.
        seed: Seeds the initial weights and the batch order.
        feature_dim: Size of the penultimate features (FID/KID's feature space).
        progress: Show a tqdm progress bar.

    Returns:
        The trained classifier, in eval mode.
    """
    if not isinstance(epochs, int) or epochs < 1:
        raise ValueError(f"epochs={epochs!r} is not allowed: must be an integer >= 1")
    # enable_grad: the metric callback calls this from its @torch.no_grad() evaluation
    with torch.random.fork_rng(devices=[]), torch.enable_grad():
        torch.manual_seed(seed)  # the initial weights
        classifier = Classifier(datamodule.img_shape, datamodule.num_classes, feature_dim=feature_dim)
        optimizer = classifier.configure_optimizers()
        training = datamodule.train_dataset.unaugmented()  # the images as they are: no flips, no random crops
        known = torch.nonzero(training.labels >= 0).flatten()  # hidden labels (-1) are never used
        loader = DataLoader(
            Subset(training, known.tolist()),
            batch_size=JUDGE_BATCH_SIZE,
            shuffle=True,
            generator=seeded_generator(seed),
            collate_fn=collate_images,
            num_workers=getattr(datamodule, "num_workers", 0),
        )
        classifier.train()
        with tqdm(
            total=epochs * len(loader), desc="training the judge", unit="batch", disable=not progress
        ) as bar:
            for _ in range(epochs):
                for images, labels in loader:
                    loss = F.cross_entropy(classifier(images), labels)
                    optimizer.zero_grad(set_to_none=True)
                    loss.backward()
                    optimizer.step()
                    bar.set_postfix(loss=f"{loss.item():.3f}", refresh=False)
                    bar.update()
    classifier.eval()
    accuracy = judge_accuracy(classifier, datamodule.val_dataset)
    rank_zero_info(
        f"Trained a judge classifier on {len(known)} labelled images, epochs={epochs}: "
        f"{accuracy:.2%} accuracy on the {len(datamodule.val_dataset)} validation images"
    )
    return classifier


def default_cache_dir() -> Path:
    """``$LIGHTNING_GAN_CACHE``, else ``~/.cache/lightning_gan``."""
    env = os.environ.get("LIGHTNING_GAN_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "lightning_gan"


def judge_cache_path(datamodule: LightningDataModule, cache_dir: Path, feature_dim: int) -> Path:
    """``cache_dir/judge-digits-<sha1[:12]>.ckpt``, the hash taken over everything the judge depends on."""
    cls = type(datamodule)
    key = {
        "format": JUDGE_FORMAT,
        "data": f"{cls.__module__}.{cls.__qualname__}",
        "seed": datamodule.seed,  # the split, so which images are training and which validation
        "val_fraction": datamodule.val_fraction,
        "test_fraction": datamodule.test_fraction,
        "image_size": datamodule.image_size,
        "img_shape": list(datamodule.img_shape),
        "feature_dim": feature_dim,
        "epochs": JUDGE_EPOCHS,
        "judge_seed": JUDGE_SEED,
    }
    if getattr(datamodule, "crop", None) is not None:  # only then: the digests of judges cached before stay
        key["crop"] = [datamodule.crop, datamodule.crop_mode]
    digest = hashlib.sha1(json.dumps(key, sort_keys=True).encode()).hexdigest()[:12]
    return cache_dir / f"judge-digits-{digest}.ckpt"


def save_judge(classifier: Classifier, path: str | Path) -> None:
    """Writes a checkpoint that :func:`load_judge` reads; a crash mid-write never leaves a partial file."""
    checkpoint = {
        "state_dict": classifier.state_dict(),
        Classifier.CHECKPOINT_HYPER_PARAMS_KEY: dict(classifier.hparams),
        "pytorch-lightning_version": lightning.__version__,
    }
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # a temporary file in the same folder, so that os.replace is a rename on one file system: atomic
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as file:
            torch.save(checkpoint, file)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def cached_digits_judge(
    datamodule: DigitsDataModule,
    cache_dir: str | Path | None = None,
    *,
    feature_dim: int = 64,
    strategy: Strategy | None = None,
) -> Classifier:
    """The judge for the bundled digits: loaded from the cache, or trained by :func:`train_judge` and cached.

    Args:
        datamodule: The digits data module of the run; its split decides what the judge is trained on.
        cache_dir: Folder of cached judges; default ``$LIGHTNING_GAN_CACHE`` or ``~/.cache/lightning_gan``.
        feature_dim: Size of the features FID/KID use; must be below the number of validation images, the
            real set FID is computed against, or its covariance is singular.
        strategy: The Trainer's strategy. With several processes only global rank 0 trains and writes the
            judge; every rank waits at a barrier and then loads the file (the cache folder must be shared).

    Raises:
        TypeError: If ``datamodule`` is not a :class:`~lightning_gan.data.DigitsDataModule`.
        ValueError: If ``feature_dim`` is not below the number of validation images.
    """
    if not isinstance(datamodule, DigitsDataModule):
        raise TypeError(
            f"cached_digits_judge needs a DigitsDataModule, got {type(datamodule).__name__}: for other data, "
            "train a judge with `lightning-gan fit --config configs/classifier_digits.yaml --data ...`"
        )
    if datamodule.num_labelled is not None or datamodule.train_per_class is not None:
        # The judge is a measuring instrument, as ImageNet's InceptionV3 is for FID: it learns from every real
        # label of the same training split, whatever the GAN under test is allowed to see.
        datamodule = DigitsDataModule(
            seed=datamodule.seed,
            val_fraction=datamodule.val_fraction,
            test_fraction=datamodule.test_fraction,
            image_size=datamodule.image_size,
        )
    num_val = len(datamodule.val_dataset)
    if not isinstance(feature_dim, int) or not 1 <= feature_dim < num_val:
        raise ValueError(
            f"feature_dim={feature_dim!r} is not allowed: must be an integer >= 1 and below the {num_val} "
            "validation images, or FID's covariance of the real features is singular "
            "(raise data.val_fraction or lower feature_dim)"
        )
    path = judge_cache_path(
        datamodule, Path(cache_dir) if cache_dir is not None else default_cache_dir(), feature_dim
    )
    distributed = strategy is not None and strategy.world_size > 1
    if not path.is_file() and (not distributed or strategy.global_rank == 0):
        judge = train_judge(datamodule, feature_dim=feature_dim)
        save_judge(judge, path)
        rank_zero_info(f"Cached the digits judge at {path}")
    if distributed:
        strategy.barrier(
            "cached_digits_judge"
        )  # rank 0's file is complete (os.replace) before anyone reads it
    return load_judge(path)
