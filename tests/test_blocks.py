"""The presets' networks are pinned: every state_dict key and initial value, and the outputs for a fixed
input, hashed from the code before the shared block builder (issue 17), so checkpoints keep loading and
seeded runs repeat."""

import hashlib

import pytest
import torch

from lightning_gan.nets import (
    DCGANDiscriminator,
    DCGANGenerator,
    MLPDiscriminator,
    MLPGenerator,
    SignalDiscriminator,
    SignalGenerator,
)

DIGITS, HAR = (1, 28, 28), (1, 6, 128)
SIG = {"base_channels": 16, "kernel": (5, 2)}

# name -> (builder, input maker): built after torch.manual_seed(0)
CASES = {
    "dcgan_g": lambda: DCGANGenerator(100, DIGITS, base_channels=64),
    "dcgan_g_nearest_layer": lambda: DCGANGenerator(
        100, DIGITS, base_channels=16, upsample="nearest", norm="layer"
    ),
    "dcgan_g_bilinear_none": lambda: DCGANGenerator(
        100, (3, 32, 32), base_channels=8, upsample="bilinear", norm="none"
    ),
    "dcgan_g_instance": lambda: DCGANGenerator(100, DIGITS, base_channels=16, norm="instance"),
    "dcgan_g_virtual": lambda: DCGANGenerator(
        100, DIGITS, 10, base_channels=16, norm="virtual", vbn_reference=8
    ),
    "cdcgan_g_concat": lambda: DCGANGenerator(100, DIGITS, 10, base_channels=64, conditioning="concat"),
    "cdcgan_g_multiply": lambda: DCGANGenerator(100, DIGITS, 10, base_channels=16, conditioning="multiply"),
    "cdcgan_g_cbn": lambda: DCGANGenerator(100, DIGITS, 10, base_channels=16, conditioning="cbn"),
    "dcgan_d": lambda: DCGANDiscriminator(DIGITS, base_channels=64),
    "dcgan_d_layer": lambda: DCGANDiscriminator(DIGITS, base_channels=64, norm="layer"),
    "dcgan_d_none": lambda: DCGANDiscriminator(DIGITS, base_channels=64, norm="none"),
    "dcgan_d_instance_64": lambda: DCGANDiscriminator((3, 64, 64), base_channels=8, norm="instance"),
    "cdcgan_d_concat": lambda: DCGANDiscriminator(DIGITS, 10, base_channels=64, label_input="concat"),
    "cdcgan_d_projection_head": lambda: DCGANDiscriminator(
        DIGITS, 10, class_head=10, base_channels=16, label_input="projection"
    ),
    "acgan_d_stddev": lambda: DCGANDiscriminator(DIGITS, class_head=10, base_channels=16, minibatch="stddev"),
    "dcgan_d_discrimination": lambda: DCGANDiscriminator(
        DIGITS, base_channels=16, minibatch="discrimination"
    ),
    "signal_g_2d": lambda: SignalGenerator(32, HAR, 6, out_kernel=(5, 1), conditioning="concat", **SIG),
    "signal_g_1d_cbn": lambda: SignalGenerator(32, HAR, 6, conv="1d", conditioning="cbn", **SIG),
    "signal_g_1d_none_nearest": lambda: SignalGenerator(
        32, HAR, conv="1d", norm="none", upsample="nearest", **SIG
    ),
    "signal_g_2d_virtual": lambda: SignalGenerator(32, HAR, 6, norm="virtual", vbn_reference=4, **SIG),
    "signal_d_2d": lambda: SignalDiscriminator(HAR, 6, label_input="concat", **SIG),
    "signal_d_2d_head": lambda: SignalDiscriminator(HAR, class_head=6, norm="layer", **SIG),
    "signal_d_1d": lambda: SignalDiscriminator(HAR, 6, conv="1d", norm="instance", minibatch="stddev", **SIG),
    "mlp_g": lambda: MLPGenerator(100, DIGITS, 10, hidden=(256, 512, 1024), embed_dim=10),
    "mlp_g_no_norm": lambda: MLPGenerator(100, DIGITS, hidden=(64, 32), norm=False),
    "mlp_d": lambda: MLPDiscriminator(DIGITS, 10, hidden=(1024, 512, 256), embed_dim=10),
    "mlp_d_head_no_dropout": lambda: MLPDiscriminator(DIGITS, class_head=10, hidden=(64,), dropout=0.0),
}

