"""Data at scale: folders and .npy files read per item, uint8 until the batch, seeded augmentations."""

import gc
import re
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image, ImageFile
from torch import Tensor

import lightning_gan.data.arrays as arrays_module
import lightning_gan.data.files as files_module
from lightning_gan.data import ArrayDataModule, GANDataModule, ImageFolderDataModule, ResumableSampler
from tests.conftest import fit, generator_state, whole_and_resumed


def write_folder(root: Path, n: int, size: int = 8, classes: int = 2, seed: int = 0) -> None:
    """``n`` RGB PNGs of random pixels, split over ``classes`` folders, named so that sorted = written."""
    rng = np.random.default_rng(seed)
    for i in range(n):
        folder = root / f"c{i % classes}"
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(folder / f"{i:04d}.png")


def png_pixels(path: Path) -> Tensor:
    """(3, H, W) uint8 pixels of the RGB image at ``path``."""
    with Image.open(path) as image:
        return torch.from_numpy(np.asarray(image.convert("RGB")).copy()).permute(2, 0, 1)


def folder(root: Path, **kwargs) -> ImageFolderDataModule:
    settings = {"batch_size": 4, "val_fraction": 0, "test_fraction": 0, **kwargs}
    return ImageFolderDataModule(str(root), **settings)


def fake_trainer(processed: int, epoch: int) -> SimpleNamespace:
    """The trainer attributes the data module reads: world of one, plain batches, ``processed`` done."""
    progress = SimpleNamespace(current=SimpleNamespace(processed=processed))
    return SimpleNamespace(
        lightning_module=SimpleNamespace(batches_per_step=None), world_size=1, global_rank=0,
        current_epoch=epoch, fit_loop=SimpleNamespace(epoch_loop=SimpleNamespace(batch_progress=progress)),
    )  # fmt: skip


def epoch_batches(dm: GANDataModule, epoch: int = 0) -> list[tuple[Tensor, Tensor]]:
    loader = dm.train_dataloader()
    loader.sampler.set_epoch(epoch)
    return list(loader)


def assert_same_batches(a: list[tuple[Tensor, Tensor]], b: list[tuple[Tensor, Tensor]]) -> None:
    assert len(a) == len(b)
    for (images_a, labels_a), (images_b, labels_b) in zip(a, b, strict=True):
        assert torch.equal(images_a, images_b) and torch.equal(labels_a, labels_b)


def held_bytes(obj: object, seen: set[int]) -> list[int]:
    """nbytes of the tensors and arrays that lightning_gan objects hold, through their attributes and
    lists, tuples and dicts."""
    if id(obj) in seen:
        return []
    seen.add(id(obj))
    if isinstance(obj, Tensor):
        return [obj.untyped_storage().nbytes()]
    if isinstance(obj, np.ndarray):
        return [obj.nbytes if obj.base is None else 0]  # a memory map's view holds nothing
    children = obj.values() if isinstance(obj, dict) else obj if isinstance(obj, list | tuple) else ()
    if type(obj).__module__.startswith("lightning_gan"):
        children = vars(obj).values()
    return [size for child in children for size in held_bytes(child, seen)]


@pytest.fixture
def decodes(monkeypatch) -> list[str]:
    """The files whose pixels PIL decodes (``ImageFile.load``) in this process."""
    calls, load = [], ImageFile.ImageFile.load
    monkeypatch.setattr(ImageFile.ImageFile, "load", lambda self: calls.append(self.filename) or load(self))
    return calls


# --- 1, 2: indexing without decoding; uint8 until the batch ------------------------------------------------


def test_folder_module_decodes_nothing_at_construction_and_holds_no_pixels(tmp_path, decodes):
    write_folder(tmp_path, 2000, size=16)
    dm = folder(tmp_path, val_fraction=0.1, test_fraction=0.1)
    assert decodes == [] and type(dm.samples).__name__ == "ImageFiles"
    assert dm.img_shape == (3, 16, 16) and len(dm.train_dataset) == 1600
    held = held_bytes(dm, set())
    # labels, split indices and file names: a few dozen bytes per image; decoded pixels would be 768 each
    assert sum(held) < 2000 * 100 and max(held) < 2000 * 32
    assert dm.train_dataset[0][0].shape == (3, 16, 16)
    assert set(decodes) == {str(dm.samples.path(int(dm.train_dataset.indices[0])))}  # the spy sees reads


