import functools
from typing import get_args

import pytest
import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.nn.utils import parametrize

from lightning_gan.nets import DCGANDiscriminator, DCGANGenerator, DOut, apply_spectral_norm, has_batchnorm
from lightning_gan.nets.layers import NormKind

SHAPES = [(1, 28, 28), (1, 32, 32), (3, 64, 64), (3, 32, 48)]
NORMS = get_args(NormKind)
LATENT = 16
N = 4


def _leaves(module: nn.Module) -> list[nn.Module]:
    return [m for m in module.modules() if not list(m.children())]


@pytest.mark.parametrize("upsample", ["transposed", "nearest", "bilinear"])
@pytest.mark.parametrize("img_shape", SHAPES)
def test_generator_output_shape_and_range(img_shape, upsample):
    g = DCGANGenerator(LATENT, img_shape, base_channels=8, upsample=upsample)
    x = g(torch.randn(N, LATENT) * 100)
    assert x.shape == (N, *img_shape)
    assert x.min() >= -1 and x.max() <= 1
    assert isinstance(_leaves(g)[-1], nn.Tanh)


@pytest.mark.parametrize(
    ("img_shape", "start_shape", "num_stages"),
    [
        ((1, 28, 28), (16, 7, 7), 2),
        ((1, 32, 32), (32, 4, 4), 3),
        ((3, 64, 64), (64, 4, 4), 4),
        ((3, 32, 48), (32, 4, 6), 3),
    ],
)
def test_generator_stage_count(img_shape, start_shape, num_stages):
    g = DCGANGenerator(LATENT, img_shape, base_channels=8)
    assert g.start_shape == start_shape
    assert len(g.stages) == num_stages


