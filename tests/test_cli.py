"""End to end through ``lightning-gan``: steps, checkpoints, resume, grids, generate, config errors."""

from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from lightning_gan.cli import run
from tests.conftest import DCGAN_CONFIG, REPO, TINY, fit


def metrics_rows(run_dir: Path) -> list[dict]:
    with open(run_dir / "metrics.csv") as f:
        return list(csv.DictReader(f))


def test_max_steps_counts_generator_steps_in_logs_and_checkpoint_and_resume_continues(tmp_path):
    cli = fit(tmp_path, "--trainer.max_steps=7", "--model.n_critic=2", "--checkpoint.every_n_train_steps=5")
    run_dir = Path(cli.trainer.log_dir)
    assert cli.trainer.global_step == 7
    rows = metrics_rows(run_dir)
    assert [int(float(r["step"])) for r in rows] == list(range(1, 8))  # one row per generator step
    assert all(np.isfinite(float(r["loss/d"])) and np.isfinite(float(r["loss/g"])) for r in rows)
    last = run_dir / "checkpoints" / "last.ckpt"
    assert torch.load(last, weights_only=False)["global_step"] == 7
    assert (run_dir / "checkpoints" / "step=000005.ckpt").is_file()  # the periodic one, named by G step
    assert sorted(p.name for p in (run_dir / "samples").glob("*.png"))[-1] == "step_000007.png"

    # A new invocation resumes the newest last.ckpt in the same run folder and continues the count.
    resumed = fit(tmp_path, "--trainer.max_steps=10", "--model.n_critic=2", "--ckpt_path=last")
    assert Path(resumed.trainer.log_dir) == run_dir
    assert resumed.trainer.global_step == 10
    assert torch.load(last, weights_only=False)["global_step"] == 10
    steps = [int(float(r["step"])) for r in metrics_rows(run_dir)]
    assert steps[-3:] == [8, 9, 10]
    assert len(list(tmp_path.glob("lightning_logs/version_*"))) == 1


def test_separate_runs_get_separate_folders(tmp_path):
    first = fit(tmp_path, "--trainer.max_steps=1")
    second = fit(tmp_path, "--trainer.max_steps=1")
    assert first.trainer.log_dir != second.trainer.log_dir
    assert (Path(first.trainer.log_dir) / "checkpoints" / "last.ckpt").is_file()


def test_resume_last_picks_last_ckpt_not_a_crash_checkpoint(tmp_path):
    cli = fit(tmp_path, "--trainer.max_steps=2")
    ckpt_dir = Path(cli.trainer.log_dir) / "checkpoints"
    (ckpt_dir / "on_exception.ckpt").write_bytes((ckpt_dir / "last.ckpt").read_bytes())
    resumed = fit(tmp_path, "--trainer.max_steps=3", "--ckpt_path=last")
    assert resumed.config.fit.ckpt_path == str(ckpt_dir / "last.ckpt")