def test_items_are_uint8_and_batches_are_scaled_once(tmp_path):
    write_folder(tmp_path, 16)
    dm = folder(tmp_path, seed=3)
    image, label = dm.train_dataset[0]
    assert image.dtype == torch.uint8 and isinstance(label, int)
    assert torch.equal(image, png_pixels(dm.samples.path(int(dm.train_dataset.indices[0]))))
    images, labels = next(iter(dm.train_dataloader()))
    order = list(ResumableSampler(16, seed=3))[:4]
    paths = [dm.samples.path(int(dm.train_dataset.indices[i])) for i in order]
    assert images.dtype == torch.float32 and images.min() >= -1 and images.max() <= 1
    assert torch.equal(images, torch.stack([png_pixels(path) for path in paths]).float() / 127.5 - 1)
    assert labels.tolist() == [int(path.parent.name[1:]) for path in paths]


# --- 3: workers --------------------------------------------------------------------------------------------


def test_workers_give_the_same_batches_and_augmentations(tmp_path):
    write_folder(tmp_path, 32, size=12)
    settings = {"image_size": 12, "crop": 8, "crop_mode": "random", "hflip": True, "batch_size": 8}
    serial, parallel = folder(tmp_path, **settings), folder(tmp_path, num_workers=2, **settings)
    for epoch in (0, 1):
        batches = epoch_batches(serial, epoch)
        assert batches[0][0].shape == (8, 3, 8, 8)
        assert_same_batches(batches, epoch_batches(parallel, epoch))
    assert not torch.equal(epoch_batches(serial, 0)[0][0], epoch_batches(serial, 1)[0][0])


# --- 4: arrays ---------------------------------------------------------------------------------------------


def test_npy_is_memory_mapped_and_read_per_row(tmp_path):
    images = np.random.default_rng(1).integers(0, 256, (40, 3, 8, 8), dtype=np.uint8)
    np.save(tmp_path / "images.npy", images)
    np.save(tmp_path / "labels.npy", np.arange(40) % 4)
    settings = {"batch_size": 5, "val_fraction": 0.2, "test_fraction": 0}
    dm = ArrayDataModule(str(tmp_path / "images.npy"), labels=str(tmp_path / "labels.npy"), **settings)
    assert isinstance(dm.samples.images, np.memmap) and not dm.samples.images.flags.owndata
    assert dm.img_shape == (3, 8, 8) and dm.class_names == ["0", "1", "2", "3"]
    assert torch.bincount(dm.split_labels("val")).tolist() == [2, 2, 2, 2]
    assert torch.bincount(dm.split_labels("train")).tolist() == [8, 8, 8, 8]
    assert dm.train_dataset[0][0].dtype == torch.uint8
    rows = dm.train_dataset.indices[list(ResumableSampler(len(dm.train_dataset), seed=0))[:5]]
    batch, labels = next(iter(dm.train_dataloader()))
    assert torch.equal(batch, torch.from_numpy(images[rows.numpy()]).float() / 127.5 - 1)
    assert labels.tolist() == (rows % 4).tolist()


def test_npy_float_rows_are_range_checked_as_read(tmp_path):
    images, path = np.zeros((20, 1, 8, 8), dtype=np.float32), tmp_path / "images.npy"
    images[7, 0, 3, 3] = 2.0
    np.save(path, images)
    dm = ArrayDataModule(str(path), batch_size=4, val_fraction=0, test_fraction=0)  # not read yet
    assert dm.samples.read(6).dtype == torch.float32
    with pytest.raises(ValueError, match=re.escape(f"{path}[7]") + r" lies in \[0, 2\]"):
        dm.samples.read(7)
    with pytest.raises(ValueError, match=re.escape(f"{path}[7]")):
        epoch_batches(dm)


def test_large_npz_is_refused_with_the_npy_recipe_and_npz_takes_no_labels_file(tmp_path, monkeypatch):
    path = tmp_path / "x.npz"
    np.savez(path, images=np.zeros((20, 1, 8, 8), np.uint8), labels=np.arange(20) % 2)
    assert ArrayDataModule(str(path), batch_size=4).img_shape == (1, 8, 8)
    np.save(tmp_path / "labels.npy", np.arange(20) % 2)
    with pytest.raises(ValueError, match=re.escape("data.labels=") + ".*only a .npy takes a labels file"):
        ArrayDataModule(str(path), labels=str(tmp_path / "labels.npy"), batch_size=4)
    monkeypatch.setattr(arrays_module, "NPZ_LIMIT", 1000)  # the images take 1,280 bytes
    with pytest.raises(ValueError, match=re.escape(str(path)) + ".*" + re.escape("np.save('images.npy'")):
        ArrayDataModule(str(path), batch_size=4)