@pytest.mark.parametrize("norm", NORMS)
@pytest.mark.parametrize("img_shape", SHAPES)
def test_discriminator_output(img_shape, norm):
    d = DCGANDiscriminator(img_shape, base_channels=8, norm=norm)
    out = d(torch.randn(N, *img_shape))
    assert isinstance(out, DOut)
    assert out.logits.shape == (N,)
    assert out.class_logits is None
    assert out.features.shape == (N, d.num_features)
    n, (_, h, w) = len(d.stages), img_shape
    assert d.num_features == 8 * 2 ** (n - 1) * (h // 2**n) * (w // 2**n)


@pytest.mark.parametrize("norm", NORMS)
def test_generator_norms(norm):
    g = DCGANGenerator(LATENT, (1, 28, 28), base_channels=8, norm=norm)
    assert g(torch.randn(N, LATENT)).shape == (N, 1, 28, 28)
    assert has_batchnorm(g) == (norm == "batch")


def test_no_norm_after_discriminator_input_conv():
    d = DCGANDiscriminator((3, 64, 64), base_channels=8, norm="batch")
    leaves = _leaves(d)
    first_conv = next(i for i, m in enumerate(leaves) if isinstance(m, nn.Conv2d))
    assert isinstance(leaves[first_conv + 1], nn.LeakyReLU)
    # every later conv is followed by a norm
    later = [i for i, m in enumerate(leaves) if isinstance(m, nn.Conv2d)][1:]
    assert later and all(isinstance(leaves[i + 1], nn.BatchNorm2d) for i in later)


@pytest.mark.parametrize("upsample", ["transposed", "nearest"])
def test_no_norm_on_generator_output(upsample):
    g = DCGANGenerator(LATENT, (3, 32, 32), base_channels=8, upsample=upsample, norm="batch")
    last_stage = _leaves(g.stages[-1])
    assert isinstance(last_stage[-2], nn.Conv2d | nn.ConvTranspose2d)
    assert isinstance(last_stage[-1], nn.Tanh)
    assert not any(isinstance(m, _BatchNorm) for m in last_stage)
    # every earlier stage has a norm
    assert all(any(isinstance(m, _BatchNorm) for m in stage.modules()) for stage in g.stages[:-1])


def test_unconditional_nets_ignore_labels():
    g = DCGANGenerator(LATENT, (1, 28, 28), base_channels=8).eval()
    d = DCGANDiscriminator((1, 28, 28), base_channels=8).eval()
    z, labels = torch.randn(N, LATENT), torch.arange(N)
    torch.testing.assert_close(g(z, labels), g(z))
    x = g(z)
    torch.testing.assert_close(d(x, labels).logits, d(x).logits)


def test_dcgan_init():
    torch.manual_seed(0)
    for net in (DCGANGenerator(100, (3, 64, 64)), DCGANDiscriminator((3, 64, 64))):
        weights = [m for m in net.modules() if isinstance(m, nn.Conv2d | nn.ConvTranspose2d | nn.Linear)]
        assert weights
        for m in weights:
            if m.weight.numel() > 10_000:
                assert m.weight.std().item() == pytest.approx(0.02, rel=0.05)
                assert m.weight.mean().item() == pytest.approx(0.0, abs=2e-3)
            if m.bias is not None:
                assert torch.all(m.bias == 0)
        bns = [m for m in net.modules() if isinstance(m, nn.BatchNorm2d | nn.BatchNorm1d)]
        assert bns
        scales = torch.cat([m.weight.detach() for m in bns])
        assert scales.mean().item() == pytest.approx(1.0, abs=5e-3)
        assert scales.std().item() == pytest.approx(0.02, rel=0.2)
        assert all(torch.all(m.bias == 0) for m in bns)


@pytest.mark.parametrize("net_kind", ["d", "g"])
def test_apply_spectral_norm_wraps_every_weight_layer(net_kind):
    if net_kind == "d":
        net = DCGANDiscriminator((1, 28, 28), base_channels=8, norm="none")
    else:
        net = DCGANGenerator(LATENT, (1, 28, 28), base_channels=8, norm="none")
    layers = [m for m in net.modules() if isinstance(m, nn.Conv2d | nn.ConvTranspose2d | nn.Linear)]
    assert apply_spectral_norm(net) is net
    assert all(parametrize.is_parametrized(m, "weight") for m in layers)
    apply_spectral_norm(net)  # idempotent: no layer is wrapped twice
    assert all(len(m.parametrizations.weight) == 1 for m in layers)
    x = torch.randn(N, 1, 28, 28) if net_kind == "d" else torch.randn(N, LATENT)
    net(x)  # still runs


@pytest.mark.parametrize("kind", ["projection", "concat", "mlp"])
def test_spectral_norm_reaches_every_weight_of_a_conditional_d_embeddings_included(kind):
    from lightning_gan.models import GAN
    from lightning_gan.nets.mlp import MLPDiscriminator

    if kind == "mlp":
        factory = functools.partial(MLPDiscriminator, hidden=(16,))
    else:
        factory = functools.partial(DCGANDiscriminator, base_channels=8, norm="none", label_input=kind)
    d = GAN(discriminator=factory, num_classes=10, conditioning="cgan", spectral_norm=True).discriminator
    weights = [m for m in d.modules() if isinstance(m, nn.Embedding | nn.Linear | nn.Conv2d)]
    assert any(isinstance(m, nn.Embedding) for m in weights) or kind == "concat"
    assert all(parametrize.is_parametrized(m, "weight") for m in weights), [
        type(m).__name__ for m in weights if not parametrize.is_parametrized(m, "weight")
    ]
    embeddings = [m for m in d.modules() if isinstance(m, nn.Embedding)]
    for embed in embeddings:  # after power iteration, the largest singular value is 1
        for _ in range(30):
            embed(torch.tensor([0]))
        assert torch.linalg.matrix_norm(embed.weight, ord=2).item() == pytest.approx(1.0, abs=0.02)


def test_spectral_norm_bounds_the_linear_map():
    torch.manual_seed(0)
    lin = apply_spectral_norm(nn.Sequential(nn.Linear(8, 8)))[0]
    for _ in range(50):  # power iteration converges in training mode
        lin(torch.randn(1, 8))
    assert torch.linalg.matrix_norm(lin.weight, ord=2).item() == pytest.approx(1.0, rel=1e-2)


def test_has_batchnorm():
    assert has_batchnorm(DCGANDiscriminator((1, 28, 28), base_channels=8, norm="batch"))
    for norm in ("none", "layer", "instance"):
        assert not has_batchnorm(DCGANDiscriminator((1, 28, 28), base_channels=8, norm=norm))


def test_gradients_reach_every_generator_parameter():
    g = DCGANGenerator(LATENT, (3, 32, 48), base_channels=8)
    d = DCGANDiscriminator((3, 32, 48), base_channels=8)
    d(g(torch.randn(N, LATENT))).logits.sum().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in g.parameters())


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"img_shape": (28, 28)}, r"img_shape must be three positive ints \(C, H, W\), got \(28, 28\)"),
        ({"img_shape": (0, 28, 28)}, "img_shape must be three positive ints"),
        ({"img_shape": (1, 28.0, 28)}, "img_shape must be three positive ints"),
        ({"img_shape": (1, 27, 27)}, r"img_shape=\(1, 27, 27\) is not supported by DCGAN"),
        ({"img_shape": (1, 4, 4)}, r"img_shape=\(1, 4, 4\) is not supported by DCGAN"),
        (
            {"norm": "groups"},
            "norm='groups' is not allowed: choose one of batch, instance, layer, group, none",
        ),
        ({"base_channels": 0}, "base_channels=0 is not allowed: must be an integer >= 1"),
        ({"num_classes": -1}, "num_classes=-1 is not allowed: must be an integer >= 0"),
    ],
)
@pytest.mark.parametrize("net", [DCGANGenerator, DCGANDiscriminator])
def test_bad_arguments_raise(net, kwargs, match):
    kwargs = {"img_shape": (1, 28, 28), **kwargs}
    args = (LATENT,) if net is DCGANGenerator else ()
    with pytest.raises(ValueError, match=match):
        net(*args, **kwargs)


def test_generator_bad_arguments_raise():
    with pytest.raises(ValueError, match="latent_dim=0 is not allowed: must be an integer >= 1"):
        DCGANGenerator(0, (1, 28, 28))
    with pytest.raises(
        ValueError, match="upsample='cubic' is not allowed: choose one of transposed, nearest, bilinear"
    ):
        DCGANGenerator(LATENT, (1, 28, 28), upsample="cubic")
