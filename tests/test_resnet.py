"""ResNet G and D for images and signal windows (issue 18): shapes, conditioning, shortcuts, depth as
configured, the switches of the block builder, and errors naming their keys."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.nn.utils import parametrize

from lightning_gan.nets import (
    ResNetDiscriminator,
    ResNetGenerator,
    SignalResNetDiscriminator,
    SignalResNetGenerator,
)
from lightning_gan.nets.blocks import BlockNoise, SamplingDropout
from lightning_gan.nets.conditioning import ConditionalBatchNorm, LabelMaps, ProjectionHead
from lightning_gan.nets.layers import apply_spectral_norm
from lightning_gan.nets.residual import ResBlock
from lightning_gan.nets.residual import depth as residual_depth
from lightning_gan.nets.vbn import VirtualBatchNorm

IMAGES = [(1, 28, 28), (3, 32, 32), (3, 64, 64)]
WEIGHTS = (nn.Conv1d, nn.Conv2d, nn.Linear)


def nets(shape: tuple[int, int, int], conv: str = "2d", **g_args) -> tuple[nn.Module, nn.Module]:
    """A conditional ResNet G of ``shape`` with ``g_args``, and a D with a projection input and class head."""
    if shape[1:] == (6, 128):
        g = SignalResNetGenerator(16, shape, 6, conv=conv, base_channels=4, **g_args)
        d = SignalResNetDiscriminator(
            shape, 6, class_head=6, conv=conv, base_channels=4, label_input="projection"
        )
    else:
        g = ResNetGenerator(16, shape, 10, base_channels=4, **g_args)
        d = ResNetDiscriminator(shape, 10, class_head=10, base_channels=4, label_input="projection")
    return g, d


@pytest.mark.parametrize("conditioning", ["concat", "multiply", "cbn"])
@pytest.mark.parametrize("shape", [*IMAGES, "signal-2d", "signal-1d"])
def test_resnet_g_and_d_give_the_data_shape_for_every_conditioning(shape, conditioning):
    conv = shape[-2:] if isinstance(shape, str) else "2d"
    shape = (1, 6, 128) if isinstance(shape, str) else shape
    g, d = nets(shape, conv, conditioning=conditioning)
    labels = torch.tensor([0, 1, 2, 3, 4])
    x = g(torch.randn(5, 16), labels)
    assert x.shape == (5, *shape) and x.abs().max() <= 1
    assert any(isinstance(m, ConditionalBatchNorm) for m in g.modules()) == (conditioning == "cbn")
    out = d(x, labels)
    assert out.logits.shape == (5,) and out.class_logits.shape == (5, d.classifier.out_features)
    assert out.features.shape == (5, d.num_features) and isinstance(d.projection, ProjectionHead)
    x.sum().backward()  # every parameter of G is reached
    assert all(p.grad is not None for p in g.parameters())


def test_d_takes_labels_as_maps_with_concat():
    d = ResNetDiscriminator((1, 28, 28), 10, base_channels=4, label_input="concat")
    assert isinstance(d.label_maps, LabelMaps) and d.projection is None
    first = d.stages[0][0].residual[0]  # the first conv of the first block reads image + 10 label maps
    assert first.in_channels == 11
    with pytest.raises(ValueError, match="labels=None"):
        d(torch.randn(2, 1, 28, 28))


def _res_blocks(net: nn.Module) -> list[ResBlock]:
    return [m for m in net.modules() if isinstance(m, ResBlock)]


def _block_inputs(net: nn.Module, blocks: list[ResBlock], x: torch.Tensor, labels: torch.Tensor) -> dict:
    """Each block's input in one forward pass of ``net``."""
    inputs = {}
    hooks = [b.register_forward_hook(lambda m, args, out: inputs.update({m: args[0]})) for b in blocks]
    net(x, labels)
    for hook in hooks:
        hook.remove()
    return inputs


@pytest.mark.parametrize("shape", [(1, 28, 28), (3, 32, 32), (1, 6, 128)])
def test_every_block_has_a_shortcut_that_is_left_when_its_residual_path_is_zeroed(shape):
    torch.manual_seed(0)
    g, d = nets(shape, blocks=2, conditioning="cbn")
    labels = torch.arange(4) % 6
    for net, x in ((g, torch.randn(4, 16)), (d, torch.rand(4, *shape) * 2 - 1)):
        net.train()
        blocks = _res_blocks(net)
        inputs = _block_inputs(net, blocks, x, labels)
        assert len(inputs) == len(blocks) == sum(len(stage) for stage in net.stages)
        for b in blocks:
            h = inputs[b]
            before = b(h, labels)
            last = [m for m in b.residual.modules() if isinstance(m, nn.Conv1d | nn.Conv2d)][-1]
            with torch.no_grad():
                last.weight.zero_()
                last.bias.zero_()
            after = b(h, labels)
            assert torch.allclose(after, b.shortcut(h), atol=1e-6)  # nothing but the shortcut is left
            assert not torch.allclose(before, after)  # and the residual path had added something