# name -> (state_dict hash, output statistics), printed by running this file before the block builder
PINNED: dict[str, tuple[str, list[float]]] = {
    "acgan_d_stddev": (
        "318f31c1930ec8b6d937b664639775cbf70b36529f3066f1907f3beb69e1b646",
        [
            1.752195,
            1.760081,
            2932.715674,
            4397.504149,
            0.318648,
            25.230534,
            0.056303,
            0.056303,
            47.861417,
            76.271349,
            -0.060466,
            0.403611,
        ],
    ),
    "cdcgan_d_concat": (
        "2eb625ff11836e0165357730458d6402eaf6aec6a549bbba00c62ee9ab1f7971",
        [-4.181052, 4.996477, 11981.637261, 17972.456058, -0.092259, 0.162692, 515.868883, 827.747134],
    ),
    "cdcgan_d_projection_head": (
        "b7c876682b9fbdeb5373861649e94cb2c3de379e068d38bcdf7a20b87928a246",
        [
            -2.111243,
            4.10654,
            2911.122674,
            4366.684052,
            -4.148026,
            25.625962,
            -0.031162,
            0.067886,
            65.169145,
            88.046873,
            -0.070499,
            0.543445,
        ],
    ),
    "cdcgan_g_cbn": (
        "ca330bfa5928761250a217c1f8889bb7dba07f8fc187882a46707d209ddabb5f",
        [71.74282, 328.132893, 3.141303, 10.596917],
    ),
    "cdcgan_g_concat": (
        "5d1ed71db6e8c972b87f0d1463d9f8115da84d5dcc95611b6a50a4ed16cafd99",
        [95.273085, 767.225432, 5.217384, 50.188355],
    ),
    "cdcgan_g_multiply": (
        "1f43bfaaa84799394e7e8a881cebb4d087f650607001e829c49a3f42fa57a2ff",
        [85.58872, 373.41391, 3.883011, 12.937668],
    ),
    "dcgan_d": (
        "058b0ad55f5efdfc1e237caf78af3e1900f9a6e49890f2dc3507f70ba35627b8",
        [-2.014684, 4.367144, 11888.83313, 17833.249819, -0.145275, 0.15717, 386.082871, 599.442238],
    ),
    "dcgan_d_discrimination": (
        "000255d5dffaea63d8f6af7da82c00668f333bebf0ec15edf123498aea5c1b8c",
        [2.506311, 3.064226, 3045.081864, 4503.308428, 3.985188, 3.985188, 1483.036972, 1506.932762],
    ),
    "dcgan_d_instance_64": (
        "b1fea187d92ccf7345ed829564d56e7ac61c10f9278656ea015bc32fdd419ef9",
        [-3.376581, 3.376581, 1989.165513, 2983.748289, -3.376581, 3.376581, 1989.165513, 2983.748289],
    ),
    "dcgan_d_layer": (
        "6225f55cf105ec909987f5855a202e2b3b07302c08d5994e6c4bea8799489fc7",
        [5.275211, 5.937923, 11812.310789, 17706.902272, 5.275211, 5.937923, 11812.310789, 17706.902272],
    ),
    "dcgan_d_none": (
        "af39a8e85ccf321bfb5844aabca304170a2086b9457e9cba63d5a144e0ffcedb",
        [-0.211524, 0.211524, 371.625803, 580.005106, -0.211524, 0.211524, 371.625803, 580.005106],
    ),
    "dcgan_g": (
        "1fd2479f65a58f64c53bc8933b1bbca052ebd4701635765e342c041d2551049d",
        [49.227048, 784.682356, 1.385168, 53.181481],
    ),
    "dcgan_g_bilinear_none": (
        "b295246c5a7f01ce8c18291d56959ce93a6f0acb717714ece67c76c97424f667",
        [-1.90148, 8.213068, -1.90148, 8.213068],
    ),
    "dcgan_g_instance": (
        "282a646503aafa1f39168a5d1525a5d12b1e55b0932b8e5bd25ef4cbfdb2b5ec",
        [25.1152, 429.485349, 25.1152, 429.485349],
    ),
    "dcgan_g_nearest_layer": (
        "2388c2ff62132187543ff7eeaca666c6b504adcfd1e35aa2ba816ea37551caa2",
        [807.558601, 864.526274, 807.558601, 864.526274],
    ),
    "dcgan_g_virtual": (
        "d2273a28a02ac8f292c3145de36e7690a68bf50b3de11c32f239f64f9f672406",
        [-118.609964, 367.224593, -118.609964, 367.224593],
    ),
    "mlp_d": (
        "3108b1a796bf494d1608b56c3054bf28dfb7d03b1c547c6b6b57ea1fa54625e8",
        [0.4802, 0.4802, 68.732061, 101.122423, 0.107687, 0.187553, 48.34006, 72.687758],
    ),
    "mlp_d_head_no_dropout": (
        "921c179aed46e5ae919470f2f685913de56a5b7c03d1049bb657d4e7777d4b91",
        [
            0.649167,
            1.303713,
            65.860352,
            100.224625,
            1.422827,
            12.276828,
            0.649167,
            1.303713,
            65.860352,
            100.224625,
            1.422827,
            12.276828,
        ],
    ),
    "mlp_g": (
        "12efdcd39163c666a4fc54eec603fd5134b092696488ea14505484a0b8decabc",
        [-28.039468, 1412.077245, -11.890306, 179.900057],
    ),
    "mlp_g_no_norm": (
        "a03a23e0b7c3313770a19882d1d92c162617103fbfdabd193e8722ed7edd581b",
        [23.346123, 616.126964, 23.346123, 616.126964],
    ),
    "signal_d_1d": (
        "90f8e8a04fdc2e68b09292d9a3036e31a223796545c4e5abe31313b571852925",
        [-0.934133, 2.634592, 2022.022207, 3031.424097, -0.934133, 2.634592, 2022.022207, 3031.424097],
    ),
    "signal_d_2d": (
        "88fd2bcd567d1d7b940e2cc57c6fe38b4271d1af67500ba786552f1a4388377d",
        [-0.722306, 5.686733, 11426.595862, 17139.893894, -0.067233, 0.067233, 163.750628, 229.500511],
    ),
    "signal_d_2d_head": (
        "ae0b7e79d289e2556120bdf9924d6e3d442a303842ff69ab26e2fcfcce33d3fb",
        [
            -5.32329,
            5.763079,
            10984.019706,
            16482.220526,
            -3.89368,
            22.624534,
            -5.32329,
            5.763079,
            10984.019706,
            16482.220526,
            -3.89368,
            22.624534,
        ],
    ),
    "signal_g_1d_cbn": (
        "c3ae2e81ef1e83321c5b2a347fd27497b5655004ce6bb8dd813e363ea0d9a555",
        [-73.863701, 479.506671, 0.152352, 3.188275],
    ),
    "signal_g_1d_none_nearest": (
        "0af0cac4e09064f8672bc372d3da71bbb90854e80cf0262d64b0e79ec8420a2a",
        [0.034041, 0.19567, 0.034041, 0.19567],
    ),
    "signal_g_2d": (
        "530c001fce3437d4df1b44e641f14e2216bf6f6aacb1ea03dbe9175dfa30cf1a",
        [175.21877, 422.842644, -1.991415, 2.069085],
    ),
    "signal_g_2d_virtual": (
        "faae3b1e1c28169ba8a33f07d052f2b700670d1421ffa4dd00106f9baf49c25a",
        [165.011554, 411.99271, 165.011554, 411.99271],
    ),
}


