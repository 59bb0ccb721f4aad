import pytest
import torch
from torch import nn

from mobilenets import create_model, profile
from mobilenets.layers import InvertedResidual, SqueezeExcite


def mmacs(name, width=1.0, resolution=224, num_classes=1001):
    return profile(create_model(name, width_mult=width, num_classes=num_classes), resolution).macs / 1e6


# V1 paper, Table 6 (width) and Table 7 (resolution), 1001 classes as the TF checkpoints
@pytest.mark.parametrize("width, expected", [(1.0, 569), (0.75, 325), (0.5, 149), (0.25, 41)])
def test_v1_table6_width(width, expected):
    assert abs(mmacs("mobilenet_v1", width) - expected) <= 1


@pytest.mark.parametrize("resolution, expected", [(192, 418), (160, 290), (128, 186)])
def test_v1_table7_resolution(resolution, expected):
    assert abs(mmacs("mobilenet_v1", 1.0, resolution) - expected) <= 1


def test_v1_total_matches_table1_counted_by_hand():
    # V1 paper, Table 1: (input channels, output channels, stride) of the 13 depthwise separable blocks
    blocks = [(32, 64, 1), (64, 128, 2), (128, 128, 1), (128, 256, 2), (256, 256, 1), (256, 512, 2)]
    blocks += [(512, 512, 1)] * 5 + [(512, 1024, 2), (1024, 1024, 1)]
    size = 112
    macs = size * size * 32 * 3 * 3 * 3  # stem: 3x3 stride 2, 3 -> 32
    for cin, cout, stride in blocks:
        size //= stride
        macs += size * size * cin * 3 * 3 + size * size * cin * cout  # depthwise 3x3 + pointwise 1x1
    macs += 1024 * 1001  # FC after global pooling
    result = profile(create_model("mobilenet_v1", num_classes=1001), 224)
    assert result.macs == macs
    assert macs // 10**6 == 568  # the paper's 569M, rounded up (README)


def test_v1_table2_split_by_layer_type():
    result = profile(create_model("mobilenet_v1", num_classes=1001), 224)
    kinds = result.by_kind()
    total_macs = result.macs
    # the paper counts conv and FC weights (its network has no BN parameters)
    total_params = sum(kinds[k]["params"] for k in ("conv", "conv_dw", "conv1x1", "fc"))
    share = {k: (100 * kinds[k]["macs"] / total_macs, 100 * kinds[k]["params"] / total_params) for k in kinds}
    expected = {
        "conv1x1": (94.86, 74.59),
        "conv_dw": (3.06, 1.06),
        # the paper prints 1.19% mult-adds for the first conv: a transposition of 1.90, the value that
        # makes its column sum to 100% (94.86 + 3.06 + 1.90 + 0.18 = 100.00); our count gives 1.906
        "conv": (1.90, 0.02),
        "fc": (0.18, 24.33),
    }
    for kind, (macs_pct, params_pct) in expected.items():
        assert share[kind][0] == pytest.approx(macs_pct, abs=0.05), kind
        assert share[kind][1] == pytest.approx(params_pct, abs=0.05), kind


# TF-slim mobilenet_v2 table truncates to whole millions
@pytest.mark.parametrize("width, expected", [(1.0, 300), (1.4, 582), (0.35, 59)])
def test_v2_reference_table(width, expected):
    assert int(mmacs("mobilenet_v2", width)) == expected


@pytest.mark.parametrize(
    "name, width, macs, params",
    [
        ("mobilenet_v3_large", 1.0, 219, 5.4),
        ("mobilenet_v3_large", 0.75, 155, 4.0),
        ("mobilenet_v3_small", 1.0, 56, 2.5),
        ("mobilenet_v3_small", 0.75, 44, 2.0),
    ],
)
def test_v3_paper_table3(name, width, macs, params):
    result = profile(create_model(name, width_mult=width), 224)
    assert result.macs / 1e6 == pytest.approx(macs, rel=0.03)
    # published params are rounded loosely (5.48M prints as 5.4M): hold both to the same 3%
    assert result.params / 1e6 == pytest.approx(params, rel=0.03)


