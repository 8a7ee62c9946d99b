"""Virtual batch normalisation (Salimans et al. 2016, sec. 3.5) as a norm of the DCGAN and signal generators:
``--model.generator.init_args.norm virtual`` with a reference batch of ``vbn_reference`` samples."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch.nn import functional as F

from lightning_gan.cli import run
from lightning_gan.nets import (
    DCGANDiscriminator,
    DCGANGenerator,
    SignalDiscriminator,
    SignalGenerator,
    VirtualBatchNorm,
)
from tests.conftest import REPO, fit, fit_signal, generator_state, whole_and_resumed

CDCGAN = str(REPO / "configs" / "cdcgan.yaml")
VIRTUAL = ["--model.generator.init_args.norm=virtual", "--model.generator.init_args.vbn_reference=8"]
GENERATORS = {  # conditional, so the reference labels take part too
    "dcgan": (lambda **k: DCGANGenerator(8, (1, 28, 28), 10, base_channels=4, **k), 10),
    "signal-2d": (lambda **k: SignalGenerator(8, (1, 6, 32), 6, base_channels=2, **k), 6),
    "signal-1d": (lambda **k: SignalGenerator(8, (1, 6, 32), 6, conv="1d", base_channels=2, **k), 6),
}


def fit_cdcgan(root: Path, *args: str):
    return fit(root, *args, config=CDCGAN)


@pytest.mark.parametrize(("norm", "mode"), [("virtual", "train"), ("virtual", "eval"), ("batch", "train")])
@pytest.mark.parametrize("net", list(GENERATORS))
def test_a_sample_s_output_depends_on_the_rest_of_its_batch_with_batch_norm_only(net, norm, mode):
    factory, classes = GENERATORS[net]
    torch.manual_seed(0)
    g = factory(norm=norm, vbn_reference=8).train(mode == "train")
    z, label = torch.randn(1, 8), torch.tensor([1])
    a = g(torch.cat([z, torch.randn(5, 8)]), torch.cat([label, torch.arange(5) % classes]))[0]
    b = g(torch.cat([z, 3 * torch.randn(3, 8)]), torch.cat([label, torch.zeros(3, dtype=torch.long)]))[0]
    alone = g(z, label)[0]
    if norm == "virtual":
        torch.testing.assert_close(a, b)
        torch.testing.assert_close(a, alone)
        assert any(isinstance(m, VirtualBatchNorm) for m in g.modules())
    else:
        assert not torch.allclose(a, b)


@pytest.mark.parametrize("shape", [(3, 4), (3, 4, 7), (3, 4, 5, 6)])
def test_virtual_batch_norm_equals_the_paper_s_formula(shape):
    torch.manual_seed(0)
    r = 5
    layer = VirtualBatchNorm(shape[1], reference_size=r)
    torch.nn.init.normal_(layer.weight, 1.0, 0.5)
    torch.nn.init.normal_(layer.bias, 0.0, 0.5)
    x = torch.randn(r + shape[0], *shape[1:]) * 2 + 1
    out = layer(x)
    view = (1, -1) + (1,) * (x.ndim - 2)
    gamma, beta = layer.weight.view(view), layer.bias.view(view)
    # the reference rows: plain batch norm over the reference batch
    torch.testing.assert_close(out[:r], F.batch_norm(x[:r], None, None, layer.weight, layer.bias, True))
    dims = (0, *range(2, x.ndim))
    ref_mean, ref_sq = x[:r].mean(dims, keepdim=True), x[:r].square().mean(dims, keepdim=True)
    for i in range(r, len(x)):
        xi = x[i : i + 1]
        own = tuple(range(2, x.ndim))
        mean_i = xi.mean(own, keepdim=True) if own else xi
        sq_i = xi.square().mean(own, keepdim=True) if own else xi.square()
        mean = mean_i / (r + 1) + r / (r + 1) * ref_mean
        sq = sq_i / (r + 1) + r / (r + 1) * ref_sq
        expected = (xi - mean) / torch.sqrt(sq - mean**2 + 1e-5) * gamma + beta
        torch.testing.assert_close(out[i : i + 1], expected)


def test_the_reference_batch_is_drawn_once_balanced_and_repeatable_and_its_gamma_gets_the_dcgan_init():
    torch.manual_seed(3)
    g = DCGANGenerator(8, (1, 28, 28), 10, base_channels=4, norm="virtual", vbn_reference=12)
    torch.manual_seed(3)
    again = DCGANGenerator(8, (1, 28, 28), 10, base_channels=4, norm="virtual", vbn_reference=12)
    assert g.reference.z.shape == (12, 8) and torch.equal(g.reference.z, again.reference.z)
    assert g.reference.labels.tolist() == [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 0, 1]
    assert {"reference.z", "reference.labels"} <= set(g.state_dict())
    gammas = torch.cat([m.weight for m in g.modules() if isinstance(m, VirtualBatchNorm)])
    assert gammas.min() > 0.9 and gammas.max() < 1.1 and not torch.all(gammas == 1)  # N(1, 0.02)
    unconditional = SignalGenerator(8, (1, 6, 32), base_channels=2, norm="virtual", vbn_reference=4)
    assert unconditional.reference.labels is None and "reference.labels" not in unconditional.state_dict()
    plain = DCGANGenerator(8, (1, 28, 28), 10, base_channels=4)
    assert plain.reference is None and not any(k.startswith("reference.") for k in plain.state_dict())


def test_g_s_gradients_flow_through_the_reference_statistics():
    torch.manual_seed(0)
    g = DCGANGenerator(8, (1, 28, 28), 10, base_channels=4, norm="virtual", vbn_reference=8)
    z, labels = torch.randn(3, 8), torch.tensor([0, 4, 9])
    before = g(z, labels)
    # the reference rows reach the asked samples' outputs through the VBN statistics only
    g.reference.z.requires_grad_(True)
    g(z, labels).square().sum().backward()
    assert g.reference.z.grad is not None and g.reference.z.grad.abs().sum() > 0
    g.reference.z.requires_grad_(False)
    with torch.no_grad():
        g.reference.z.copy_(torch.randn(8, 8))
    assert not torch.allclose(g(z, labels), before)  # only the reference batch changed


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (
            lambda: DCGANGenerator(8, (1, 28, 28), norm="virtual", vbn_reference=1),
            r"vbn_reference=1 is not allowed: must be an integer >= 2: a reference batch of one",
        ),
        (
            lambda: SignalGenerator(8, (1, 6, 32), conv="1d", norm="virtual", vbn_reference=0),
            r"vbn_reference=0 is not allowed: must be an integer >= 2",
        ),
        (
            lambda: DCGANGenerator(8, (1, 28, 28), 10, norm="virtual", conditioning="cbn"),
            r"norm='virtual' is not allowed: conditioning='cbn' needs norm='batch'",
        ),
        (
            lambda: SignalGenerator(8, (1, 6, 32), 6, norm="virtual", conditioning="cbn"),
            r"norm='virtual' is not allowed: conditioning='cbn' needs norm='batch'",
        ),
        (
            lambda: DCGANDiscriminator((1, 28, 28), norm="virtual"),
            r"norm='virtual' is not allowed: choose one of batch, instance, layer, group, none$",
        ),
        (
            lambda: SignalDiscriminator((1, 6, 32), norm="virtual"),
            r"norm='virtual' is not allowed: choose one of batch, instance, layer, group, none$",
        ),
        (
            lambda: DCGANGenerator(8, (1, 28, 28), norm="vitrual"),
            r"norm='vitrual' is not allowed: choose one of batch, instance, layer, group, none, virtual",
        ),
    ],
)
def test_bad_vbn_settings_fail_naming_the_key(build, message):
    with pytest.raises(ValueError, match=message):
        build()


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        ([*VIRTUAL, "--model.generator.init_args.vbn_reference=1"], ["vbn_reference=1", ">= 2"]),
        (["--model.discriminator.init_args.norm=virtual"], ["norm", "virtual", "instance"]),
    ],
)
def test_bad_vbn_settings_are_usage_errors_before_training(tmp_path, capsys, args, expected):
    with pytest.raises(SystemExit) as exit_info:
        fit_cdcgan(tmp_path, "--trainer.max_steps=1", *args)
    assert exit_info.value.code != 0
    err = capsys.readouterr().err.split("error:", 1)[-1]
    assert all(word in err for word in expected), err
    assert "Traceback" not in err and not list(tmp_path.glob("**/*.ckpt"))


def test_the_reference_batch_is_checkpointed_restored_on_resume_and_used_by_generate(tmp_path):
    cli = fit_cdcgan(tmp_path, "--trainer.max_steps=2", *VIRTUAL)
    reference = {k: v.clone() for k, v in generator_state(cli).items() if ".reference." in k}
    assert set(reference) == {"generator.reference.z", "generator.reference.labels"}
    ckpt = Path(cli.trainer.log_dir) / "checkpoints" / "last.ckpt"
    saved = torch.load(ckpt, weights_only=False)["state_dict"]
    assert all(torch.equal(saved[k], v) for k, v in reference.items())
    # Another seed would build another reference batch: the resumed run must take the checkpoint's.
    resumed = fit_cdcgan(
        tmp_path, "--trainer.max_steps=3", "--ckpt_path=last", "--seed_everything=1", *VIRTUAL
    )
    assert resumed.trainer.global_step == 3
    state = generator_state(resumed)
    assert all(torch.equal(state[k], v) for k, v in reference.items())

    torch.manual_seed(123)  # the G that generate builds before loading draws yet another reference batch
    outputs = [tmp_path / "one.npz", tmp_path / "chunks.npz"]
    # chunks of 4 and 3: generate draws z chunk by chunk, which gives the same z as one draw only when every
    # chunk draws >= 16 numbers (torch's CPU randn takes another path below 16)
    for out, batch_size in zip(outputs, (7, 4), strict=True):
        run(
            [
                "generate",
                f"--ckpt_path={ckpt}",
                "--num_samples=7",
                f"--output={out}",
                f"--batch_size={batch_size}",
            ]
        )
    rng = torch.Generator().manual_seed(0)  # as generate draws labels, then z, with --seed 0
    labels = torch.randint(10, (7,), generator=rng)
    z = torch.randn(7, resumed.model.latent_dim, generator=rng)
    expected = resumed.model.sample(7, labels, z=z).numpy()
    for out in outputs:
        with np.load(out) as data:
            assert np.array_equal(data["labels"], labels.numpy())
            np.testing.assert_allclose(data["images"], expected, atol=1e-5)


def test_virtual_norm_trains_the_image_preset_and_resumes_bit_exact(tmp_path):
    whole, resumed = whole_and_resumed(fit_cdcgan, tmp_path, *VIRTUAL)
    a, b = generator_state(whole), generator_state(resumed)
    assert "generator.reference.z" in a
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert all(torch.isfinite(v) for k, v in whole.trainer.logged_metrics.items() if k.startswith("loss/"))


@pytest.mark.parametrize("conv", ["2d", "1d"])
def test_virtual_norm_trains_the_signal_preset_and_resumes_bit_exact(tmp_path, conv):
    flags = [
        *VIRTUAL,
        f"--model.generator.init_args.conv={conv}",
        f"--model.discriminator.init_args.conv={conv}",
    ]
    whole, resumed = whole_and_resumed(fit_signal, tmp_path, *flags)
    a, b = generator_state(whole), generator_state(resumed)
    assert "generator.reference.z" in a
    assert all(torch.equal(a[k], b[k]) for k in a) and resumed.trainer.global_step == 4
