"""Data modules, the resumable sampler and the per-step loader."""

import re
from pathlib import Path
from types import SimpleNamespace

import lightning.pytorch as pl
import numpy as np
import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from PIL import Image
from torch import Tensor
from torch.utils.data import DataLoader, TensorDataset

from lightning_gan.data import (
    ArrayDataModule,
    DigitsDataModule,
    GANDataModule,
    ImageFolderDataModule,
    ResumableSampler,
    StepLoader,
)


class IndexData(GANDataModule):
    """Image i is filled with i / 1000, so a batch tells which samples it holds."""

    def __init__(self, labels: list[int], **kwargs) -> None:
        self.labels = labels
        super().__init__(**kwargs)

    def load_data(self) -> tuple[Tensor, Tensor, list[str]]:
        index = torch.arange(len(self.labels), dtype=torch.float32) / 1000
        images = index.view(-1, 1, 1, 1).expand(-1, 1, 8, 8).clone()
        labels = torch.tensor(self.labels)
        return images, labels, [str(c) for c in range(int(labels.max()) + 1)] if labels.max() >= 0 else []


def indices(images: Tensor) -> list[int]:
    return (images[:, 0, 0, 0] * 1000).round().long().tolist()


def fake_trainer(batches_per_step=None, world_size=1, global_rank=0, processed=0, epoch=0) -> SimpleNamespace:
    """The trainer attributes the data module reads."""
    progress = SimpleNamespace(current=SimpleNamespace(processed=processed))
    return SimpleNamespace(
        lightning_module=SimpleNamespace(batches_per_step=batches_per_step),
        world_size=world_size,
        global_rank=global_rank,
        current_epoch=epoch,
        fit_loop=SimpleNamespace(epoch_loop=SimpleNamespace(batch_progress=progress)),
    )


# --- digits and split ---------------------------------------------------------------------------------------


def test_digits_loads_5000_images_500_per_class():
    dm = DigitsDataModule(batch_size=64)
    images = torch.cat([dm.real_images(split) for split in ("train", "val", "test")])
    labels = torch.cat([ds.labels for ds in (dm.train_dataset, dm.val_dataset, dm.test_dataset)])
    assert images.shape == (5000, 1, 28, 28) and images.dtype == torch.float32
    assert images.min() == -1 and images.max() == 1
    assert labels.dtype == torch.int64 and torch.bincount(labels).tolist() == [500] * 10
    assert dm.img_shape == (1, 28, 28) and dm.num_classes == 10
    assert dm.class_names == [str(digit) for digit in range(10)]
    image, label = dm.train_dataset[0]
    assert image.shape == (1, 28, 28) and image.dtype == torch.uint8 and isinstance(label, int)


def test_split_is_stratified_in_each_split():
    dm = DigitsDataModule(val_fraction=0.1, test_fraction=0.2)
    for dataset, per_class in ((dm.train_dataset, 350), (dm.val_dataset, 50), (dm.test_dataset, 100)):
        assert torch.bincount(dataset.labels, minlength=10).tolist() == [per_class] * 10
    # unequal classes keep their proportions too
    dm = IndexData([0] * 100 + [1] * 200 + [2] * 300, batch_size=8, val_fraction=0.1, test_fraction=0.1)
    assert torch.bincount(dm.split_labels("val")).tolist() == [10, 20, 30]
    assert torch.bincount(dm.split_labels("test")).tolist() == [10, 20, 30]


def test_split_is_disjoint_and_deterministic_by_seed():
    def split(seed: int) -> list[list[int]]:
        dm = IndexData([0] * 50 + [1] * 50 + [-1] * 100, batch_size=8, seed=seed)
        return [indices(dm.real_images(name)) for name in ("train", "val", "test")]

    train, val, test = split(0)
    assert len(train) + len(val) + len(test) == 200
    assert sorted(train + val + test) == list(range(200))
    assert split(0) == [train, val, test]
    assert split(1) != [train, val, test]
    assert DigitsDataModule(seed=3).real_images("val").equal(DigitsDataModule(seed=3).real_images("val"))


