"""TensorBoard logging through the shipped logger config (issue 19, item 4), read back with tensorboard's own
readers: scalars, sample grids as images, the resolved config as text, and a resume into the same run."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests.conftest import REPO, fit

pytest.importorskip("tensorboard", reason="needs pip install 'lightning-gan[tensorboard]'")
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.backend.event_processing.event_file_loader import EventFileLoader

LOGGER = ["--trainer.logger", str(REPO / "configs" / "logger" / "tensorboard.yaml")]


def events(run: Path) -> EventAccumulator:
    accumulator = EventAccumulator(str(run), size_guidance={"scalars": 0, "images": 0, "tensors": 0})
    accumulator.Reload()
    return accumulator


def test_a_tensorboard_run_holds_the_scalars_the_sample_grids_and_the_config(tmp_path):
    cli = fit(tmp_path, *LOGGER, "--trainer.max_steps=4")
    run = Path(cli.trainer.log_dir)
    assert run == tmp_path / "tensorboard" / "version_0" and (run / "config.yaml").is_file()
    tb = events(run)
    assert [e.step for e in tb.Scalars("loss/g")] == [1, 2, 3, 4]
    assert "hp_metric" not in tb.Tags()["scalars"]
    assert [e.step for e in tb.Images("samples")] == [4]
    (config,) = tb.Tensors("config/text_summary")
    text = config.tensor_proto.string_val[0].decode()
    assert "class_path: lightning_gan.loggers.TensorBoardLogger" in text and "max_steps: 4" in text


def test_a_resume_continues_the_tensorboard_run_and_drops_the_steps_it_logs_again(tmp_path):
    args = [*LOGGER, "--trainer.max_steps=4", "--checkpoint.every_n_train_steps=2"]
    first = fit(tmp_path, *args)
    run = Path(first.trainer.log_dir)
    # killed after step 4 with its newest checkpoint at step 2: steps 3 and 4 are trained and logged again
    shutil.copy(run / "checkpoints" / "step=000002.ckpt", run / "checkpoints" / "last.ckpt")
    resumed = fit(tmp_path, *args, "--ckpt_path=last")
    assert Path(resumed.trainer.log_dir) == run and not (tmp_path / "tensorboard" / "version_1").exists()
    files = sorted(run.glob("events.out.tfevents.*"))
    assert len(files) == 2
    starts = [e.step for e in EventFileLoader(str(files[1])).Load() if e.HasField("session_log")]
    assert starts == [3]  # the resumed writer tells readers to drop the first run's steps >= 3
    assert [e.step for e in events(run).Scalars("loss/g")] == [1, 2, 3, 4]
