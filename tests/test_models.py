import pytest
import torch
from torch import nn

import mobilenets
from mobilenets import create_model, list_models
from mobilenets.layers import ConvNormAct, FusedInvertedBottleneck, InvertedResidual, SqueezeExcite
from mobilenets.layers import UniversalInvertedBottleneck as UIB

ALL = list_models()


def test_list_models():
    assert ALL == [
        "mobilenet_v1",
        "mobilenet_v2",
        "mobilenet_v3_large",
        "mobilenet_v3_large_minimal",
        "mobilenet_v3_small",
        "mobilenet_v3_small_minimal",
        "mobilenet_v4_conv_large",
        "mobilenet_v4_conv_medium",
        "mobilenet_v4_conv_small",
        "mobilenet_v4_hybrid_large",
        "mobilenet_v4_hybrid_medium",
    ]
    assert list_models("mobilenet_v3_s*") == ["mobilenet_v3_small", "mobilenet_v3_small_minimal"]


@pytest.mark.parametrize("name", ALL)
@pytest.mark.parametrize("width_mult, resolution", [(0.35, 32), (1.0, 64), (1.25, 48)])
def test_output_shape_and_gradients(name, width_mult, resolution):
    model = create_model(name, width_mult=width_mult, num_classes=7)
    x = torch.randn(2, 3, resolution, resolution)
    out = model(x)
    assert out.shape == (2, 7)
    out.logsumexp(1).sum().backward()
    no_grad = [n for n, p in model.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()]
    assert not no_grad, f"parameters without a finite gradient: {no_grad[:5]}"
    # BN biases feeding another train-mode BN can have an exactly-zero gradient at 1x1 maps; weights cannot
    zero = [n for n, p in model.named_parameters() if p.ndim > 1 and p.grad.abs().sum() == 0]
    if resolution == 32:
        # V4 hybrids: at 32 px the first attention stage is 2x2 and its keys, downsampled, 1x1, and the last
        # one is 1x1; a softmax over one key is constant, so no gradient reaches those blocks' queries and keys
        # (exactly zero or rounding noise, depending on the kernel)
        single_key = {name for name, b in model.named_modules() if hasattr(b, "kv_stride")}
        zero = [
            n for n in zero
            if ".".join(n.split(".")[:3]) not in single_key or n.split(".")[3] not in ("query", "key", "key_down")
        ]
    assert len(zero) == 0, f"weights with an all-zero gradient: {zero[:5]}"


@pytest.mark.parametrize(
    "name, params",
    [
        ("mobilenet_v1", 4_231_976),  # Keras MobileNet trainable params
        ("mobilenet_v2", 3_504_872),  # torchvision
        ("mobilenet_v3_large", 5_483_032),  # torchvision
        ("mobilenet_v3_small", 2_542_856),  # torchvision
        ("mobilenet_v4_conv_small", 3_774_024),  # timm mobilenetv4_conv_small
        ("mobilenet_v4_conv_medium", 9_715_512),  # timm
        ("mobilenet_v4_conv_large", 32_590_864),  # timm
        ("mobilenet_v4_hybrid_medium", 11_074_648),  # timm
        ("mobilenet_v4_hybrid_large", 37_764_624),  # timm
    ],
)
def test_reference_parameter_counts(name, params):
    model = create_model(name)
    assert sum(p.numel() for p in model.parameters() if p.requires_grad) == params


@pytest.mark.parametrize(
    "ours, theirs, width",
    [
        ("mobilenet_v2", "mobilenet_v2", 1.0),
        ("mobilenet_v2", "mobilenet_v2", 0.5),
        ("mobilenet_v2", "mobilenet_v2", 1.4),
        ("mobilenet_v3_large", "mobilenet_v3_large", 1.0),
        ("mobilenet_v3_small", "mobilenet_v3_small", 1.0),
    ],
)
def test_same_tensor_shapes_as_torchvision(ours, theirs, width):
    tv = pytest.importorskip("torchvision.models")
    a = create_model(ours, width_mult=width)
    b = getattr(tv, theirs)(width_mult=width)
    shapes_a = sorted(tuple(t.shape) for t in a.state_dict().values() if t.ndim > 0)
    shapes_b = sorted(tuple(t.shape) for t in b.state_dict().values() if t.ndim > 0)
    assert shapes_a == shapes_b


def test_v1_last_block_has_stride_one():
    model = create_model("mobilenet_v1").eval()
    feats = model.forward_features(torch.randn(1, 3, 224, 224))
    assert feats.shape == (1, 1024, 7, 7)
    assert model.blocks[-1].conv_dw.conv.stride == (1, 1)