# --- 5: augmentations --------------------------------------------------------------------------------------


@pytest.fixture
def npy(tmp_path) -> tuple[str, np.ndarray]:
    images = np.random.default_rng(2).integers(0, 256, (48, 3, 8, 8), dtype=np.uint8)
    np.save(tmp_path / "images.npy", images)
    return str(tmp_path / "images.npy"), images


def test_hflip_mirrors_some_training_items_by_key_and_never_validation(npy):
    settings = {"batch_size": 4, "val_fraction": 0.25, "test_fraction": 0}
    plain, flip = ArrayDataModule(npy[0], **settings), ArrayDataModule(npy[0], hflip=True, **settings)
    n = len(flip.train_dataset)
    mirrored = []
    for position in range(n):
        original, item = plain.train_dataset[position][0], flip.train_dataset[(0, position)][0]
        assert torch.equal(item, flip.train_dataset[(0, position)][0])  # the same key, the same item
        assert torch.equal(item, original) or torch.equal(item, original.flip(-1))
        mirrored.append(not torch.equal(item, original))
    assert 0 < sum(mirrored) < n
    for position in range(len(flip.val_dataset)):
        for key in (position, (0, position), (1, position)):
            assert torch.equal(flip.val_dataset[key][0], plain.val_dataset[position][0])
    assert torch.equal(flip.real_images("val"), plain.real_images("val"))
    assert torch.equal(flip.real_images("train"), plain.real_images("train"))  # unaugmented


def test_flips_differ_between_epochs_and_seeds(npy):
    def mirrored(epoch: int, seed: int) -> list[bool]:
        dm = ArrayDataModule(npy[0], batch_size=4, val_fraction=0, test_fraction=0, hflip=True, seed=seed)
        items = [dm.train_dataset[(epoch, p)][0] for p in range(48)]
        return [not torch.equal(item, torch.from_numpy(row)) for item, row in zip(items, npy[1], strict=True)]

    assert mirrored(1, 0) != mirrored(0, 0) and mirrored(0, 1) != mirrored(0, 0)


@pytest.mark.parametrize("cache", [None, True])
def test_centre_crop_keeps_the_centre(npy, cache):
    dm = ArrayDataModule(npy[0], batch_size=4, crop=4, crop_mode="center", cache=cache, val_fraction=0.25)
    assert dm.img_shape == (3, 4, 4)
    for dataset in (dm.train_dataset, dm.val_dataset):
        for position in range(len(dataset)):
            row = npy[1][int(dataset.indices[position])]
            assert torch.equal(dataset[(0, position)][0], torch.from_numpy(row[:, 2:6, 2:6].copy()))


@pytest.mark.parametrize("source", ["npy", "folder"])
def test_random_crop_takes_windows_of_the_resized_image_and_evaluation_the_centre(tmp_path, npy, source):
    if source == "folder":
        write_folder(tmp_path / "images", 24, size=12)
        build = lambda **kwargs: folder(tmp_path / "images", val_fraction=0.25, **kwargs)  # noqa: E731
    else:
        build = lambda **kwargs: ArrayDataModule(npy[0], batch_size=4, val_fraction=0.25, **kwargs)  # noqa: E731
    whole, dm = build(image_size=8), build(image_size=8, crop=6, crop_mode="random")
    assert dm.img_shape == (3, 6, 6)
    windows = set()
    for position in range(len(dm.train_dataset)):
        resized, item = whole.train_dataset[position][0], dm.train_dataset[(0, position)][0]
        found = {(t, x) for t in range(3) for x in range(3) if item.equal(resized[:, t : t + 6, x : x + 6])}
        assert found, f"training item {position} is no 6x6 window of its 8x8 image"
        windows.update(found)
        assert torch.equal(item, dm.train_dataset[(0, position)][0])
    assert len(windows) > 1
    for position in range(len(dm.val_dataset)):
        resized = whole.val_dataset[position][0]
        assert torch.equal(dm.val_dataset[(0, position)][0], resized[:, 1:7, 1:7])
    assert torch.equal(dm.real_images("test"), whole.real_images("test")[:, :, 1:7, 1:7])


