"""Lightning's streaming format (litdata) for data on a cluster's networked file system.

``lightning-gan convert`` writes the splits of any data module once, as litdata chunks, with
what the data module needs to know without reading them: class names, image shape, labels and sample
identities. :class:`StreamingDataModule` reads them back: the training split through ``StreamingDataset`` /
``StreamingDataLoader`` (chunks streamed and cached, shuffled, each DDP rank and worker reading its own
share, resumable mid-epoch), validation and test by random access. Converting 200,000 small files into a few
hundred chunks is what makes a networked file system fast.
"""

from __future__ import annotations

import itertools
import json
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import litdata.helpers
import torch
from litdata import StreamingDataLoader, StreamingDataset
from litdata.streaming.writer import BinaryWriter
from torch import Tensor
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from lightning_gan.data.base import SPLITS, GANDataModule
from lightning_gan.data.sampler import StepLoader, seeded_generator
from lightning_gan.data.samples import Samples, SplitDataset, collate_images, crop_and_resize
from lightning_gan.validation import require, require_int

# litdata asks PyPI for a newer litdata each time a StreamingDataset is built (a request with a 30 s timeout,
# in every DataLoader worker): nothing may reach the network at run time, and clusters often have none.
litdata.helpers._get_newer_version = lambda current: None

#: What ``convert`` writes beside the chunks: the data set's description, and the labels and identities.
META, INDEX = "lightning_gan.json", "splits.pt"
FORMAT = 1


def _write(dataset: SplitDataset, directory: Path, num_workers: int, chunk_bytes: str) -> None:
    """Writes ``dataset``'s items, in order, as litdata chunks and index under ``directory``.

    Through litdata's ``BinaryWriter``, the writer that its ``optimize`` drives: ``optimize`` spends about
    14 ms per item on its own process plumbing (2,000 28x28 items: 28 s against 0.24 s for the writer), which
    for 200,000 images is most of an hour. The items are read by a DataLoader's workers instead.
    """
    directory.mkdir(parents=True)
    writer = BinaryWriter(str(directory), chunk_bytes=chunk_bytes)
    # batch_size=None: items one at a time, uncollated; a generator of its own leaves the global RNG alone
    loader = DataLoader(dataset, batch_size=None, num_workers=num_workers, generator=seeded_generator(0))
    items = tqdm(loader, total=len(dataset), desc=f"writing {directory}", unit="img")
    for position, (image, label) in enumerate(items):
        writer[position] = {"image": image.numpy(), "label": label, "position": position}
    writer.done()
    writer.merge()


def convert(
    data: GANDataModule,
    output_dir: str | Path,
    num_workers: int | None = None,
    chunk_bytes: str = "64MB",
    overwrite: bool = False,
) -> Path:
    """Writes ``data``'s train, validation and test splits in litdata's format under ``output_dir``.

    Images are stored as the data module prepares them (centre crop and resize, no augmentation; uint8 for
    pixels); the split is the data module's (its seed and fractions). Returns ``output_dir``.

    Args:
        data: Any data module: an image folder, an array file, the digits.
        output_dir: A new (or empty) folder, or with ``overwrite`` an earlier conversion to replace.
        num_workers: DataLoader worker processes that read (decode, crop, resize) the samples; None: the
            data module's ``num_workers``.
        chunk_bytes: Size of each chunk file.
        overwrite: Replace what ``output_dir`` holds.
    """
    out = Path(output_dir)
    num_workers = data.num_workers if num_workers is None else num_workers
    require_int("num_workers", num_workers, 0)
    if out.exists() and any(out.iterdir()):
        require(overwrite and (out / META).is_file(), "output_dir", str(out),
                "must be a new or empty folder, or an earlier conversion with --overwrite=true")  # fmt: skip
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    index = {}
    for split in SPLITS:
        dataset = getattr(data, f"{split}_dataset").unaugmented()
        index[split] = {"labels": dataset.labels.clone(), "keys": dataset.keys()}
        if len(dataset):
            _write(dataset, out / split, num_workers, chunk_bytes)
    torch.save(index, out / INDEX)
    meta = {
        "format": FORMAT,
        "class_names": data.class_names,
        "img_shape": list(data.img_shape),
        "counts": {split: len(index[split]["labels"]) for split in SPLITS},
        "source": {"data": type(data).__name__, "seed": data.seed, "val_fraction": data.val_fraction,
                   "test_fraction": data.test_fraction, "image_size": data.image_size, "crop": data.crop},
    }  # fmt: skip
    (out / META).write_text(json.dumps(meta, indent=2))  # last: a folder without it is an unfinished one
    return out