@pytest.mark.parametrize("size", [16, 32, 64])
def test_image_size_resizes(size):
    dm = DigitsDataModule(image_size=size)
    assert dm.img_shape == (1, size, size)
    assert dm.train_dataset[0][0].shape == (1, size, size)
    images = dm.real_images("test")
    assert images.min() >= -1 and images.max() <= 1 and images.std() > 0.3


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"batch_size": 0}, "data.batch_size=0 is not allowed: must be an integer >= 1"),
        ({"num_workers": -1}, "data.num_workers=-1 is not allowed: must be an integer >= 0"),
        ({"val_fraction": 1.0}, "data.val_fraction=1.0 is not allowed"),
        ({"test_fraction": -0.1}, "data.test_fraction=-0.1 is not allowed"),
        ({"val_fraction": 0.5, "test_fraction": 0.5}, "sum must be < 1"),
        ({"image_size": 4}, "data.image_size=4 is not allowed: must be an integer >= 8 or None"),
        ({"seed": 1.5}, "data.seed=1.5 is not allowed"),
        ({"batch_size": 4001}, "data.batch_size=4001 is larger than the 4000 training samples"),
    ],
)
def test_invalid_settings_name_the_key(kwargs, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        DigitsDataModule(**kwargs)


# --- sampler ------------------------------------------------------------------------------------------------


def epoch_order(seed: int, epoch: int, n: int = 50) -> list[int]:
    sampler = ResumableSampler(n, seed=seed)
    sampler.set_epoch(epoch)
    return list(sampler)


def test_sampler_order_depends_on_seed_and_epoch_only():
    order = epoch_order(0, 0)
    assert sorted(order) == list(range(50)) and order != list(range(50))
    assert epoch_order(0, 1) != order and epoch_order(1, 0) != order
    torch.manual_seed(123)
    assert epoch_order(0, 0) == order  # the global seed does not matter
    state = torch.get_rng_state()
    epoch_order(5, 7)
    assert torch.equal(torch.get_rng_state(), state)  # nor is the global RNG advanced
    assert list(ResumableSampler(5, shuffle=False)) == [0, 1, 2, 3, 4]


@pytest.mark.parametrize(("n", "replicas"), [(12, 3), (10, 4), (2, 3)])
def test_sampler_ranks_partition_an_epoch(n, replicas):
    parts = []
    for rank in range(replicas):
        sampler = ResumableSampler(n, seed=4, num_replicas=replicas, rank=rank)
        sampler.set_epoch(2)
        parts.append(list(sampler))
        assert len(parts[-1]) == len(sampler) == -(-n // replicas)
    merged = [index for part in parts for index in part]
    assert set(merged) == set(range(n))
    if n % replicas == 0:
        assert len(merged) == n  # no sample repeated across ranks


@pytest.mark.parametrize(("replicas", "rank"), [(1, 0), (3, 2)])
def test_sampler_resumes_mid_epoch(replicas, rank):
    def sampler() -> ResumableSampler:
        return ResumableSampler(100, seed=7, num_replicas=replicas, rank=rank)

    reference = sampler()
    reference.set_epoch(3)
    uninterrupted = list(reference)
    interrupted = sampler()
    interrupted.set_epoch(3)
    stream = iter(interrupted)
    head = [next(stream) for _ in range(13)]
    state = interrupted.state_dict()
    assert state == {"epoch": 3, "seed": 7, "consumed": 13}
    resumed = sampler()
    resumed.load_state_dict(state)
    resumed.set_epoch(3)  # Lightning sets the epoch again; the same epoch keeps the skip
    assert head + list(resumed) == uninterrupted
    resumed.load_state_dict(state)
    resumed.set_epoch(4)  # a new epoch starts from its beginning
    assert len(list(resumed)) == len(reference)


def test_sampler_rejects_bad_arguments():
    with pytest.raises(ValueError, match="seed="):
        ResumableSampler(10, seed="0")
    with pytest.raises(ValueError, match=re.escape("rank=2 is not allowed: must be an integer in [0, 2)")):
        ResumableSampler(10, num_replicas=2, rank=2)
    with pytest.raises(ValueError, match="seed=1 but this sampler has seed=0"):
        ResumableSampler(10).load_state_dict({"epoch": 0, "seed": 1, "consumed": 0})


# --- step loader --------------------------------------------------------------------------------------------


class CountingLoader(DataLoader):
    iter_calls = 0

    def __iter__(self):
        self.iter_calls += 1
        return super().__iter__()


def step_loader(num_samples: int, batch_size: int, k: int | None) -> StepLoader:
    dataset = TensorDataset(torch.arange(num_samples))
    sampler = ResumableSampler(num_samples, seed=1)
    return StepLoader(
        CountingLoader(dataset, batch_size, sampler=sampler, drop_last=True), batches_per_step=k
    )


def test_step_loader_groups_separate_batches():
    loader = step_loader(110, 4, 5)  # 27 batches: 5 steps, 2 batches left over
    assert len(loader.loader) == 27 and len(loader) == 5
    items = list(loader)
    assert len(items) == 5
    seen = []
    for group in items:
        assert len(group) == 5
        for (batch,) in group:
            assert batch.shape == (4,)  # a batch of its own, not a slice of a larger one
            seen += batch.tolist()
    assert len(seen) == len(set(seen)) == 100


def test_step_loader_without_grouping_yields_plain_batches():
    loader = step_loader(20, 4, None)
    batches = [batch for (batch,) in loader]
    assert len(loader) == len(batches) == 5 and all(batch.shape == (4,) for batch in batches)


def test_step_loader_iter_is_lazy():
    loader = step_loader(40, 4, 2)
    stream = iter(loader)
    assert loader.loader.iter_calls == 0
    loader.sampler.set_epoch(1)  # as Lightning does after iter(), before the first next()
    first = next(stream)
    assert loader.loader.iter_calls == 1
    expected = epoch_order(1, 1, n=40)[:8]
    assert torch.cat([batch for (batch,) in first]).tolist() == expected
    assert loader.dataset is loader.loader.dataset and loader.batch_size == 4
    assert not hasattr(loader, "state_dict")


# --- data module loaders and resume -------------------------------------------------------------------------


def test_train_dataloader_uses_model_batches_per_step_and_ranks():
    dm = DigitsDataModule(batch_size=50)
    assert dm.train_dataloader().batches_per_step is None
    dm.trainer = fake_trainer(batches_per_step=5, world_size=2, global_rank=1)
    loader = dm.train_dataloader()
    assert (loader.sampler.num_replicas, loader.sampler.rank) == (2, 1)
    assert len(loader) == 2000 // 50 // 5
    assert len(next(iter(loader))) == 5
    assert len(dm.val_dataloader().dataset) == len(dm.test_dataloader().dataset) == 500
    dm.trainer = fake_trainer(batches_per_step=5, world_size=20)  # 4 batches per rank
    with pytest.raises(ValueError, match="fewer than the 5 batches one training step consumes"):
        dm.train_dataloader()


def test_data_module_state_follows_trainer_progress():
    dm = IndexData([-1] * 100, batch_size=4, val_fraction=0, test_fraction=0)
    dm.trainer = fake_trainer(batches_per_step=2, processed=3, epoch=1)
    dm.train_dataloader()
    state = dm.state_dict()
    assert state == {"epoch": 1, "seed": 0, "consumed": 3 * 2 * 4, "batch_size": 4}
    resumed = IndexData([-1] * 100, batch_size=4, val_fraction=0, test_fraction=0)
    resumed.load_state_dict(state)
    loader = resumed.train_dataloader()
    loader.sampler.set_epoch(1)
    assert indices(torch.cat([x for x, _ in loader.loader])) == epoch_order(0, 1, n=100)[24:]
    for key, value in (("seed", 1), ("batch_size", 5)):
        with pytest.raises(ValueError, match=f"differ from the checkpoint's.*data.{key}="):
            IndexData(
                [-1] * 100, **{"batch_size": 4, "val_fraction": 0, "test_fraction": 0, key: value}
            ).load_state_dict(state)


class Recorder(pl.LightningModule):
    """Records the sample indices of each step; two batches per step, like n_critic=2."""

    batches_per_step = 2

    def __init__(self) -> None:
        super().__init__()
        self.weight = torch.nn.Parameter(torch.zeros(1))
        self.seen: list[int] = []

    def training_step(self, batch, batch_idx):
        assert len(batch) == 2
        self.seen += [index for images, _ in batch for index in indices(images)]
        return self.weight.sum() * 0

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def fit(tmp_path: Path, ckpt_path: str | None = None, **trainer_kwargs) -> list[int]:
    model = Recorder()
    trainer = pl.Trainer(
        accelerator="cpu",
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        limit_val_batches=0,
        default_root_dir=tmp_path,
        **trainer_kwargs,
    )
    data = IndexData([-1] * 100, batch_size=4, val_fraction=0, test_fraction=0)
    trainer.fit(model, datamodule=data, ckpt_path=ckpt_path)
    return model.seen


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_lightning_mid_epoch_resume_continues_the_epoch(tmp_path):
    # 100 samples / 4 per batch / 2 batches per step = 12 steps per epoch
    uninterrupted = fit(tmp_path / "a", max_epochs=2, enable_checkpointing=False)
    assert len(uninterrupted) == 2 * 12 * 8
    checkpoint = ModelCheckpoint(dirpath=tmp_path / "ckpt", every_n_train_steps=17, save_top_k=-1)
    head = fit(tmp_path / "b", max_steps=17, callbacks=[checkpoint])
    tail = fit(tmp_path / "c", ckpt_path=checkpoint.best_model_path, max_epochs=2)
    assert head + tail == uninterrupted


# --- image folders ------------------------------------------------------------------------------------------


def write_image(path: Path, mode: str, size: tuple[int, int], value: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    color = value if mode == "L" else (value, value, value)
    Image.new(mode, size, color).save(path)


def test_image_folder_greyscale(tmp_path):
    for i in range(3):
        write_image(tmp_path / "dog" / f"{i}.png", "L", (8, 6), 255)
        write_image(tmp_path / "cat" / f"{i}.PNG", "L", (8, 6), 0)
    (tmp_path / "cat" / "notes.txt").write_text("not an image")
    dm = ImageFolderDataModule(str(tmp_path), batch_size=2, val_fraction=0, test_fraction=0)
    assert dm.img_shape == (1, 6, 8) and dm.class_names == ["cat", "dog"] and dm.num_classes == 2
    images, labels = dm.real_images("train"), dm.split_labels("train")
    assert labels.tolist() == [0, 0, 0, 1, 1, 1]
    assert images[labels == 0].eq(-1).all() and images[labels == 1].eq(1).all()


def test_image_folder_rgb_and_resize(tmp_path):
    write_image(tmp_path / "a" / "0.png", "L", (8, 8), 0)
    write_image(tmp_path / "a" / "1.jpg", "L", (8, 8), 0)
    write_image(tmp_path / "b" / "0.bmp", "RGB", (12, 10), 255)
    write_image(tmp_path / "b" / "1.png", "RGB", (12, 10), 255)
    dm = ImageFolderDataModule(str(tmp_path), batch_size=2, val_fraction=0, test_fraction=0, image_size=16)
    assert dm.img_shape == (3, 16, 16) and dm.split_labels("train").tolist() == [0, 0, 1, 1]
    grey = ImageFolderDataModule(
        str(tmp_path), channels=1, batch_size=2, val_fraction=0, test_fraction=0, image_size=8
    )
    assert grey.img_shape == (1, 8, 8)


def test_image_folder_errors(tmp_path):
    def build(root: Path, **kwargs) -> ImageFolderDataModule:
        return ImageFolderDataModule(str(root), batch_size=1, val_fraction=0, test_fraction=0, **kwargs)

    with pytest.raises(FileNotFoundError, match=re.escape(str(tmp_path / "missing")) + ".*does not exist"):
        build(tmp_path / "missing")
    (tmp_path / "file.png").write_bytes(b"")
    with pytest.raises(ValueError, match=re.escape(str(tmp_path / "file.png")) + ".*is not a directory"):
        build(tmp_path / "file.png")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match=re.escape(str(tmp_path / "empty")) + ".*has no class sub-folders"):
        build(tmp_path / "empty")
    (tmp_path / "empty" / "cls").mkdir()
    with pytest.raises(ValueError, match=re.escape(str(tmp_path / "empty" / "cls")) + " has no images"):
        build(tmp_path / "empty")
    folder = tmp_path / "mixed" / "a"
    write_image(folder / "small.png", "L", (8, 8), 0)
    write_image(folder / "wide.png", "L", (9, 8), 0)
    with pytest.raises(
        ValueError, match=re.escape(f"{folder / 'small.png'} is 8x8 but {folder / 'wide.png'} is 9x8")
    ):
        build(tmp_path / "mixed")
    assert build(tmp_path / "mixed", image_size=8).img_shape == (1, 8, 8)
    (folder / "bad.png").write_bytes(b"not a png")
    with pytest.raises(ValueError, match=re.escape(f"cannot read image {folder / 'bad.png'}")):
        build(tmp_path / "mixed", image_size=8)
    with pytest.raises(ValueError, match=re.escape("data.channels=2 is not allowed")):
        build(tmp_path / "mixed", channels=2)


# --- arrays -------------------------------------------------------------------------------------------------


def test_array_npz_uint8_without_labels(tmp_path):
    images = np.zeros((20, 6, 5), dtype=np.uint8)
    images[10:] = 255
    np.savez(tmp_path / "x.npz", images=images)
    dm = ArrayDataModule(str(tmp_path / "x.npz"), batch_size=2, val_fraction=0, test_fraction=0)
    assert dm.img_shape == (1, 6, 5) and dm.num_classes == 0 and dm.class_names == []
    pixels, labels = dm.real_images("train"), dm.split_labels("train")
    assert labels.eq(-1).all() and sorted(pixels[:, 0, 0, 0].tolist()) == [-1.0] * 10 + [1.0] * 10


def test_array_npz_float_with_labels(tmp_path):
    images = np.linspace(-1, 1, 30 * 3 * 4 * 4, dtype=np.float64).reshape(30, 3, 4, 4)
    np.savez(tmp_path / "x.npz", images=images, labels=np.arange(30) % 3)
    dm = ArrayDataModule(str(tmp_path / "x.npz"), batch_size=2, val_fraction=0.2, test_fraction=0)
    assert dm.img_shape == (3, 4, 4) and dm.num_classes == 3 and dm.class_names == ["0", "1", "2"]
    assert torch.bincount(dm.split_labels("val")).tolist() == [2, 2, 2]
    assert dm.real_images("train").dtype == torch.float32


@pytest.mark.parametrize("with_labels", [False, True])
def test_array_pt(tmp_path, with_labels):
    content = {"images": torch.rand(12, 1, 4, 4) * 2 - 1}
    if with_labels:
        content["labels"] = torch.tensor([0, 1] * 6)
    torch.save(content, tmp_path / "x.pt")
    dm = ArrayDataModule(str(tmp_path / "x.pt"), batch_size=2, val_fraction=0, test_fraction=0)
    assert dm.img_shape == (1, 4, 4) and dm.num_classes == (2 if with_labels else 0)
    assert torch.equal(dm.real_images("train"), content["images"])


@pytest.mark.parametrize(
    ("name", "arrays", "message"),
    [
        ("x.npz", {"x": np.zeros((4, 8, 8), np.uint8)}, r"has no 'images' key: found \['x'\]"),
        (
            "x.npz",
            {"images": np.zeros((4, 2, 8, 8), np.uint8)},
            r"has shape \(4, 2, 8, 8\): expected \(N, C, H, W\)",
        ),
        ("x.npz", {"images": np.zeros((4, 8), np.uint8)}, r"has shape \(4, 8\)"),
        (
            "x.npz",
            {"images": np.full((4, 8, 8), 255.0)},
            r"lie in \[255, 255\] but must lie in \[-1, 1\]: scale",
        ),
        ("x.pt", {"images": torch.zeros(4, 8, 8), "labels": torch.zeros(3)}, "'labels' has shape"),
        (
            "x.pt",
            {"images": torch.zeros(4, 8, 8), "labels": torch.zeros(3, dtype=torch.long)},
            "has 3 entries",
        ),
        ("x.pt", {"images": torch.zeros(4, 8, 8), "labels": torch.tensor([0, 1, -1, 0])}, "negative values"),
    ],
)
def test_array_errors_name_the_path(tmp_path, name, arrays, message):
    path = tmp_path / name
    if name.endswith(".npz"):
        np.savez(path, **arrays)
    else:
        torch.save(arrays, path)
    with pytest.raises(ValueError, match=re.escape(str(path)) + ".*" + message):
        ArrayDataModule(str(path), batch_size=1, val_fraction=0, test_fraction=0)


def test_array_file_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match=re.escape(str(tmp_path / "none.npz")) + ".*does not exist"):
        ArrayDataModule(str(tmp_path / "none.npz"))
    (tmp_path / "x.txt").write_text("0 0 0")
    with pytest.raises(ValueError, match=re.escape(str(tmp_path / "x.txt")) + ".*expected .npy, .npz or .pt"):
        ArrayDataModule(str(tmp_path / "x.txt"))


def test_num_labelled_keeps_that_many_training_labels_evenly_and_hides_the_rest():
    dm = DigitsDataModule(num_labelled=100, seed=3)
    labels = dm.split_labels("train")
    known = labels[labels >= 0]
    assert len(known) == 100 and torch.bincount(known, minlength=10).tolist() == [10] * 10
    assert (labels == -1).sum() == len(labels) - 100
    full = DigitsDataModule(seed=3)
    assert torch.equal(dm.split_labels("val"), full.split_labels("val"))  # never hidden
    assert torch.equal(dm.split_labels("test"), full.split_labels("test"))
    assert torch.equal(dm.real_images("train"), full.real_images("train"))  # same split, same images
    kept = labels >= 0
    assert torch.equal(labels[kept], full.split_labels("train")[kept])  # the kept labels are the true ones
    with pytest.raises(ValueError, match=r"data\.num_labelled=5 is not allowed"):
        DigitsDataModule(num_labelled=5)


def test_train_per_class_keeps_a_small_labelled_training_set_and_the_same_val_and_test():
    small = DigitsDataModule(train_per_class=100, batch_size=32, seed=2)
    full = DigitsDataModule(seed=2)
    labels = small.split_labels("train")
    assert torch.bincount(labels, minlength=10).tolist() == [100] * 10
    assert torch.equal(small.real_images("val"), full.real_images("val"))
    assert torch.equal(small.real_images("test"), full.real_images("test"))
    train_rows = {tuple(x.flatten()[::7].tolist()) for x in full.real_images("train")}
    assert all(tuple(x.flatten()[::7].tolist()) in train_rows for x in small.real_images("train")[:50])