@pytest.mark.parametrize(
    ("kwargs", "key"),
    [
        ({"crop": 9}, "data.crop=9"),
        ({"crop": 9, "crop_mode": "random"}, "data.crop=9"),
        ({"crop": 9, "crop_mode": "random", "cache": True}, "data.crop=9"),
        ({"image_size": 8, "crop": 12, "crop_mode": "center"}, "data.crop=12"),
        ({"crop": 0}, "data.crop=0 is not allowed"),
        ({"crop": 2.5}, "data.crop=2.5 is not allowed"),
        ({"crop_mode": "middle"}, "data.crop_mode='middle' is not allowed"),
        ({"hflip": "yes"}, "data.hflip='yes' is not allowed"),
        ({"cache": "x"}, "data.cache='x' is not allowed"),
    ],
)
def test_bad_crop_and_augmentation_settings_name_the_key(npy, kwargs, key):
    with pytest.raises(ValueError, match=re.escape(key)):
        ArrayDataModule(npy[0], batch_size=4, **kwargs)


# --- 6: cache ----------------------------------------------------------------------------------------------


def test_cached_folder_serves_the_same_items_without_opening_files(tmp_path, monkeypatch):
    write_folder(tmp_path, 24, size=10)
    settings = {"image_size": 8, "crop": 6, "crop_mode": "random", "hflip": True, "val_fraction": 0.25}
    read, cached = folder(tmp_path, **settings), folder(tmp_path, cache=True, **settings)
    assert type(cached.samples).__name__ == "PreparedSamples" and cached.img_shape == read.img_shape
    for split in ("train", "val"):
        a, b = getattr(read, f"{split}_dataset"), getattr(cached, f"{split}_dataset")
        for position in range(len(a)):
            assert torch.equal(a[(1, position)][0], b[(1, position)][0])
            assert a[(1, position)][1] == b[(1, position)][1]
    expected, real = epoch_batches(read), read.real_images("val")
    for module, name in ((files_module, "_open"), (Image, "open")):  # no file is opened from here on
        monkeypatch.setattr(module, name, lambda *args, **kwargs: pytest.fail(f"opened {args}"))
    assert_same_batches(epoch_batches(cached), expected)
    assert torch.equal(cached.real_images("val"), real)


# --- 7: unreadable files are found when read, never skipped ------------------------------------------------


def unsampled(n: int) -> list[int]:
    """Indices whose headers are not read at construction (HEADER_SAMPLE spread over the folder)."""
    sample = files_module.HEADER_SAMPLE
    return sorted(set(range(n)) - {round(i * (n - 1) / (sample - 1)) for i in range(sample)})


@pytest.mark.parametrize("num_workers", [0, 1])
def test_an_unreadable_image_is_reported_when_read_with_its_path(tmp_path, num_workers):
    write_folder(tmp_path, 200, size=4, classes=1)
    bad = tmp_path / "c0" / f"{unsampled(200)[0]:04d}.png"
    bad.write_bytes(b"not a png")
    dm = folder(tmp_path, batch_size=10, num_workers=num_workers)  # its header was not read
    with pytest.raises(ValueError, match=re.escape(f"cannot read image {bad}")):
        epoch_batches(dm)  # through a worker too: the message keeps the path
    if num_workers == 0:  # (a loader whose worker raised takes 5 s to shut down: one is enough)
        with pytest.raises(ValueError, match=re.escape(f"cannot read image {bad}")):
            dm.real_images("train")
    gc.collect()  # that shutdown, here rather than in a later test


def test_truncated_or_odd_sized_images_are_reported_when_read(tmp_path):
    write_folder(tmp_path / "cut", 200, size=4, classes=1)
    truncated = tmp_path / "cut" / "c0" / "0000.png"  # sampled: the header reads, the pixels do not
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (64, 64, 3), np.uint8)).save(truncated)
    truncated.write_bytes(truncated.read_bytes()[:2000])
    dm = folder(tmp_path / "cut", image_size=8)
    with pytest.raises(ValueError, match=re.escape(f"cannot read image {truncated}")):
        dm.train_dataset[0]
    write_folder(tmp_path / "odd", 200, size=4, classes=1)
    odd = tmp_path / "odd" / "c0" / f"{unsampled(200)[0]:04d}.png"
    Image.fromarray(np.zeros((5, 4, 3), np.uint8)).save(odd)
    dm = folder(tmp_path / "odd")  # without image_size every image must be 4x4: found when read
    with pytest.raises(ValueError, match=re.escape(f"but {odd} is 4x5; set data.image_size")):
        epoch_batches(dm)
    assert folder(tmp_path / "odd", image_size=8).real_images("train").shape == (200, 3, 8, 8)


def test_a_centre_crop_takes_images_of_several_sizes(tmp_path):
    write_folder(tmp_path, 2, size=10, classes=1)
    Image.fromarray(np.zeros((12, 12, 3), np.uint8)).save(tmp_path / "c0" / "0001.png")
    dm = folder(tmp_path, batch_size=1, crop=8)  # "Without image_size (or a centre crop)" sizes must agree
    assert dm.img_shape == (3, 8, 8) and dm.real_images("train").shape == (2, 3, 8, 8)