def test_the_shortcut_resizes_and_convolves_only_where_the_block_does():
    g = ResNetGenerator(16, (1, 32, 32), base_channels=4, blocks=[1, 2, 1])
    kinds = [[type(m).__name__ for m in b.shortcut.modules()][1:] for b in _res_blocks(g)]
    # stage 0 keeps its 16 channels; each other first block halves them; the second block of stage 1 keeps all
    assert kinds == [["Upsample"], ["Upsample", "Conv2d"], [], ["Upsample", "Conv2d"]]
    d = ResNetDiscriminator((1, 32, 32), base_channels=4, blocks=[2, 1, 1])
    kinds = [[type(m).__name__ for m in b.shortcut.modules()][1:] for b in _res_blocks(d)]
    # D's first block convolves the raw image and keeps the map; the stage's last block halves it
    assert kinds == [["Conv2d"], ["AvgPool2d"], ["Conv2d", "AvgPool2d"], ["Conv2d", "AvgPool2d"]]


@pytest.mark.parametrize(("blocks", "depth"), [(1, 10), (2, 18), ([1, 2, 3, 1], 2 + 2 * 7)])
def test_g_blocks_per_stage_set_its_depth(blocks, depth):
    g = SignalResNetGenerator(16, (1, 6, 128), 6, base_channels=4, blocks=blocks)
    assert len(g.stages) == 4 and residual_depth(g) == depth


def test_signal_nets_resize_time_only_with_either_layout():
    for conv, pool in (("2d", nn.AvgPool2d), ("1d", nn.AvgPool1d)):
        d = SignalResNetDiscriminator((1, 6, 128), base_channels=4, num_stages=3, conv=conv)
        pools = [m for m in d.modules() if isinstance(m, pool)]
        assert pools and all(m.kernel_size in ((1, 2), (2,)) for m in pools)
        g = SignalResNetGenerator(16, (1, 6, 128), base_channels=4, conv=conv)
        ups = [m.scale_factor for m in g.modules() if isinstance(m, nn.Upsample)]
        assert ups and set(ups) == {(1.0, 2.0) if conv == "2d" else 2.0}


def test_the_block_switches_work_on_the_resnet_nets():
    g = ResNetGenerator(
        16, (1, 28, 28), base_channels=8, norm="group", norm_groups=2, activation="prelu", kernel=5,
        dropout=0.3, dropout_at_sampling=True, block_noise=2,
    )  # fmt: skip
    kinds = {type(m) for m in g.modules()}
    assert {nn.GroupNorm, nn.PReLU, SamplingDropout, BlockNoise} <= kinds and nn.BatchNorm2d not in kinds
    assert all(m.kernel_size in ((5, 5), (1, 1)) for m in g.modules() if isinstance(m, nn.Conv2d))
    g.eval()
    z = torch.randn(3, 16)
    assert not torch.equal(g(z), g(z))  # noise and dropout stay on when sampling
    d = ResNetDiscriminator((1, 28, 28), base_channels=8, norm="layer", activation="leakyrelu")
    assert any(isinstance(m, nn.GroupNorm) for m in d.modules()) and any(
        isinstance(m, nn.LeakyReLU) for m in d.modules()
    )
    v = ResNetGenerator(16, (1, 28, 28), 10, base_channels=8, norm="virtual", vbn_reference=4)
    assert any(isinstance(m, VirtualBatchNorm) for m in v.modules())
    assert v(torch.randn(3, 16), torch.arange(3)).shape == (3, 1, 28, 28)


def test_spectral_norm_wraps_every_weight_of_a_resnet_g_with_attention():
    g = apply_spectral_norm(ResNetGenerator(16, (1, 28, 28), 10, base_channels=8, attention=[14, 28]))
    layers = [m for m in g.modules() if isinstance(m, (*WEIGHTS, nn.Embedding))]
    assert len(layers) > 10 and all(parametrize.is_parametrized(m, "weight") for m in layers)


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (
            lambda: ResNetGenerator(16, (1, 64, 64), blocks=[1, 1]),
            r"blocks=\[1, 1\].*64x64 image.*has 4 stages",
        ),
        (lambda: ResNetDiscriminator((1, 32, 32), blocks=[1, 0, 1]), r"blocks=\[1, 0, 1\].*counts >= 1"),
        (lambda: ResNetGenerator(16, (1, 28, 28), blocks=0), r"blocks=0.*at least one block"),
        (
            lambda: SignalResNetGenerator(16, (1, 6, 128), num_stages=3, blocks=[2, 2]),
            r"blocks=.*has 3 stages",
        ),
        (lambda: ResNetGenerator(16, (1, 28, 28), extra_blocks=1), r"extra_blocks=1.*set blocks instead"),
        (lambda: ResNetGenerator(16, (1, 28, 28), upsample="transposed"), r"upsample='transposed'"),
        (lambda: ResNetDiscriminator((1, 28, 28), norm="virtual"), r"norm='virtual'"),
        (lambda: ResNetGenerator(16, (1, 27, 27)), r"img_shape=\(1, 27, 27\)"),
    ],
)
def test_resnet_settings_that_make_no_sense_fail_naming_the_key(make, message):
    with pytest.raises(ValueError, match=message):
        make()