def test_resume_last_without_checkpoint_fails_naming_the_folder(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        fit(tmp_path, "--trainer.max_steps=2", "--ckpt_path=last")
    assert exit_info.value.code != 0
    err = capsys.readouterr().err
    assert "no last checkpoint" in err and str(tmp_path.resolve()) in err and "Traceback" not in err


def test_seed_everything_makes_a_run_repeatable(tmp_path):
    weights = []
    for name in ("a", "b"):
        cli = fit(tmp_path / name, "--trainer.max_steps=3", "--seed_everything=7")
        weights.append(torch.cat([p.detach().flatten() for p in cli.model.generator.parameters()]))
    assert torch.equal(weights[0], weights[1])


def test_fit_writes_a_png_grid_and_generate_writes_the_npz(tmp_path):
    cli = fit(tmp_path, "--trainer.max_steps=2")
    grid = Image.open(Path(cli.trainer.log_dir) / "samples" / "step_000002.png")
    assert grid.size == (8 * 32, 8 * 32)  # 8x8 tiles of 28 px + 2 px padding each side
    assert (Path(cli.trainer.log_dir) / "curves.png").is_file()

    out = tmp_path / "out" / "samples.npz"
    ckpt = Path(cli.trainer.log_dir) / "checkpoints" / "last.ckpt"
    run(["generate", f"--ckpt_path={ckpt}", "--num_samples=37", f"--output={out}", "--batch_size=10"])
    with np.load(out) as data:
        assert set(data.files) == {"images"}  # labels only for conditional models
        images = data["images"]
    assert images.dtype == np.float32 and images.shape == (37, 1, 28, 28)
    assert images.min() >= -1 and images.max() <= 1
    assert out.with_suffix(".png").is_file()
    for batch_size in (500, 1):  # 1 x latent_dim 8: fewer than the 16 numbers of torch's vectorised randn
        again = tmp_path / f"again{batch_size}.npz"
        run(
            [
                "generate",
                f"--ckpt_path={ckpt}",
                "--num_samples=37",
                f"--output={again}",
                f"--batch_size={batch_size}",
            ]
        )
        assert np.allclose(np.load(again)["images"], images, atol=1e-5)  # same seed, same z, any batch size


@pytest.mark.parametrize(
    ("make_file", "message"),
    [(None, "no such checkpoint file"), (b"not a checkpoint", "not a readable lightning-gan checkpoint")],
)
def test_generate_names_a_missing_or_corrupt_checkpoint(tmp_path, capsys, make_file, message):
    ckpt = tmp_path / "model.ckpt"
    if make_file is not None:
        ckpt.write_bytes(make_file)
    with pytest.raises(SystemExit) as exit_info:
        run(["generate", f"--ckpt_path={ckpt}", f"--output={tmp_path / 's.npz'}"])
    assert exit_info.value.code != 0
    err = capsys.readouterr().err
    assert message in err and str(ckpt) in err and "Traceback" not in err


@pytest.mark.parametrize(
    ("arg", "expected"),
    [
        # jsonargparse names the nested key as 'Parser key "model": ... Parser key "loss"'
        ("--model.loss=hnge", ['Parser key "model"', 'Parser key "loss"', "hnge", "wasserstein"]),
        ("--model.n_critic=0", ["model.n_critic", "0", ">= 1"]),
        ("--model.lr_d=-0.1", ["model.lr_d", "-0.1", ">= 0"]),
        ("--data.batch_size=0", ["data.batch_size", "0", ">= 1"]),
        ("--model.n_critc=5", ["n_critc"]),
        ("--model.optimizer_g=sgd", ['Parser key "optimizer_g"', "sgd", "rmsprop"]),
    ],
)
def test_bad_config_fails_before_training_naming_key_value_and_allowed(tmp_path, capsys, arg, expected):
    with pytest.raises(SystemExit) as exit_info:
        fit(tmp_path, "--trainer.max_steps=1", arg)
    assert exit_info.value.code != 0
    err = capsys.readouterr().err.split("error:", 1)[-1]  # the message, not the usage line listing every key
    for word in expected:
        assert word in err, (word, err)
    assert "Traceback" not in err
    assert not list(tmp_path.glob("**/*.ckpt"))  # nothing trained


def test_print_config_lists_the_keys_users_type(capsys):
    with pytest.raises(SystemExit):
        run(["fit", "--print_config", "--config", DCGAN_CONFIG])
    out = capsys.readouterr().out
    for key in (
        "loss:",
        "n_critic:",
        "lr_g:",
        "lr_d:",
        "betas_g:",
        "optimizer_d:",
        "latent_dim:",
        "clip_value:",
        "gp_weight:",
        "spectral_norm:",
        "batch_size:",
        "num_workers:",
        "seed:",
        "every_n_steps:",
    ):
        assert key in out, key


def test_console_script_and_module_entry_point_run(tmp_path):
    """The installed ``lightning-gan`` and ``python -m lightning_gan`` both run a fit, in a fresh process."""
    args = [
        "fit",
        "--config",
        DCGAN_CONFIG,
        f"--trainer.default_root_dir={tmp_path}",
        "--trainer.max_steps=1",
        *TINY,
    ]
    result = subprocess.run(
        [sys.executable, "-m", "lightning_gan", *args], capture_output=True, text=True, cwd=REPO, timeout=300
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert list(tmp_path.glob("lightning_logs/version_0/checkpoints/last.ckpt"))


def test_image_size_comes_from_the_data_module_not_typed_twice(tmp_path):
    cli = fit(tmp_path, "--trainer.max_steps=1", "--data.image_size=32")
    assert cli.model.img_shape == (1, 32, 32)
    assert cli.model.sample(2).shape == (2, 1, 32, 32)


def test_readme_test_command_is_what_ci_runs():
    readme_lines = (REPO / "README.md").read_text().splitlines()[:2]
    test_command = readme_lines[1].split("&&")[-1].strip()
    assert test_command == "bash .ci/tests"
    assert test_command in (REPO / ".ci" / "run").read_text().splitlines()
    assert "python -m pytest tests -n 2 " in (REPO / ".ci" / "tests").read_text()  # on both cores
    assert "lightning-gan fit --config configs/dcgan.yaml" in readme_lines[0]


def test_a_setting_checked_at_setup_is_a_usage_error_without_traceback(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        run(["fit", "--config", str(REPO / "configs" / "cgan.yaml"), f"--trainer.default_root_dir={tmp_path}",
             "--data.num_labelled=100", "--trainer.max_steps=1"])  # fmt: skip
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.split("error:", 1)[-1]
    assert "model.conditioning='cgan' is not allowed" in err and "Traceback" not in err