def test_params_are_trainable_parameters():
    model = create_model("mobilenet_v3_small", width_mult=0.5)
    model.stem.bn.weight.requires_grad_(False)
    expected = sum(p.numel() for p in model.parameters() if p.requires_grad)
    result = profile(model, 64)
    # profile() pads the total with a "(not executed)" row, so the total alone cannot fail: every
    # parameter must come from a row of a module that ran
    assert [r.name for r in result.layers if r.name == "(not executed)"] == []
    assert result.params == expected
    rows = {r.name: r for r in result.layers}
    # stem: make_divisible(16 * 0.5) = 8 channels of a 3x3 conv on RGB, no bias
    assert rows["stem.conv"].params == 8 * 3 * 3 * 3
    assert rows["stem.bn"].params == 8  # frozen weight: only the 8 bias terms are trainable
    assert rows["stages.0.0.conv_dw.bn"].params == 2 * 8  # an untouched BN keeps weight and bias


def test_macs_convention_on_hand_counted_layers():
    conv = nn.Sequential(nn.Conv2d(3, 8, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(8), nn.ReLU())
    result = profile(conv, (3, 32, 32))
    rows = {r.type: r for r in result.layers}
    assert rows["Conv2d"].macs == 16 * 16 * 8 * 3 * 9
    assert rows["BatchNorm2d"].macs == 0 and rows["BatchNorm2d"].params == 16  # folded: params only
    assert rows["ReLU"].macs == 0 and rows["ReLU"].other_ops == 8 * 16 * 16
    dw = profile(nn.Conv2d(8, 8, 3, padding=1, groups=8, bias=False), (8, 10, 10))
    assert dw.macs == 10 * 10 * 8 * 9 and dw.layers[0].kind == "conv_dw"
    fc = profile(nn.Sequential(nn.Flatten(), nn.Linear(12, 5)), (3, 2, 2))
    assert fc.macs == 60 and fc.params == 65


def test_se_scaling_and_residual_adds_are_other_ops_not_macs():
    block = InvertedResidual(16, 64, 16, se_channels=16)
    result = profile(block, (16, 8, 8))
    se_row = next(r for r in result.layers if r.type == "SqueezeExcite")
    assert se_row.macs == 0 and se_row.other_ops == 2 * 64 * 8 * 8
    top = next(r for r in result.layers if r.name == "")
    assert top.type == "InvertedResidual" and top.macs == 0 and top.other_ops == 16 * 8 * 8
    convs = 16 * 64 * 64 + 64 * 9 * 64 + 64 * 16 + 16 * 64 + 64 * 16 * 64  # pw, dw, SE reduce/expand, pwl
    assert result.macs == convs
    assert isinstance(block.se, SqueezeExcite)


def test_per_layer_rows_and_shapes():
    result = profile(create_model("mobilenet_v2", num_classes=10), 96)
    first = result.layers[0]
    assert first.name == "stem.conv" and first.output_shape == (32, 48, 48)
    assert result.layers[-1].name == "classifier" and result.layers[-1].output_shape == (10,)
    # hand counts: 3x3 stride-2 stem, 3 -> 32 channels, 48x48 out; the 1280 -> 10 classifier
    assert first.macs == 48 * 48 * 32 * 3 * 3 * 3 and first.params == 32 * 3 * 3 * 3
    assert result.layers[-1].macs == 1280 * 10 and result.layers[-1].params == 1280 * 10 + 10
    data = result.to_dict()
    assert data["params"] == result.params and len(data["layers"]) == len(result.layers)
    assert "total" in result.format_table()


def test_macs_scale_with_resolution():
    model = create_model("mobilenet_v1", num_classes=0)
    assert profile(model, 128).macs * 4 == profile(model, 256).macs


def test_profile_input_forms_and_errors():
    model = create_model("mobilenet_v3_small", in_chans=1, small_input=True, num_classes=10)
    assert profile(model, 28).input_size == (1, 28, 28)
    assert profile(model, (28, 32)).input_size == (1, 28, 32)
    with pytest.raises(ValueError, match="input_size must be"):
        profile(model, (1, 2, 3, 4))
    assert model.training  # restored after profiling


def test_profile_does_not_change_outputs():
    model = create_model("mobilenet_v3_small", width_mult=0.5).eval()
    x = torch.randn(1, 3, 64, 64)
    before = model(x)
    profile(model, 64)
    torch.testing.assert_close(model(x), before)