def test_v1_width_rule_is_truncation():
    model = create_model("mobilenet_v1", width_mult=0.75)
    assert model.stem.conv.out_channels == 24
    assert [b.conv_pw.conv.out_channels for b in model.blocks][:2] == [48, 96]
    assert create_model("mobilenet_v1", width_mult=0.1).stem.conv.out_channels == 8  # floor of 8


def test_v2_head_policy():
    assert create_model("mobilenet_v2", width_mult=0.5).num_features == 1280
    assert create_model("mobilenet_v2", width_mult=1.4).num_features == 1792
    assert create_model("mobilenet_v2", width_mult=0.35).stem.conv.out_channels == 16


def test_v3_head_and_structure():
    large = create_model("mobilenet_v3_large")
    assert large.num_features == 960 and large.head_hidden_size == 1280
    assert isinstance(large.head_act, nn.Hardswish) and isinstance(large.stem.act, nn.Hardswish)
    assert sum(isinstance(m, SqueezeExcite) for m in large.modules()) == 8
    small = create_model("mobilenet_v3_small", width_mult=0.75)
    assert small.head_hidden_size == 1024  # kept for alpha <= 1
    assert sum(isinstance(m, SqueezeExcite) for m in small.modules()) == 9
    assert create_model("mobilenet_v3_large", width_mult=1.25).head_hidden_size == 1600


def _uib_kind(block: UIB) -> str:
    start, mid = not isinstance(block.conv_dw_start, nn.Identity), not isinstance(block.conv_dw, nn.Identity)
    return {(False, True): "IB", (True, False): "ConvNext", (True, True): "ExtraDW", (False, False): "FFN"}[
        (start, mid)
    ]


@pytest.mark.parametrize(
    "name, fused, kinds, resolution",
    [
        # UIB instances of the V4 reference (TF Model Garden's MNv4 specs; timm's modules count the same)
        ("mobilenet_v4_conv_small", 0, {"ExtraDW": 3, "IB": 8, "ConvNext": 1}, 224),
        ("mobilenet_v4_conv_medium", 1, {"ExtraDW": 13, "ConvNext": 4, "FFN": 4}, 256),
        ("mobilenet_v4_conv_large", 1, {"ExtraDW": 19, "ConvNext": 7}, 384),
    ],
)
def test_v4_structure(name, fused, kinds, resolution):
    model = create_model(name).eval()
    uibs = [b for b in model.blocks if isinstance(b, UIB)]
    counted: dict[str, int] = {}
    for b in uibs:
        counted[_uib_kind(b)] = counted.get(_uib_kind(b), 0) + 1
    assert counted == kinds
    assert sum(isinstance(b, FusedInvertedBottleneck) for b in model.blocks) == fused
    assert model.default_cfg["input_size"] == (3, resolution, resolution)
    assert model.num_features == 960 and model.head_hidden_size == 1280
    # head: 1x1 conv without bias + batch norm + ReLU on the pooled map (timm's conv_head / norm_head)
    assert isinstance(model.head_fc, ConvNormAct) and model.head_fc.conv.bias is None
    assert isinstance(model.head_fc.bn, nn.BatchNorm2d) and isinstance(model.head_fc.act, nn.ReLU)
    assert {type(m) for m in model.modules()}.isdisjoint({nn.ReLU6, nn.Hardswish, SqueezeExcite})
    # the stride sits on the middle depthwise conv when there is one, and every stage halves the map
    for b in uibs:
        if not isinstance(b.conv_dw, nn.Identity) and not isinstance(b.conv_dw_start, nn.Identity):
            assert b.conv_dw_start.conv.stride == (1, 1)
    assert model.forward_features(torch.randn(1, 3, 64, 64)).shape == (1, 960, 2, 2)


@pytest.mark.parametrize(
    "name, uibs, heads, act, kv_strides",
    [
        ("mobilenet_v4_hybrid_medium", 22, 4, nn.ReLU, [2, 2, 2, 2, 1, 1, 1, 1]),
        ("mobilenet_v4_hybrid_large", 27, 8, nn.GELU, [2, 2, 2, 2, 1, 1, 1, 1]),
    ],
)
def test_v4_hybrid_structure(name, uibs, heads, act, kv_strides):
    from mobilenets.layers import LayerScale, MobileMultiQueryAttention

    model = create_model(name).eval()
    mqa = [b for b in model.blocks if isinstance(b, MobileMultiQueryAttention)]
    assert [b.kv_stride for b in mqa] == kv_strides and all(b.heads == heads for b in mqa)
    assert sum(isinstance(b, UIB) for b in model.blocks) == uibs
    # a layer scale started at 1e-5 on every UIB and attention block, none elsewhere
    scaled = [b for b in model.blocks if isinstance(getattr(b, "layer_scale", None), LayerScale)]
    assert len(scaled) == uibs + len(mqa)
    assert all(torch.equal(b.layer_scale.gamma, torch.full_like(b.layer_scale.gamma, 1e-5)) for b in scaled)
    assert isinstance(model.stem.act, act) and isinstance(model.head_fc.act, act)
    # the attention keeps the map: 64 px in, 2x2 out, like the conv models
    assert model.forward_features(torch.randn(1, 3, 64, 64)).shape == (1, 960, 2, 2)


