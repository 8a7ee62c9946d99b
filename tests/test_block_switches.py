"""The block switches of issue 17 (norm, activation, kernel, depth, dropout, block noise) on every backbone, G
and D separately: each builds exactly what it names, and bad combinations fail naming the key."""

import functools

import numpy as np
import pytest
import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.nn.modules.instancenorm import _InstanceNorm

from lightning_gan.models import GAN
from lightning_gan.nets import (
    DCGANDiscriminator,
    DCGANGenerator,
    MLPDiscriminator,
    MLPGenerator,
    SignalDiscriminator,
    SignalGenerator,
    VirtualBatchNorm,
)
from lightning_gan.nets.blocks import BlockNoise, SamplingDropout
from tests.conftest import fit, generator_state, whole_and_resumed

LATENT, N = 8, 3
IMG, HAR = (1, 28, 28), (1, 6, 32)
# backbone -> (G factory, D factory or None, input shape)
NETS = {
    "dcgan": (
        functools.partial(DCGANGenerator, LATENT, IMG, base_channels=8),
        functools.partial(DCGANDiscriminator, IMG, base_channels=8),
    ),
    "signal2d": (
        functools.partial(SignalGenerator, LATENT, HAR, base_channels=8),
        functools.partial(SignalDiscriminator, HAR, base_channels=8),
    ),
    "signal1d": (
        functools.partial(SignalGenerator, LATENT, HAR, conv="1d", base_channels=8),
        functools.partial(SignalDiscriminator, HAR, conv="1d", base_channels=8),
    ),
    "mlp": (
        functools.partial(MLPGenerator, LATENT, IMG, hidden=(16, 32)),
        functools.partial(MLPDiscriminator, IMG, hidden=(32, 16)),
    ),
}
CONV = ["dcgan", "signal2d", "signal1d"]
NORM_TYPES = (_BatchNorm, _InstanceNorm, nn.GroupNorm, VirtualBatchNorm)


def _build(backbone: str, net: str, **kwargs) -> nn.Module:
    return NETS[backbone][0 if net == "g" else 1](**kwargs)


def _run(module: nn.Module, backbone: str, net: str) -> torch.Tensor:
    if net == "g":
        return module(torch.randn(N, LATENT))
    return module(torch.randn(N, *(HAR if backbone.startswith("signal") else IMG))).logits


def _norms(module: nn.Module) -> list[nn.Module]:
    return [m for m in module.modules() if isinstance(m, NORM_TYPES)]


def _expected_norm(norm: str, backbone: str) -> type[nn.Module]:
    one_d = backbone in ("signal1d", "mlp")
    return {
        "batch": nn.BatchNorm1d if one_d else nn.BatchNorm2d,
        "instance": nn.InstanceNorm1d if one_d else nn.InstanceNorm2d,
        "layer": nn.GroupNorm,
        "group": nn.GroupNorm,
        "virtual": VirtualBatchNorm,
    }[norm]


@pytest.mark.parametrize("norm", ["batch", "instance", "layer", "group", "none", "virtual"])
@pytest.mark.parametrize("net", ["g", "d"])
@pytest.mark.parametrize("backbone", [*CONV, "mlp"])
def test_each_norm_builds_the_module_it_names(backbone, net, norm):
    if net == "d" and (norm == "virtual" or backbone == "mlp"):
        pytest.skip("virtual norm is G's; the MLP D has no norm")
    if backbone == "mlp" and norm in ("instance", "virtual"):
        pytest.skip("refused or not offered on the MLP G (see test_bad_combinations_name_the_key)")
    kwargs = {"norm": norm, "norm_groups": 4}
    if norm == "virtual":
        kwargs["vbn_reference"] = 4
    module = _build(backbone, net, **kwargs)
    norms = _norms(module)
    if norm == "none":
        assert norms == []
    else:
        assert norms and all(type(m) is _expected_norm(norm, backbone) for m in norms)
    if norm in ("layer", "group"):
        assert {m.num_groups for m in norms} == {1 if norm == "layer" else 4}
    assert torch.isfinite(_run(module, backbone, net)).all()


ACTIVATIONS = {
    "relu": nn.ReLU,
    "leakyrelu": nn.LeakyReLU,
    "prelu": nn.PReLU,
    "elu": nn.ELU,
    "silu": nn.SiLU,
    "gelu": nn.GELU,
}


def _activations(module: nn.Module) -> list[nn.Module]:
    return [m for m in module.modules() if isinstance(m, tuple(ACTIVATIONS.values()))]