def _hash_state(net: torch.nn.Module) -> str:
    h = hashlib.sha256()
    for key, value in net.state_dict().items():
        h.update(key.encode())
        h.update(str((value.dtype, tuple(value.shape))).encode())
        h.update(value.detach().contiguous().numpy().tobytes())
    return h.hexdigest()


def _outputs(net: torch.nn.Module) -> list[torch.Tensor]:
    """Outputs for a fixed input in train mode (seeded: dropout, BN batch statistics) and in eval mode."""
    gen = torch.Generator().manual_seed(1)
    if hasattr(net, "latent_dim"):
        x = torch.randn(6, net.latent_dim, generator=gen)
    else:
        x = torch.randn(6, *net.img_shape, generator=gen)
    labels = torch.arange(6) % 6
    out = []
    for train in (True, False):
        net.train(train)
        torch.manual_seed(2)
        with torch.no_grad():
            y = net(x, labels)
        out += [y.logits, y.features] if isinstance(y, tuple) else [y]
        if isinstance(y, tuple) and y.class_logits is not None:
            out.append(y.class_logits)
    return out


def _stats(outputs: list[torch.Tensor]) -> list[float]:
    """The sum and the sum of absolute values of each output: exact hashes of floats would depend on the CPU
    and the thread count, these do not beyond rounding."""
    return [round(float(f(t.double())), 6) for t in outputs for f in (torch.sum, lambda t: t.abs().sum())]


def fingerprint(name: str) -> tuple[str, list[float]]:
    torch.manual_seed(0)
    net = CASES[name]()
    state = _hash_state(net)
    return state, _stats(_outputs(net))


@pytest.mark.parametrize("name", sorted(CASES))
def test_presets_build_the_same_parameters_and_outputs(name):
    state, stats = fingerprint(name)
    assert state == PINNED[name][0]
    assert stats == pytest.approx(PINNED[name][1], rel=1e-4, abs=1e-4)


if __name__ == "__main__":  # prints PINNED for the current code
    torch.set_num_threads(1)  # as tests/conftest.py
    for name in sorted(CASES):
        print(f"    {name!r}: {fingerprint(name)!r},")