# --- 8: exact resume with augmentations --------------------------------------------------------------------


@pytest.mark.parametrize("num_workers", [0, 2])
def test_a_resumed_loader_yields_the_rest_of_the_epoch_with_the_same_augmentations(tmp_path, num_workers):
    write_folder(tmp_path, 48, size=10)
    settings = {"image_size": 8, "crop": 6, "crop_mode": "random", "hflip": True, "num_workers": num_workers}
    whole = epoch_batches(folder(tmp_path, **settings), epoch=1)
    interrupted = folder(tmp_path, **settings)
    interrupted.trainer = fake_trainer(processed=5, epoch=1)  # Lightning's count: workers prefetch ahead
    interrupted.train_dataloader()
    resumed = folder(tmp_path, **settings)
    resumed.load_state_dict(interrupted.state_dict())
    assert_same_batches(epoch_batches(resumed, epoch=1), whole[5:])
    if num_workers == 0:  # without a trainer the sampler's own count is exact
        loader = (interrupted := folder(tmp_path, **settings)).train_dataloader()
        loader.sampler.set_epoch(1)
        stream = iter(loader)
        assert_same_batches([next(stream) for _ in range(3)], whole[:3])
        resumed = folder(tmp_path, **settings)
        resumed.load_state_dict(interrupted.state_dict())
        assert_same_batches(epoch_batches(resumed, epoch=1), whole[3:])


def test_cli_resume_with_random_crop_and_flips_is_exact(tmp_path):
    flags = ("--data.hflip=true", "--data.crop=24", "--data.crop_mode=random")
    whole, resumed = whole_and_resumed(fit, tmp_path, *flags)
    assert whole.datamodule.img_shape == (1, 24, 24) and whole.datamodule.train_dataset.hflip
    a, b = generator_state(whole), generator_state(resumed)
    assert resumed.trainer.global_step == 4 and all(torch.equal(a[k], b[k]) for k in a)


# --- 9, 10: real_images bound, split identities ------------------------------------------------------------


def test_real_images_are_bounded_by_a_seeded_choice(tmp_path, monkeypatch):
    write_folder(tmp_path, 50, size=8)
    monkeypatch.setattr(GANDataModule, "REAL_IMAGES_LIMIT", 10)
    dm = folder(tmp_path, val_fraction=0.8)
    images = dm.real_images("val")
    assert images.shape == (10, 3, 8, 8) and len(dm.split_labels("val")) == 40
    assert dm.real_images("val") is images
    assert torch.equal(folder(tmp_path, val_fraction=0.8).real_images("val"), images)  # the same choice
    val = torch.stack([png_pixels(dm.samples.path(int(i))) for i in dm.val_dataset.indices]) / 127.5 - 1
    assert all(any(torch.equal(image, row) for row in val) for image in images)
    assert len({tuple(image.flatten()[:16].tolist()) for image in images}) == 10  # ten different ones
    assert torch.equal(dm.real_images("val", limit=40), val)


def test_split_hashes_identify_files_not_the_split(tmp_path, decodes):
    write_folder(tmp_path / "a", 20, size=8)

    def by_hash(dm: GANDataModule) -> dict[int, str]:
        return {
            int(key): dm.samples.names[int(i)].decode()
            for split in ("train", "val", "test")
            for key, i in zip(dm.split_hashes(split), getattr(dm, f"{split}_dataset").indices, strict=True)
        }

    first = folder(tmp_path / "a", seed=0, val_fraction=0.2, test_fraction=0.2)
    second = folder(tmp_path / "a", seed=1, val_fraction=0.2, test_fraction=0.2)
    assert not torch.equal(first.val_dataset.indices, second.val_dataset.indices)
    assert by_hash(first) == by_hash(second) and len(by_hash(first)) == 20
    assert decodes == []  # from the names, no pixel read
    (tmp_path / "a" / "c0" / "0000.png").rename(tmp_path / "a" / "c0" / "renamed.png")
    renamed = by_hash(folder(tmp_path / "a", val_fraction=0.2, test_fraction=0.2))
    kept = {key: name for key, name in by_hash(first).items() if name != "c0/0000.png"}
    assert {key: name for key, name in renamed.items() if name != "c0/renamed.png"} == kept
    assert "c0/renamed.png" in renamed.values() and len(set(renamed) - set(kept)) == 1