class StreamedSamples(Samples):
    """A converted data set's three splits, one after the other, read by random access (validation, test).

    Labels and identities come from the index written by :func:`convert`; no chunk is read to know them.
    """

    def __init__(self, root: Path, meta: dict[str, Any], cache_dir: str | None) -> None:
        index = torch.load(root / INDEX, weights_only=True)
        self.root, self.cache_dir, self.class_names = root, cache_dir, list(meta["class_names"])
        self.counts = [meta["counts"][split] for split in SPLITS]
        self.labels = torch.cat([index[split]["labels"] for split in SPLITS])
        self._keys = torch.cat([index[split]["keys"] for split in SPLITS])
        self.shape = tuple(meta["img_shape"])
        self._datasets: dict[str, StreamingDataset] = {}

    @property
    def native_shape(self) -> tuple[int, int, int]:
        return self.shape

    def locate(self, index: int) -> tuple[str, int]:
        """The split that sample ``index`` lies in, and its position there."""
        for split, count in zip(SPLITS, self.counts, strict=True):
            if index < count:
                return split, index
            index -= count
        raise IndexError(f"sample {index} is beyond the {sum(self.counts)} samples of {self.root}")

    def describe(self, index: int) -> str:
        split, position = self.locate(index)
        return f"{self.root / split}[{position}]"

    def read(self, index: int) -> Tensor:
        split, position = self.locate(index)
        if split not in self._datasets:  # opened where it is read: in each DataLoader worker
            self._datasets[split] = StreamingDataset(str(self.root / split), cache_dir=self.cache_dir)
        return torch.from_numpy(self._datasets[split][position]["image"].copy())

    def keys(self, indices: Tensor) -> Tensor:
        return self._keys[indices]

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_datasets": {}}  # workers open their own readers


class TrainingStream(StreamingDataset):
    """The training split streamed: each item prepared and augmented as ``split`` does, seeded by the epoch
    and the sample's position, so that the same images come back at any ``num_workers`` and after a resume."""

    def __init__(self, input_dir: str, split: SplitDataset, **kwargs: Any) -> None:
        super().__init__(input_dir, **kwargs)
        self.split = split

    def __getitem__(self, index: Any) -> tuple[Tensor, int]:
        item = super().__getitem__(index)
        position = int(item["position"])
        image = torch.from_numpy(item["image"].copy())  # litdata's arrays are read-only views of a chunk
        image = crop_and_resize(image, self.split.centre_crop, self.split.size, lambda: f"item {position}")
        return self.split.augment(image, (self.current_epoch, position)), int(self.split.labels[position])


class EpochLoader(StreamingDataLoader):
    """A ``StreamingDataLoader`` that Lightning tells the epoch: it counts its epochs itself, one per pass,
    which a resumed run would otherwise start again from the first."""

    def set_epoch(self, epoch: int) -> None:
        self.current_epoch = epoch  # __iter__ adds one unless it is resuming an epoch