@pytest.mark.parametrize("activation", list(ACTIVATIONS))
@pytest.mark.parametrize("net", ["g", "d"])
@pytest.mark.parametrize("backbone", [*CONV, "mlp"])
def test_each_activation_builds_the_module_it_names(backbone, net, activation):
    module = _build(backbone, net, activation=activation)
    acts = _activations(module)
    assert acts and all(type(m) is ACTIVATIONS[activation] for m in acts)
    assert torch.isfinite(_run(module, backbone, net)).all()


@pytest.mark.parametrize("backbone", CONV)
def test_default_activations_and_slope(backbone):
    g, d = _build(backbone, "g"), _build(backbone, "d")
    assert {type(m) for m in _activations(g)} == {nn.ReLU}
    assert {(type(m), m.negative_slope) for m in _activations(d)} == {(nn.LeakyReLU, 0.2)}
    slopes = {
        m.negative_slope
        for m in _activations(_build(backbone, "g", activation="leakyrelu", activation_slope=0.1))
    }
    assert slopes == {0.1}


def _convs(module: nn.Module) -> int:
    return sum(isinstance(m, nn.Conv1d | nn.Conv2d | nn.ConvTranspose2d) for m in module.modules())


# resolutions with extra blocks: DCGAN G: the start map and every stage but the output; signal G: the start
# map and every stage; D: every stage
@pytest.mark.parametrize("net", ["g", "d"])
@pytest.mark.parametrize("backbone", CONV)
def test_depth_adds_blocks_per_stage_and_keeps_the_shape(backbone, net):
    base, deep = _build(backbone, net), _build(backbone, net, extra_blocks=2)
    stages = len(base.stages)
    resolutions = {"g": stages if backbone == "dcgan" else stages + 1, "d": stages}[net]
    assert _convs(deep) - _convs(base) == 2 * resolutions
    assert len(deep.stages) == stages
    assert _run(deep, backbone, net).shape == _run(base, backbone, net).shape
    if net == "d":
        assert deep.num_features == base.num_features


@pytest.mark.parametrize("upsample", ["transposed", "nearest"])
@pytest.mark.parametrize("kernel", [2, 3, 5])
def test_dcgan_kernel(kernel, upsample):
    g = DCGANGenerator(LATENT, (3, 32, 32), base_channels=8, upsample=upsample, kernel=kernel, extra_blocks=1)
    d = DCGANDiscriminator((3, 32, 32), base_channels=8, kernel=kernel, extra_blocks=1)
    assert g(torch.randn(N, LATENT)).shape == (N, 3, 32, 32)
    assert d(torch.randn(N, 3, 32, 32)).features.shape == (N, 8 * 4 * 4 * 4)
    for net in (g, d):
        convs = [m for m in net.modules() if isinstance(m, nn.Conv2d | nn.ConvTranspose2d)]
        assert convs and {m.kernel_size for m in convs} == {(kernel, kernel)}


def _two_samples(g: nn.Module) -> tuple[torch.Tensor, torch.Tensor]:
    g.eval()
    z = torch.randn(N, LATENT)
    with torch.no_grad():
        return g(z), g(z)


@pytest.mark.parametrize("backbone", [*CONV, "mlp"])
def test_dropout_kept_on_at_sampling(backbone):
    on = _build(backbone, "g", dropout=0.5, dropout_at_sampling=True)
    off = _build(backbone, "g", dropout=0.5)
    assert any(isinstance(m, SamplingDropout) for m in off.modules())
    a, b = _two_samples(on)
    assert not torch.equal(a, b)
    a, b = _two_samples(off)
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    off.train()
    z = torch.randn(N, LATENT)
    assert not torch.equal(off(z), off(z))  # it is there in training


@pytest.mark.parametrize("backbone", [*CONV, "mlp"])
def test_block_noise_makes_one_z_give_different_samples(backbone):
    noisy = _build(backbone, "g", block_noise=2)
    a, b = _two_samples(noisy)
    assert not torch.equal(a, b)
    weights = [
        m for m in noisy.modules() if isinstance(m, nn.Conv1d | nn.Conv2d | nn.ConvTranspose2d | nn.Linear)
    ]
    blocks = len(weights) - (0 if backbone == "mlp" else 1)  # every weight layer but the projection of z
    assert sum(isinstance(m, BlockNoise) for m in noisy.modules()) == blocks
    a, b = _two_samples(_build(backbone, "g"))
    torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_sampling_dropout_reaches_the_gan_sample():
    def gan(at_sampling: bool) -> GAN:
        g = functools.partial(DCGANGenerator, base_channels=8, dropout=0.5, dropout_at_sampling=at_sampling)
        return GAN(
            g, functools.partial(DCGANDiscriminator, base_channels=8), img_shape=IMG, latent_dim=LATENT
        )

    z = torch.randn(N, LATENT)
    model = gan(True)
    assert not torch.equal(model.sample(N, z=z), model.sample(N, z=z))
    model = gan(False)
    torch.testing.assert_close(model.sample(N, z=z), model.sample(N, z=z), rtol=0, atol=0)