def test_v4_width_policy():
    small = create_model("mobilenet_v4_conv_small", width_mult=0.5)
    assert small.stem.conv.out_channels == 16 and small.num_features == 480 and small.head_hidden_size == 1280
    assert create_model("mobilenet_v4_conv_small", width_mult=0.5, stem_width="fixed").stem.conv.out_channels == 32
    wide = create_model("mobilenet_v4_conv_medium", width_mult=1.5)
    assert wide.head_hidden_size == 1920 and wide.blocks[0].conv_exp.conv.out_channels == 192  # 48 * 4
    for option in ({"expand_width": "scaled"}, {"last_conv_width": "from_blocks"}, {"channel_rounding": "divisible"}):
        with pytest.raises(ValueError, match="does not apply to mobilenet_v4_conv_small"):
            create_model("mobilenet_v4_conv_small", **option)


@pytest.mark.parametrize("name", ["mobilenet_v3_large_minimal", "mobilenet_v3_small_minimal"])
def test_minimal_variants(name):
    model = create_model(name)
    kinds = {type(m) for m in model.modules()}
    assert SqueezeExcite not in kinds and nn.Hardswish not in kinds and nn.Hardsigmoid not in kinds
    dw = [m.conv_dw.conv.kernel_size for m in model.modules() if isinstance(m, InvertedResidual)]
    assert dw and all(k == (3, 3) for k in dw)


@pytest.mark.parametrize("name", ALL)
def test_small_input(name):
    model = create_model(name, small_input=True, in_chans=1, num_classes=10, width_mult=0.5).eval()
    x = torch.randn(2, 1, 28, 28)
    assert model(x).shape == (2, 10)
    assert model.forward_features(x).shape[-1] == 4  # total stride 8 instead of 32
    assert model.feature_info[-1].reduction == 8


@pytest.mark.parametrize("name", ALL)
def test_feature_info_matches_intermediates(name):
    model = create_model(name, width_mult=0.5).eval()
    feats = model.forward_intermediates(torch.randn(1, 3, 64, 64), intermediates_only=True)
    assert [f.reduction for f in model.feature_info] == [2, 4, 8, 16, 32]
    for info, f in zip(model.feature_info, feats):
        assert f.shape[1] == info.num_chs and f.shape[-1] == 64 // info.reduction


def test_forward_features_head_split_and_classifier_reset():
    model = create_model("mobilenet_v2", width_mult=0.5, num_classes=5).eval()
    x = torch.randn(2, 3, 64, 64)
    torch.testing.assert_close(model.forward_head(model.forward_features(x)), model(x))
    assert model.forward_head(model.forward_features(x), pre_logits=True).shape == (2, 1280)
    model.reset_classifier(3)
    assert model(x).shape == (2, 3) and model.num_classes == 3
    model.reset_classifier(0)
    assert model(x).shape == (2, 1280)
    assert create_model("mobilenet_v3_small", num_classes=0).eval()(torch.randn(1, 3, 32, 32)).shape == (1, 1024)


def test_metadata():
    model = create_model("mobilenet_v3_large")
    cfg = model.default_cfg
    assert cfg["input_size"] == (3, 224, 224) and cfg["num_classes"] == 1000
    assert cfg["mean"] == (0.485, 0.456, 0.406) and cfg["std"] == (0.229, 0.224, 0.225)
    assert model.arch == "mobilenet_v3_large" and model.options.width_mult == 1.0
    assert cfg["crop_pct"] == 0.875 and cfg["interpolation"] == "bilinear"  # the ImageNet papers' evaluation


def test_default_cfg_follows_the_checkpoint_preprocessing(tmp_path):
    """A checkpoint's evaluation transform reaches default_cfg: published weights' ``preprocessing``, or the
    ``eval_resize`` of the run that trained it (Fashion-MNIST evaluates uncropped)."""
    model = create_model("mobilenet_v3_small", width_mult=0.35, num_classes=3)
    mobilenets.save(model, tmp_path / "pub.safetensors",
                    preprocessing={"resize": 256, "crop": 224, "crop_pct": 0.95, "interpolation": "bicubic"})
    cfg = mobilenets.load(tmp_path / "pub.safetensors").default_cfg
    assert cfg["crop_pct"] == 0.95 and cfg["interpolation"] == "bicubic"
    mobilenets.save(model, tmp_path / "run.safetensors", training={"eval_resize": 256})
    cfg = mobilenets.load(tmp_path / "run.safetensors").default_cfg
    assert cfg["crop_pct"] == 0.875 and cfg["interpolation"] == "bilinear"


