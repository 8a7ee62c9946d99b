"""Self-attention (SAGAN) at chosen resolutions of the DCGAN, ResNet and signal nets (issue 18)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from lightning_gan.nets import (
    DCGANDiscriminator,
    DCGANGenerator,
    ResNetDiscriminator,
    ResNetGenerator,
    SelfAttention,
    SignalDiscriminator,
    SignalGenerator,
    SignalResNetDiscriminator,
)


def test_self_attention_lets_one_position_change_the_output_at_a_distant_one():
    torch.manual_seed(0)
    attn = SelfAttention(16)
    x = torch.randn(2, 16, 8, 8)
    moved = x.clone()
    moved[:, :, 0, 0] += 1.0
    assert torch.equal(attn(x), x)  # gamma starts at 0: the identity
    with torch.no_grad():
        attn.gamma.fill_(1.0)
    far = (slice(None), slice(None), 7, 7)
    assert not torch.allclose(attn(x)[far], attn(moved)[far])
    assert torch.equal(attn(x)[1], attn(x[1:])[0])  # each sample attends over its own positions only


def test_attention_sits_after_the_maps_of_the_resolutions_asked():
    g = ResNetGenerator(16, (1, 28, 28), base_channels=4, attention=[7, 28])
    assert isinstance(g.project_norm[-1], SelfAttention) and g.project_norm[-1].v.out_channels == 8
    assert isinstance(g.stages[1][-1], SelfAttention) and g.stages[1][-1].v.out_channels == 4
    assert not any(isinstance(m, SelfAttention) for m in g.stages[0])
    d = ResNetDiscriminator((1, 28, 28), base_channels=4, attention=[14])
    assert isinstance(d.stages[0][-1], SelfAttention) and d.stages[0][-1].v.out_channels == 4
    g = DCGANGenerator(16, (1, 28, 28), base_channels=4, attention=[14])  # the last two layers: 14, then 28
    assert isinstance(g.stages[0][-1], SelfAttention) and g.stages[0][-1].v.out_channels == 4
    d = DCGANDiscriminator((1, 28, 28), base_channels=4, attention=[14, 7])
    assert [type(s[-1]) for s in d.stages] == [SelfAttention, SelfAttention]
    g = SignalGenerator(16, (1, 6, 128), base_channels=4, attention=[64, 128])
    assert [isinstance(s[-1], SelfAttention) for s in g.stages] == [False, False, True, True]
    d = SignalDiscriminator((1, 6, 128), base_channels=4, conv="1d", attention=[8])
    assert [isinstance(s[-1], SelfAttention) for s in d.stages] == [False, False, False, True]


def _stage_output(d: nn.Module, x: torch.Tensor) -> torch.Tensor:
    return d.stages[0](d.to_input(x))


@pytest.mark.parametrize(
    "make",
    [
        lambda a: DCGANDiscriminator((1, 28, 28), base_channels=8, norm="none", attention=[14] if a else []),
        lambda a: ResNetDiscriminator((1, 28, 28), base_channels=8, attention=[14] if a else []),
        lambda a: SignalDiscriminator((1, 6, 128), base_channels=8, norm="none", attention=[64] if a else []),
        lambda a: SignalResNetDiscriminator(
            (1, 6, 128), base_channels=8, conv="1d", attention=[64] if a else []
        ),
    ],
)
def test_in_a_net_attention_carries_a_change_to_a_distant_position_that_convs_alone_do_not(make):
    torch.manual_seed(0)
    shape = (
        (1, 6, 128)
        if isinstance(make(False), SignalDiscriminator | SignalResNetDiscriminator)
        else (1, 28, 28)
    )
    x = torch.rand(2, *shape)
    moved = x.clone()
    moved[..., 0, 0] += 1.0
    for attention in (False, True):
        d = make(attention)
        for m in d.modules():
            if isinstance(m, SelfAttention):  # a trained block's weights, not the DCGAN init's N(0, 0.02)
                for p in m.parameters():
                    nn.init.normal_(p)
        a, b = _stage_output(d, x), _stage_output(d, moved)
        far = a[..., -1] - b[..., -1]  # the last column (time step) of the first stage's maps
        assert (far.abs().max() > 1e-6) == attention


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: ResNetGenerator(16, (1, 28, 28), attention=[32]), r"attention=\[32\].*\[7, 14, 28\] wide"),
        (lambda: DCGANGenerator(16, (1, 28, 28), attention=[28]), r"28 is not.*\[7, 14\] wide"),
        (lambda: DCGANDiscriminator((1, 32, 32), attention=[32]), r"\[4, 8, 16\] wide"),
        (lambda: SignalResNetDiscriminator((1, 6, 128), attention=[128]), r"\[8, 16, 32, 64\]"),
        (lambda: SignalGenerator(16, (1, 6, 128), attention=[64, 64]), r"names a resolution twice"),
    ],
)
def test_attention_at_a_resolution_the_net_does_not_have_fails_naming_them(make, message):
    with pytest.raises(ValueError, match=message):
        make()