class StreamingDataModule(GANDataModule):
    """A data set converted by ``lightning-gan convert``, streamed with litdata.

    The split, and anything the source data module did to the images (crop, resize), are fixed by the
    conversion; ``image_size``, ``crop``, ``crop_mode`` and ``hflip`` apply on top. Validation and test are
    read by random access, in order, and are not held in memory (``real_images`` holds at most
    :attr:`~GANDataModule.REAL_IMAGES_LIMIT` of them).

    Args:
        root: The folder that ``lightning-gan convert`` wrote.
        cache_dir: litdata's cache folder for chunks (used when litdata copies chunks instead of reading them
            in place).

    The other arguments are :class:`GANDataModule`'s; ``val_fraction``, ``test_fraction``, ``train_per_class``
    (and the source's own, such as ``root``) are set when converting.
    """

    def __init__(
        self,
        root: str,
        batch_size: int = 128,
        num_workers: int = 0,
        seed: int = 0,
        image_size: int | None = None,
        num_labelled: int | None = None,
        judge: str | None = None,
        crop: int | None = None,
        crop_mode: str = "center",
        hflip: bool = False,
        cache_dir: str | None = None,
    ) -> None:
        self.root, self.cache_dir = root, cache_dir
        meta_path = Path(root) / META
        if not meta_path.is_file():
            raise FileNotFoundError(
                f"data.root={root!r} holds no {META}: not a folder that lightning-gan convert finished"
            )
        self.meta = json.loads(meta_path.read_text())
        require(
            self.meta.get("format") == FORMAT,
            "data.root",
            root,
            f"was written in another format: {self.meta}",
        )
        super().__init__(
            batch_size=batch_size, num_workers=num_workers, seed=seed, val_fraction=0.0, test_fraction=0.0,
            image_size=image_size, num_labelled=num_labelled, judge=judge, crop=crop, crop_mode=crop_mode,
            hflip=hflip, cache=False,
        )  # fmt: skip

    def load_samples(self) -> StreamedSamples:
        return StreamedSamples(Path(self.root), self.meta, self.cache_dir)

    def split_samples(self, labels: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        counts = self.meta["counts"]
        bounds = torch.tensor([0, counts["train"], counts["val"], counts["test"]]).cumsum(0).tolist()
        return tuple(torch.arange(start, stop) for start, stop in itertools.pairwise(bounds))

    def train_dataloader(self) -> StepLoader:
        """Shuffled chunks of the training split, each rank and worker reading its own; resumes mid-epoch."""
        split = self.train_dataset
        dataset = TrainingStream(
            str(Path(self.root) / "train"), split, shuffle=True, drop_last=True, seed=self.seed,
            cache_dir=self.cache_dir,
        )  # fmt: skip
        loader = EpochLoader(
            dataset, batch_size=self.batch_size, num_workers=self.num_workers, collate_fn=collate_images,
            drop_last=True,
        )  # fmt: skip
        if self._resume_state is not None:
            self._resume(loader, dataset)
        batches_per_step = self._batches_per_step()
        steps = StepLoader(loader, batches_per_step=batches_per_step)
        if len(steps) == 0:
            raise ValueError(
                f"data.batch_size={self.batch_size} gives {len(loader)} batches per epoch on this device, "
                f"fewer than the {batches_per_step or 1} batches one training step consumes"
            )
        return steps

    def _resume(self, loader: EpochLoader, dataset: TrainingStream) -> None:
        """Puts ``loader`` where the checkpoint's epoch stopped: litdata's state rebuilt from the samples that
        training consumed (the loader's own count runs ahead of training, as workers prefetch)."""
        state, self._resume_state = self._resume_state, None
        epoch, consumed = state["epoch"], state["consumed"]
        loader.set_epoch(epoch)
        batches = consumed // self.batch_size
        if not 0 < consumed < len(dataset):
            return  # at an epoch's start or end: Lightning's set_epoch places it
        dataset.set_epoch(epoch + 1)  # the epoch the loader's __iter__ would count
        loader.load_state_dict({
            "dataset": dataset.state_dict(consumed, self.num_workers, self.batch_size),
            "current_epoch": epoch + 1,
            "num_samples_yielded": consumed,
            "latest_worker_idx": (batches - 1) % max(self.num_workers, 1),
        })  # fmt: skip


def convert_cli(args: Sequence[str]) -> None:
    """``lightning-gan convert``: the data module as ``fit`` takes it (``--data CLASS --data.KEY VALUE`` or a
    config file), then :func:`convert`'s arguments. Bad values are usage errors, without a traceback."""
    from jsonargparse import ActionConfigFile, ArgumentParser

    parser = ArgumentParser(prog="lightning-gan convert", description=convert.__doc__.split("\n")[0])
    parser.add_argument("--config", action=ActionConfigFile)
    parser.add_subclass_arguments(GANDataModule, "data", required=True)
    parser.add_function_arguments(convert, skip={"data"}, as_positional=False)
    cfg = parser.parse_args(list(args))
    try:
        init = parser.instantiate_classes(cfg)
        settings = {key: value for key, value in init.items() if key not in ("data", "config")}
        out = convert(init.data, **settings)
    except (ValueError, TypeError, FileNotFoundError, NotADirectoryError) as err:
        parser.error(str(err))
    print(f"Converted: train with --data StreamingDataModule --data.root {out}")