def test_overridable_layers():
    model = create_model("mobilenet_v2", act_layer="hardswish", norm_layer="groupnorm", width_mult=0.5)
    kinds = {type(m) for m in model.modules()}
    assert nn.ReLU6 not in kinds and nn.Hardswish in kinds
    assert nn.BatchNorm2d not in kinds and nn.GroupNorm in kinds
    assert model(torch.randn(1, 3, 32, 32)).shape == (1, 1000)
    model = create_model("mobilenet_v3_small", act_layer=nn.SiLU)
    kinds = {type(m) for m in model.modules()}
    assert nn.SiLU in kinds and nn.Hardswish not in kinds and nn.ReLU in kinds  # table's ReLU layers stay
    bn = create_model("mobilenet_v1", bn_eps=1e-3, bn_momentum=0.01).stem.bn
    assert bn.eps == 1e-3 and bn.momentum == 0.01


def test_dropout_and_drop_path_options():
    model = create_model("mobilenet_v2", dropout=0.5, drop_path_rate=0.1)
    assert model.dropout.p == 0.5
    rates = [b.drop_path.p for b in model.blocks if hasattr(b.drop_path, "p")]
    assert rates and rates == sorted(rates) and max(rates) < 0.1


def test_tf_same_padding_option():
    model = create_model("mobilenet_v3_small", padding="same", width_mult=0.5).eval()
    assert model(torch.randn(1, 3, 65, 65)).shape == (1, 1000)
    assert model.stem.conv.padding == (0, 0)


def test_unknown_model_name():
    with pytest.raises(ValueError, match=r"unknown model 'mobilenet_v3_smal'.*did you mean 'mobilenet_v3_small'.*available: mobilenet_v1"):
        create_model("mobilenet_v3_smal")


def test_misspelled_option_is_not_swallowed():
    with pytest.raises(TypeError, match=r"unknown option 'widht_mult'.*did you mean 'width_mult'.*accepted options: num_classes"):
        create_model("mobilenet_v2", widht_mult=0.5)


@pytest.mark.parametrize(
    "options, message",
    [
        ({"width_mult": 0}, "width_mult must be a number in"),
        ({"width_mult": "1.0"}, "width_mult"),
        ({"num_classes": -1}, "num_classes must be an integer >= 0"),
        ({"num_classes": 10.0}, "num_classes"),
        ({"in_chans": 0}, "in_chans"),
        ({"dropout": 1.0}, "dropout must be in"),
        ({"padding": "valid"}, "padding must be 'symmetric'"),
        ({"act_layer": "swishy"}, "unknown act_layer 'swishy'"),
        ({"norm_layer": "layernormx"}, "unknown norm_layer"),
        ({"small_input": "yes"}, "small_input must be True or False"),
        ({"bn_eps": 0}, "bn_eps"),
        ({"drop_path_rate": 1.5}, "drop_path_rate"),
    ],
)
def test_bad_option_values(options, message):
    with pytest.raises(ValueError, match=message):
        create_model("mobilenet_v2", **options)


def test_bad_input_shapes():
    model = create_model("mobilenet_v3_small").eval()
    with pytest.raises(ValueError, match=r"expects input of shape \(N, 3, H, W\), got \(1, 1, 64, 64\)"):
        model(torch.randn(1, 1, 64, 64))
    with pytest.raises(ValueError, match=r"H and W >= 32.*small_input=True"):
        model(torch.randn(1, 3, 28, 28))
    with pytest.raises(ValueError, match="expects input of shape"):
        model(torch.randn(3, 64, 64))


def test_public_api(tmp_path):
    # every top-level name must be the working function, not just present
    assert mobilenets.list_models() == ALL and mobilenets.make_divisible(11.2) == 16
    model = mobilenets.create_model("mobilenet_v3_small", width_mult=0.5, num_classes=5).eval()
    x = torch.randn(1, 3, 64, 64)
    assert model(x).shape == (1, 5)
    assert mobilenets.profile(model, 64).params == sum(p.numel() for p in model.parameters())
    loaded = mobilenets.load(mobilenets.save(model, tmp_path / "m.safetensors")).eval()
    torch.testing.assert_close(loaded(x), model(x))
    block = mobilenets.InvertedResidual(16, 64, 16)
    assert block.has_skip and block(torch.randn(1, 16, 8, 8)).shape == (1, 16, 8, 8)


def test_v1_refuses_drop_path():
    """V1 has no residual branch for drop path to skip: a rate is refused rather than silently unused."""
    with pytest.raises(ValueError, match="drop_path_rate=0.1 does not apply to mobilenet_v1"):
        create_model("mobilenet_v1", drop_path_rate=0.1)
    assert create_model("mobilenet_v1", drop_path_rate=0.0).num_classes == 1000
