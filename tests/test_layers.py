import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from mobilenets.layers import (
    ConvNormAct,
    DepthwiseSeparableConv,
    DropPath,
    FusedInvertedBottleneck,
    InvertedResidual,
    LayerScale,
    MobileMultiQueryAttention,
    SqueezeExcite,
    UniversalInvertedBottleneck,
    make_divisible,
    resolve_act_layer,
    resolve_norm_layer,
)


@pytest.mark.parametrize(
    "value, expected",
    [(32, 32), (11.2, 16), (5.6, 8), (4, 8), (12, 16), (20, 24), (36, 40), (184, 184), (88.08, 88), (180, 184), (1.0, 8)],
)
def test_make_divisible_known_values(value, expected):
    assert make_divisible(value) == expected


@pytest.mark.parametrize("divisor, min_value", [(8, None), (1, None), (3, None), (4, 2), (16, None), (8, 32), (16, 1)])
def test_make_divisible_rule_holds_everywhere(divisor, min_value):
    floor = divisor if min_value is None else min_value
    for tenth in range(1, 6000):
        v = tenth / 10
        out = make_divisible(v, divisor, min_value)
        nearest = math.floor(v / divisor + 0.5) * divisor  # nearest multiple, ties round up
        if nearest < floor:  # clamped to min_value, then bumped if that is still >10% below v
            assert out == (floor if floor >= 0.9 * v else floor + divisor), (v, out)
        elif nearest < 0.9 * v:  # the nearest multiple would drop more than 10%: take the next one up
            assert out == nearest + divisor, (v, out)
        else:
            assert out == nearest and abs(out - v) <= divisor / 2, (v, out)
        assert out >= 0.9 * v and out >= floor, (v, out)
    assert make_divisible(3, divisor=4, min_value=2) == 4


def test_make_divisible_rejects_bad_divisor():
    with pytest.raises(ValueError, match="divisor"):
        make_divisible(10, divisor=0)