@pytest.mark.parametrize("net", ["g", "d"])
@pytest.mark.parametrize("backbone", CONV)
def test_group_norm_groups_must_divide_the_channels(backbone, net):
    with pytest.raises(ValueError, match=r"norm_groups=3 is not allowed: must divide the channels"):
        _build(backbone, net, norm="group", norm_groups=3)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        (
            {"norm": "instance"},
            r"norm='instance' is not allowed: instance norm of features \(N, C\), a 1x1 map",
        ),
        ({"norm": "virtual"}, r"norm='virtual' is not allowed: choose one of"),
        ({"norm": "group", "norm_groups": 5}, "norm_groups=5 is not allowed"),
        ({"activation": "tanh"}, "activation='tanh' is not allowed: choose one of relu, leakyrelu"),
        ({"dropout": 1.0}, r"dropout=1.0 is not allowed: must be in \[0, 1\)"),
        ({"block_noise": -1}, "block_noise=-1 is not allowed: must be an integer >= 0"),
        ({"dropout_at_sampling": True}, "dropout_at_sampling=True is not allowed: .* needs dropout > 0"),
    ],
)
def test_bad_combinations_name_the_key(kwargs, match):
    with pytest.raises(ValueError, match=match):
        _build("mlp", "g", **kwargs)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"kernel": 0}, "kernel=0 is not allowed: must be an integer >= 1"),
        ({"extra_blocks": -1}, "extra_blocks=-1 is not allowed: must be an integer >= 0"),
        ({"activation_slope": -0.1}, "activation_slope=-0.1 is not allowed: must be >= 0"),
    ],
)
@pytest.mark.parametrize("net", ["g", "d"])
def test_bad_dcgan_settings_name_the_key(net, kwargs, match):
    with pytest.raises(ValueError, match=match):
        _build("dcgan", net, **kwargs)


@pytest.mark.parametrize(("norm", "refused"), [("batch", True), ("group", False), ("layer", False)])
def test_gradient_penalty_refuses_batch_norm_only(norm, refused):
    d = functools.partial(DCGANDiscriminator, base_channels=8, norm=norm, norm_groups=4)
    g = functools.partial(DCGANGenerator, base_channels=8)
    build = functools.partial(GAN, g, d, img_shape=IMG, latent_dim=LATENT, gp_weight=10.0)
    if refused:
        with pytest.raises(ValueError, match=r"model\.gp_weight=10\.0 .*without BatchNorm"):
            build()
    else:
        build()


def test_block_switches_train_and_resume_bit_exact(tmp_path):
    """Block noise and dropout draw from the training step's forked random stream: a resumed run repeats the
    whole run's G exactly."""
    flags = [
        f"--model.generator.init_args.{key}={value}"
        for key, value in (
            ("block_noise", 1),
            ("dropout", 0.2),
            ("extra_blocks", 1),
            ("activation", "prelu"),
            ("norm", "group"),
            ("norm_groups", 2),
        )
    ]
    whole, resumed = whole_and_resumed(
        fit, tmp_path, *flags, "--model.discriminator.init_args.activation=elu"
    )
    a, b = generator_state(whole), generator_state(resumed)
    assert any(isinstance(m, BlockNoise) for m in whole.model.generator.modules())
    assert all(torch.equal(a[k], b[k]) for k in a) and resumed.trainer.global_step == 4


def test_generate_repeats_g_s_sampling_noise_for_one_seed(tmp_path):
    from lightning_gan.cli import run
    from tests.conftest import fit

    g = "--model.generator.init_args."
    switches = (f"{g}block_noise=2", f"{g}dropout=0.3", f"{g}dropout_at_sampling=true")
    cli = fit(tmp_path, "--trainer.max_steps=1", *switches)
    ckpt = tmp_path / "last.ckpt"
    cli.trainer.save_checkpoint(ckpt)
    images = {}
    for name, seed in (("a", 0), ("b", 0), ("c", 1)):
        run(
            [
                "generate",
                f"--ckpt_path={ckpt}",
                "--num_samples=8",
                f"--seed={seed}",
                f"--output={tmp_path / name}.npz",
            ]
        )
        images[name] = np.load(tmp_path / f"{name}.npz")["images"]
    assert np.array_equal(images["a"], images["b"]) and not np.allclose(images["a"], images["c"])
