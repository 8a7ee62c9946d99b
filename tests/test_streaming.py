"""Lightning's streaming format: ``lightning-gan convert`` writes litdata chunks of any data module, and
``StreamingDataModule`` trains on them, each DDP rank reading its own share, resuming mid-epoch exactly."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from lightning_gan.cli import run
from lightning_gan.data import DigitsDataModule, ImageFolderDataModule, StreamingDataModule
from lightning_gan.data.streaming import META, convert
from tests.conftest import REPO, fit, generator_state, whole_and_resumed

SMALL = {"batch_size": 16, "train_per_class": 12, "val_fraction": 0.02, "test_fraction": 0.02}


@pytest.fixture(scope="module")
def digits_stream(tmp_path_factory):
    """120 training digits, 100 validation and 100 test ones, converted."""
    source = DigitsDataModule(**SMALL)
    return source, convert(source, tmp_path_factory.mktemp("stream") / "digits")


def test_the_stream_holds_the_source_modules_splits(digits_stream):
    source, root = digits_stream
    dm = StreamingDataModule(str(root), batch_size=16)
    assert (dm.img_shape, dm.class_names) == (source.img_shape, source.class_names)
    for split in ("train", "val", "test"):
        assert torch.equal(dm.split_labels(split), source.split_labels(split))
        assert torch.equal(dm.split_hashes(split), source.split_hashes(split))  # no chunk read for these
        assert torch.equal(dm.real_images(split), source.real_images(split))
    meta = json.loads((root / META).read_text())
    assert meta["counts"] == {"train": 120, "val": 100, "test": 100} and meta["source"]["seed"] == 0


def epoch_images(loader) -> list[torch.Tensor]:
    return [images for images, _ in loader]


def test_an_epoch_streams_each_training_sample_once_in_a_new_order_each_epoch(digits_stream):
    source, root = digits_stream
    dm = StreamingDataModule(str(root), batch_size=16, num_workers=2)
    loader = dm.train_dataloader()
    first = torch.cat(epoch_images(loader))
    assert len(first) == len(loader) * 16 == 112  # 7 full batches of the 120
    rows = {tuple(x.flatten().tolist()) for x in source.real_images("train")}
    assert len({tuple(x.flatten().tolist()) for x in first}) == 112 and all(
        tuple(x.flatten().tolist()) in rows for x in first
    )
    loader.sampler.set_epoch(1)  # what Lightning does at each epoch start
    second = torch.cat(epoch_images(loader))
    assert not torch.equal(first, second)
    loader.sampler.set_epoch(0)
    assert torch.equal(torch.cat(epoch_images(loader)), first)  # an epoch's order is its seed's


def test_flips_are_the_same_at_any_number_of_workers(digits_stream):
    _, root = digits_stream
    batches = [
        epoch_images(
            StreamingDataModule(str(root), batch_size=16, num_workers=w, hflip=True).train_dataloader()
        )
        for w in (0, 2)
    ]
    plain = epoch_images(StreamingDataModule(str(root), batch_size=16, num_workers=2).train_dataloader())
    flipped = torch.cat(batches[1])
    assert sorted(x.sum().item() for x in torch.cat(batches[0])) == sorted(x.sum().item() for x in flipped)
    assert not torch.equal(flipped, torch.cat(plain))  # some were mirrored


@pytest.mark.parametrize("workers", [0, 2])
def test_training_resumes_mid_epoch_exactly(digits_stream, tmp_path, workers):
    _, root = digits_stream
    judge = (
        tmp_path / "judge.ckpt"
    )  # GANMetrics wants one for data other than the digits; 4 steps never use it
    judge.write_bytes(b"")
    data = ["--data=StreamingDataModule", f"--data.root={root}", "--data.batch_size=8", "--data.hflip=true"]
    args = (*data, f"--data.judge={judge}", f"--data.num_workers={workers}", "--trainer.limit_val_batches=0")
    whole, resumed = whole_and_resumed(fit, tmp_path, *args)  # 15 batches an epoch: step 2 is mid-epoch
    assert resumed.trainer.global_step == 4
    for key, value in generator_state(whole).items():
        torch.testing.assert_close(generator_state(resumed)[key], value, rtol=0, atol=0)


def test_the_convert_command_and_its_errors(tmp_path):
    folder = tmp_path / "photos"
    for label in ("cat", "dog"):
        (folder / label).mkdir(parents=True)
        for i in range(10):
            pixels = np.full((12, 10, 3), 20 * i + (label == "dog"), np.uint8)
            Image.fromarray(pixels).save(folder / label / f"{i}.png")
    out = tmp_path / "stream"
    command = ["convert", "--data=ImageFolderDataModule", f"--data.root={folder}", "--data.image_size=8",
               "--data.batch_size=4", f"--output_dir={out}"]  # fmt: skip
    run(command)
    source = ImageFolderDataModule(str(folder), image_size=8, batch_size=4)
    dm = StreamingDataModule(str(out), batch_size=4)
    assert dm.img_shape == (3, 8, 8) and dm.class_names == ["cat", "dog"]
    assert torch.equal(dm.real_images("test"), source.real_images("test"))
    assert torch.equal(dm.split_hashes("val"), source.split_hashes("val"))  # the folder's file identities
    with pytest.raises(SystemExit):  # a finished conversion is not overwritten unless asked
        run(command)
    run([*command, "--overwrite=true"])
    with pytest.raises(TypeError, match="val_fraction"):  # set when converting
        StreamingDataModule(str(out), val_fraction=0.5)
    with pytest.raises(FileNotFoundError, match=re.escape(f"data.root={str(folder)!r} holds no {META}")):
        StreamingDataModule(str(folder))
    (folder / "dog" / "7.png").write_bytes(b"not a png")  # an unreadable image is named, never skipped
    with pytest.raises(ValueError, match=re.escape(f"cannot read image {folder / 'dog' / '7.png'}")):
        convert(ImageFolderDataModule(str(folder), image_size=8, batch_size=4), tmp_path / "again")


PROBE = '''
import hashlib, json, os
from lightning.pytorch import Callback


class Probe(Callback):
    """Writes the hashes of the real images each rank trained on."""

    def __init__(self):
        self.seen = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        for images, _ in batch:
            self.seen += [hashlib.sha1(x.cpu().numpy().tobytes()).hexdigest() for x in images]

    def on_train_end(self, trainer, pl_module):
        with open(os.path.join(os.environ["PROBE_DIR"], f"rank{trainer.global_rank}.json"), "w") as f:
            json.dump({"seen": self.seen, "world": trainer.world_size}, f)
'''


def run_with_stacks(command: list[str], env: dict[str, str], timeout: float = 240) -> tuple[int, str]:
    """Runs ``command``; past ``timeout`` seconds every Python process it started prints its threads' stacks
    (faulthandler, on SIGABRT) before the test fails with them."""
    pipes = {"stdout": subprocess.PIPE, "stderr": subprocess.PIPE, "text": True}
    env = {**env, "PYTHONFAULTHANDLER": "1"}
    process = subprocess.Popen(command, cwd=REPO, env=env, start_new_session=True, **pipes)
    try:
        _, stderr = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGABRT)
        _, stderr = process.communicate()
        pytest.fail(f"no end after {timeout} s; the processes' stacks:\n{stderr[-8000:]}")
    return process.returncode, stderr


def test_under_ddp_each_rank_streams_its_own_share(digits_stream, tmp_path):
    _, root = digits_stream
    (tmp_path / "stream_probe.py").write_text(PROBE)
    judge = tmp_path / "judge.ckpt"  # never loaded: GANMetrics evaluates every 500 steps
    judge.write_bytes(b"")
    env = {**os.environ, "PYTHONPATH": f"{tmp_path}:{os.environ.get('PYTHONPATH', '')}",
           "PROBE_DIR": str(tmp_path), "OMP_NUM_THREADS": "1"}  # fmt: skip
    command = [
        sys.executable, "-m", "lightning_gan", "fit", "--config", str(REPO / "configs" / "dcgan.yaml"),
        f"--trainer.default_root_dir={tmp_path / 'run'}", "--trainer.accelerator=cpu", "--trainer.devices=2",
        "--trainer.strategy=ddp", "--trainer.max_epochs=1", "--trainer.limit_val_batches=0",
        "--trainer.enable_progress_bar=false", "--trainer.callbacks+=stream_probe.Probe",
        "--data=StreamingDataModule", f"--data.root={root}", "--data.batch_size=8", "--data.num_workers=1",
        f"--data.judge={judge}",
        "--model.generator.init_args.base_channels=4", "--model.discriminator.init_args.base_channels=4",
    ]  # fmt: skip
    returncode, stderr = run_with_stacks(command, env)
    assert returncode == 0, stderr[-4000:]
    ranks = [json.loads((tmp_path / f"rank{rank}.json").read_text()) for rank in (0, 1)]
    assert all(rank["world"] == 2 for rank in ranks)
    seen = [set(rank["seen"]) for rank in ranks]
    assert len(ranks[0]["seen"]) == len(ranks[1]["seen"]) == 56  # 60 each, in whole batches of 8
    assert not seen[0] & seen[1]  # disjoint shares