@pytest.mark.parametrize("size", [7, 8, 15, 224, 225])
@pytest.mark.parametrize("kernel", [3, 5])
def test_same_padding_matches_tensorflow_rule(size, kernel):
    torch.manual_seed(0)
    layer = ConvNormAct(4, 6, kernel, stride=2, padding="same", norm_layer=None, act_layer=None)
    x = torch.randn(1, 4, size, size)
    out = layer(x)
    assert out.shape[-1] == -(-size // 2)  # TF "SAME": ceil(size / stride)
    # TF puts the odd pixel of padding after (bottom/right)
    total = max((out.shape[-1] - 1) * 2 + kernel - size, 0)
    ref = F.conv2d(F.pad(x, (total // 2, total - total // 2) * 2), layer.conv.weight, layer.conv.bias, stride=2)
    torch.testing.assert_close(out, ref)


def test_symmetric_padding_is_pytorch_convention():
    layer = ConvNormAct(3, 8, 3, stride=2)
    assert layer.conv.padding == (1, 1) and isinstance(layer.bn, nn.BatchNorm2d) and isinstance(layer.act, nn.ReLU)
    assert layer.conv.bias is None
    assert layer(torch.randn(1, 3, 224, 224)).shape == (1, 8, 112, 112)


def test_conv_norm_act_rejects_unknown_padding():
    with pytest.raises(ValueError, match="'symmetric' or 'same'"):
        ConvNormAct(3, 8, padding="valid")


def test_depthwise_separable_structure():
    block = DepthwiseSeparableConv(32, 64, stride=2)
    assert block.conv_dw.conv.groups == 32 and block.conv_dw.conv.kernel_size == (3, 3)
    assert block.conv_pw.conv.kernel_size == (1, 1) and block.conv_pw.conv.groups == 1
    assert isinstance(block.conv_dw.act, nn.ReLU) and isinstance(block.conv_pw.act, nn.ReLU)
    assert block(torch.randn(2, 32, 16, 16)).shape == (2, 64, 8, 8)


def test_inverted_residual_linear_bottleneck_and_skip():
    block = InvertedResidual(16, 96, 16, stride=1).eval()
    assert block.has_skip
    assert isinstance(block.conv_pwl.act, nn.Identity), "projection must be linear"
    assert isinstance(block.conv_pw.act, nn.ReLU6) and isinstance(block.conv_dw.act, nn.ReLU6)
    # zero the projection's BN: the block must then be exactly the identity (the residual path)
    nn.init.zeros_(block.conv_pwl.bn.weight)
    x = torch.randn(2, 16, 8, 8)
    torch.testing.assert_close(block(x), x)


def test_inverted_residual_no_skip_and_no_expansion():
    assert not InvertedResidual(16, 96, 24, stride=1).has_skip
    assert not InvertedResidual(16, 96, 16, stride=2).has_skip
    block = InvertedResidual(16, 16, 16)
    assert isinstance(block.conv_pw, nn.Identity), "ratio 1 has no expansion conv"
    assert block.conv_dw.conv.groups == 16


def test_squeeze_excite_math():
    se = SqueezeExcite(72)
    assert se.conv_reduce.out_channels == make_divisible(72 / 4) == 24
    assert isinstance(se.gate, nn.Hardsigmoid)
    x = torch.randn(2, 72, 5, 5)
    s = x.mean((2, 3), keepdim=True)
    gate = F.hardsigmoid(se.conv_expand(F.relu(se.conv_reduce(s))))
    torch.testing.assert_close(se(x), x * gate)


def test_inverted_residual_with_se_and_hswish():
    block = InvertedResidual(40, 240, 40, kernel_size=5, se_channels=64, act_layer=nn.Hardswish)
    assert isinstance(block.se, SqueezeExcite) and block.se.conv_reduce.out_channels == 64
    assert block.conv_dw.conv.kernel_size == (5, 5)
    assert block(torch.randn(1, 40, 14, 14)).shape == (1, 40, 14, 14)


@pytest.mark.parametrize(
    "start, mid, stride, out_hw, macs",
    [
        # by hand at 28x28, 64 -> 192 -> 96 channels: depthwise k*k*C*H*W, 1x1 Cin*Cout*H*W
        (5, 5, 2, 14, 25 * 64 * 28 * 28 + 64 * 192 * 28 * 28 + 25 * 192 * 14 * 14 + 192 * 96 * 14 * 14),  # ExtraDW
        (0, 3, 2, 14, 64 * 192 * 28 * 28 + 9 * 192 * 14 * 14 + 192 * 96 * 14 * 14),  # IB
        (3, 0, 2, 14, 9 * 64 * 14 * 14 + 64 * 192 * 14 * 14 + 192 * 96 * 14 * 14),  # ConvNext: strided start
        (0, 0, 1, 28, 64 * 192 * 28 * 28 + 192 * 96 * 28 * 28),  # FFN
    ],
)
def test_universal_inverted_bottleneck_instances(start, mid, stride, out_hw, macs):
    from mobilenets import profile

    block = UniversalInvertedBottleneck(64, 192, 96, start, mid, stride).eval()
    assert block(torch.randn(2, 64, 28, 28)).shape == (2, 96, out_hw, out_hw)
    assert profile(block, (64, 28, 28)).macs == macs
    # the starting depthwise conv and the projection are linear; expansion and middle depthwise are not
    assert isinstance(block.conv_pwl.act, nn.Identity) and isinstance(block.conv_pw.act, nn.ReLU)
    if start:
        assert isinstance(block.conv_dw_start.act, nn.Identity) and block.conv_dw_start.conv.groups == 64
    if mid:
        assert isinstance(block.conv_dw.act, nn.ReLU) and block.conv_dw.conv.groups == 192


def test_universal_inverted_bottleneck_skip_and_refusal():
    block = UniversalInvertedBottleneck(32, 128, 32, 3, 3).eval()
    assert block.has_skip
    nn.init.zeros_(block.conv_pwl.bn.weight)
    x = torch.randn(2, 32, 8, 8)
    torch.testing.assert_close(block(x), x)  # a zero branch leaves the residual
    assert not UniversalInvertedBottleneck(32, 128, 32, 3, 3, stride=2).has_skip
    with pytest.raises(ValueError, match="FFN.*cannot have stride > 1"):
        UniversalInvertedBottleneck(32, 128, 64, 0, 0, stride=2)


def test_fused_inverted_bottleneck():
    block = FusedInvertedBottleneck(32, 128, 48, 3, 2).eval()
    assert not block.has_skip and block.conv_exp.conv.groups == 1 and block.conv_exp.conv.stride == (2, 2)
    assert isinstance(block.conv_pwl.act, nn.Identity)
    assert block(torch.randn(1, 32, 16, 16)).shape == (1, 48, 8, 8)
    same = FusedInvertedBottleneck(48, 192, 48).eval()
    nn.init.zeros_(same.conv_pwl.bn.weight)
    x = torch.randn(1, 48, 8, 8)
    torch.testing.assert_close(same(x), x)


@pytest.mark.parametrize("kv_stride", [1, 2])
def test_mobile_mqa_against_per_head_attention(kv_stride):
    """Against attention written out head by head: every head has its own queries and shares one key and
    one value per (downsampled) pixel; softmax over keys, scaled by 1/sqrt(key_dim); heads concatenated."""
    torch.manual_seed(0)
    block = MobileMultiQueryAttention(16, 16, heads=2, key_dim=8, value_dim=4, kv_stride=kv_stride, layer_scale=0.5)
    block.eval()
    for m in block.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.normal_(0, 0.3)
            m.running_var.uniform_(0.5, 2.0)
    x = torch.randn(2, 16, 6, 6)
    y = block.norm(x)
    q = block.query(y).flatten(2)  # (N, heads * 8, 36)
    k = block.key(block.key_down(y)).flatten(2)  # (N, 8, M)
    v = block.value(block.value_down(y)).flatten(2)  # (N, 4, M)
    assert k.shape[-1] == (36 if kv_stride == 1 else 9)
    heads = []
    for h in range(2):
        logits = torch.einsum("nkl,nkm->nlm", q[:, h * 8 : (h + 1) * 8], k) / math.sqrt(8)
        heads.append(torch.einsum("nlm,nvm->nvl", logits.softmax(-1), v))  # (N, 4, 36)
    o = torch.cat(heads, 1).reshape(2, 8, 6, 6)
    expected = x + 0.5 * block.out(o)
    with torch.no_grad():
        torch.testing.assert_close(block(x), expected, rtol=1e-5, atol=1e-5)


def test_mobile_mqa_macs_and_layer_scale():
    from mobilenets import profile

    block = MobileMultiQueryAttention(16, 16, heads=2, key_dim=8, value_dim=8, kv_stride=2).eval()
    convs = 64 * 16 * 16 + 2 * (16 * 9 * 16 + 16 * 16 * 8) + 64 * 16 * 16  # query, key/value paths at 4x4, output
    attention = 2 * 64 * 16 * (8 + 8)  # heads x queries x keys x (key dim + value dim)
    assert profile(block, (16, 8, 8)).macs == convs + attention
    scale = LayerScale(4, 1e-5)
    assert torch.equal(scale.gamma, torch.full((4,), 1e-5))
    x = torch.randn(1, 4, 3, 3)
    torch.testing.assert_close(scale(x), x * 1e-5)
    with pytest.raises(ValueError, match="heads, key_dim"):
        MobileMultiQueryAttention(16, 16, heads=0, key_dim=8, value_dim=8)


def test_drop_path():
    dp = DropPath(0.5)
    x = torch.ones(1000, 4)
    assert torch.equal(dp.eval()(x), x)
    out = dp.train()(x)
    kept = (out[:, 0] != 0).float().mean().item()
    assert 0.4 < kept < 0.6 and set(out.unique().tolist()) <= {0.0, 2.0}
    with pytest.raises(ValueError):
        DropPath(1.0)


def test_layer_name_resolution():
    assert resolve_act_layer("hardswish") is nn.Hardswish
    assert resolve_norm_layer("batchnorm") is nn.BatchNorm2d
    with pytest.raises(ValueError, match="accepted names: .*relu6"):
        resolve_act_layer("swishy")
    with pytest.raises(TypeError):
        resolve_norm_layer(3)
