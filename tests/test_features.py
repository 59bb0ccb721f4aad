"""Backbones for dense prediction (issue #20): output stride, feature extraction, reduced tail, old checkpoints."""

import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import mobilenets
from mobilenets import create_model, list_models
from mobilenets.layers import ConvNormAct
from mobilenets.models.base import MobileNetFeatures

ALL = list_models()
DATA = Path(__file__).parent / "data"


def _dilations(model) -> list[int]:
    """The dilation of each block's spatial convs, in forward order (None for blocks without one: FFN)."""
    out = []
    for block in model.blocks:
        convs = [m for m in block.modules() if isinstance(m, nn.Conv2d) and m.kernel_size != (1, 1)]
        out.append(max((c.dilation[0] for c in convs), default=None))
    return out


@pytest.mark.parametrize("name", ALL)
@pytest.mark.parametrize("output_stride", [8, 16, 32])
def test_maps_have_the_shapes_feature_info_states(name, output_stride):
    for location in ("bottleneck", "expansion"):
        model = create_model(name, width_mult=0.5, features_only=True, output_stride=output_stride,
                             feature_location=location).eval()
        assert model.feature_info.reduction() == [min(r, output_stride) for r in (2, 4, 8, 16, 32)]
        with torch.no_grad():
            maps = model(torch.randn(1, 3, 64, 64))
        assert len(maps) == 5
        for info, fmap in zip(model.feature_info, maps):
            assert fmap.shape == (1, info.num_chs, 64 // info.reduction, 64 // info.reduction), (location, info)


@pytest.mark.parametrize("name", ALL)
def test_output_stride_keeps_weights_and_the_stages_before_it(name):
    """Dilation changes no tensor: weights of the stride-32 model load at 16 and 8, the maps up to the output
    stride are the same, the classifier still gives logits, and at 32 nothing changes."""
    ref = create_model(name, width_mult=0.5, num_classes=5).eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        ref_maps = ref.forward_intermediates(x, intermediates_only=True)
        for output_stride, same in ((32, 5), (16, 4), (8, 3)):
            model = create_model(name, width_mult=0.5, num_classes=5, output_stride=output_stride).eval()
            model.load_state_dict(ref.state_dict())
            maps = model.forward_intermediates(x, intermediates_only=True)
            for a, b in zip(ref_maps[:same], maps[:same]):
                torch.testing.assert_close(a, b, rtol=0, atol=0)
            assert model(x).shape == (1, 5)
            if output_stride == 32:
                torch.testing.assert_close(model(x), ref(x), rtol=0, atol=0)


def test_dilation_rule():
    """DeepLab's rule: the block whose stride became 1 keeps the dilation it had, the ones after it multiply it;
    torchvision's ("new") gives that block the new dilation already."""
    # V3 Large: 15 blocks, the 14x14 stage starts at block 6 and the 7x7 stage at block 12
    assert _dilations(create_model("mobilenet_v3_large", output_stride=16)) == [1] * 13 + [2, 2]
    assert _dilations(create_model("mobilenet_v3_large", output_stride=8)) == [1] * 7 + [2] * 6 + [4, 4]
    tv_rule = create_model("mobilenet_v3_large", output_stride=16, strided_block_dilation="new")
    assert _dilations(tv_rule) == [1] * 12 + [2, 2, 2]
    strides = [b.conv_dw.conv.stride[0] for b in tv_rule.blocks]
    assert strides == [1, 2, 1, 2, 1, 1, 2, 1, 1, 1, 1, 1, 1, 1, 1]
    # V4 UIB (both depthwise convs) and the fused IB dilate too
    v4 = create_model("mobilenet_v4_conv_medium", output_stride=8)
    dilations = _dilations(v4)
    assert dilations[:4] == [1, 1, 1, 1] and {d for d in dilations[-10:] if d is not None} == {4}
    assert {m.dilation[0] for m in v4.stages[-1][-1].modules() if isinstance(m, nn.Conv2d)
            and m.kernel_size != (1, 1)} == {4}


@pytest.mark.parametrize("padding", ["symmetric", "same"])
@pytest.mark.parametrize("size", [64, 65])
def test_dilated_models_under_both_paddings(padding, size):
    model = create_model("mobilenet_v3_small", width_mult=0.5, padding=padding, output_stride=8,
                         features_only=True).eval()
    with torch.no_grad():
        maps = model(torch.randn(1, 3, size, size))
    # a stride-2 conv gives ceil(n / 2) under both paddings; the dilated convs past stride 8 keep the size
    assert model.feature_info.reduction() == [2, 4, 8, 8, 8]
    assert [m.shape[-1] for m in maps] == [-(-size // r) for r in model.feature_info.reduction()]


def test_features_only_options_are_validated():
    with pytest.raises(ValueError, match="output_stride must be one of 8, 16, 32, got 4"):
        create_model("mobilenet_v2", output_stride=4)
    with pytest.raises(ValueError, match=r"out_indices: index 5 out of range; the model has 5 feature maps"):
        create_model("mobilenet_v2", features_only=True, out_indices=(1, 5))
    with pytest.raises(ValueError, match="names a feature map twice"):
        create_model("mobilenet_v2", features_only=True, out_indices=(1, -4))
    with pytest.raises(ValueError, match="feature_location must be one of 'bottleneck', 'expansion', got 'neck'"):
        create_model("mobilenet_v2", features_only=True, feature_location="neck")
    with pytest.raises(ValueError, match="pass features_only=True"):
        create_model("mobilenet_v2", out_indices=(1, 2))
    with pytest.raises(ValueError, match="reduced_tail must be True or False"):
        create_model("mobilenet_v3_small", reduced_tail=1)
    for name in ("mobilenet_v1", "mobilenet_v4_conv_small"):
        with pytest.raises(ValueError, match=f"option reduced_tail=True does not apply to {name}"):
            create_model(name, reduced_tail=True)
    model = create_model("mobilenet_v2", width_mult=0.5).eval()
    with pytest.raises(ValueError, match="stop_early=True needs intermediates_only=True"):
        model.forward_intermediates(torch.randn(1, 3, 32, 32), stop_early=True)
    with pytest.raises(ValueError, match="indices: 6 maps asked for, the model has 5"):
        model.forward_intermediates(torch.randn(1, 3, 32, 32), indices=6)


def test_out_indices_prune_the_network_and_pick_maps():
    full = create_model("mobilenet_v3_large", width_mult=0.5).eval()
    feats = MobileNetFeatures(full, out_indices=(1, 3))
    assert feats.feature_info.channels() == [16, 56] and feats.feature_info.reduction() == [4, 16]
    assert feats.feature_info[1]["module"] == "stages.3" and feats.out_indices == (1, 3)
    # only what the maps need is kept: four of five stages, no final conv, no head
    assert len(feats.stages) == 4 and not hasattr(feats, "final_conv") and not hasattr(feats, "classifier")
    x = torch.randn(2, 3, 96, 96)
    with torch.no_grad():
        want = full.forward_intermediates(x, indices=[1, 3], intermediates_only=True)
        for a, b in zip(feats(x), want):
            torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_forward_intermediates_behaves_as_timms():
    model = create_model("mobilenet_v2", width_mult=0.5).eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        final, maps = model.forward_intermediates(x)
        torch.testing.assert_close(final, model.forward_features(x), rtol=0, atol=0)
        assert [m.shape[1] for m in maps] == model.feature_info.channels()
        last_two = model.forward_intermediates(x, indices=2, intermediates_only=True)
        assert [m.shape[1] for m in last_two] == model.feature_info.channels()[-2:]
        early = model.forward_intermediates(x, indices=[0, 2], stop_early=True, intermediates_only=True)
        for a, b in zip(early, [maps[0], maps[2]]):
            torch.testing.assert_close(a, b, rtol=0, atol=0)
        negative = model.forward_intermediates(x, indices=[-1], intermediates_only=True)
        torch.testing.assert_close(negative[0], final, rtol=0, atol=0)


def test_expansion_is_the_input_of_the_projection():
    """V2's 14x14 stage ends in a block expanding 48 channels 6x at width 0.5: its expansion map has 288."""
    model = create_model("mobilenet_v2", width_mult=0.5, features_only=True, feature_location="expansion").eval()
    info = model.feature_info[3]
    assert info.module == "stages.3.6.conv_pwl" and info.hook == "forward_pre" and info.num_chs == 288
    block = model.stages[3][6]
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        expansion = model(x)[3]
        x16 = model.stages[:3](model.stem(x))
        for b in model.stages[3][:6]:
            x16 = b(x16)
        torch.testing.assert_close(expansion, block.se(block.conv_dw(block.conv_pw(x16))), rtol=0, atol=0)
    # the final conv (a plain conv) is its own expansion, as timm's ConvBnAct
    assert model.feature_info[4].module == "final_conv" and model.feature_info[4].hook == "forward"


def test_features_from_checkpoints(tmp_path):
    """mobilenets.load and create_model(pretrained=...) build the backbone from saved weights; the file's head
    is not needed (another number of classes loads), its backbone must match."""
    ref = create_model("mobilenet_v3_small", width_mult=0.5, num_classes=4).eval()
    path = mobilenets.save(ref, tmp_path / "m.safetensors", class_names=list("abcd"))
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        want = ref.forward_intermediates(x, indices=[1, 2, 4], intermediates_only=True)
    loaded = mobilenets.load(path, features_only=True, out_indices=(1, 2, 4))
    assert isinstance(loaded, MobileNetFeatures) and not loaded.training
    assert loaded.info.extra["class_names"] == list("abcd")
    assert loaded.arch == "mobilenet_v3_small" and loaded.options.width_mult == 0.5
    pretrained = create_model("mobilenet_v3_small", width_mult=0.5, pretrained=str(path), features_only=True,
                              out_indices=(1, 2, 4)).eval()
    with torch.no_grad():
        for got in (loaded(x), pretrained(x)):
            for a, b in zip(got, want):
                torch.testing.assert_close(a, b, rtol=0, atol=0)
    # at output stride 16 the weights load and the last map is 4x4 instead of 2x2
    dilated = mobilenets.load(path, features_only=True, output_stride=16)
    assert dilated.options.output_stride == 16 and dilated(x)[-1].shape[-1] == 4
    with pytest.raises(ValueError, match="output_stride must be one of 8, 16, 32, got 12"):
        mobilenets.load(path, output_stride=12)
    with pytest.raises(mobilenets.CheckpointError, match="stem.conv.weight"):
        create_model("mobilenet_v3_small", width_mult=0.75, pretrained=str(path), features_only=True)


@pytest.mark.parametrize("name", ["legacy_v1_mobilenet_v3_small", "legacy_v1_mobilenet_v4_conv_small"])
def test_checkpoints_of_format_1_still_load(name):
    """Files written before issue #20 (flat ``blocks.{k}`` names, format 1) load into the nested stages and give
    the logits they gave then."""
    record = json.loads((DATA / "legacy_v1_logits.json").read_text())["checkpoints"][f"{name}.safetensors"]
    path = DATA / f"{name}.safetensors"
    assert mobilenets.read_metadata(path)["format_version"] == 1
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as fh:
        assert any(k.startswith("blocks.") for k in fh.keys()) and not any(k.startswith("stages.") for k in fh.keys())
    model = mobilenets.load(path)
    x = torch.randn(record["input_shape"], generator=torch.Generator().manual_seed(record["input_seed"]))
    with torch.no_grad():
        torch.testing.assert_close(model(x), torch.tensor(record["logits"]), rtol=0, atol=1e-5)
    # the same file through create_model(pretrained=...) and as a backbone
    pretrained = create_model(record["arch"], **model.options.to_dict(), pretrained=str(path)).eval()
    with torch.no_grad():
        torch.testing.assert_close(pretrained(x), model(x), rtol=0, atol=0)
    feats = mobilenets.load(path, features_only=True, output_stride=16)
    assert len(feats(x)) == 5


def test_saved_checkpoints_are_format_2(tmp_path):
    model = create_model("mobilenet_v2", width_mult=0.35, num_classes=2)
    path = mobilenets.save(model, tmp_path / "m.safetensors")
    meta = mobilenets.read_metadata(path)
    assert meta["format_version"] == 2 and meta["options"]["output_stride"] == 32
    from safetensors.torch import load_file

    assert "stages.1.0.conv_pw.conv.weight" in load_file(str(path))


@pytest.mark.parametrize("name", ["mobilenet_v3_large", "mobilenet_v3_small"])
def test_reduced_tail_is_torchvisions(name):
    tv = pytest.importorskip("torchvision.models")
    ours = create_model(name, reduced_tail=True, expand_width="scaled", last_conv_width="from_blocks",
                        head_width="scaled", reduced_tail_expansion="kept")
    theirs = getattr(tv, name)(reduced_tail=True)
    shapes = lambda m: sorted(tuple(t.shape) for t in m.state_dict().values() if t.ndim > 0)  # noqa: E731
    assert shapes(ours) == shapes(theirs)
    plain = create_model(name)
    # the last stage, the last conv and the head at half width; the rest as it was
    assert ours.num_features * 2 == plain.num_features and ours.head_hidden_size * 2 == plain.head_hidden_size
    assert ours.feature_info.channels()[:4] == plain.feature_info.channels()[:4]
    assert ours.blocks[-1].conv_pwl.conv.out_channels * 2 == plain.blocks[-1].conv_pwl.conv.out_channels


def test_reduced_tail_v2():
    plain, reduced = create_model("mobilenet_v2"), create_model("mobilenet_v2", reduced_tail=True)
    assert [b.conv_pwl.conv.out_channels for b in reduced.stages[-1]] == [80, 80, 80, 160]
    assert reduced.num_features == 640 and plain.num_features == 1280
    assert reduced.feature_info.channels()[:4] == plain.feature_info.channels()[:4]


def test_same_padding_of_dilated_convs_is_tensorflows():
    x = torch.randn(1, 4, 13, 13)
    for stride in (1, 2):
        for padding in ("same", "symmetric"):
            layer = ConvNormAct(4, 4, 5, stride, groups=4, dilation=2, norm_layer=None, act_layer=None,
                                padding=padding)
            out = layer(x)
            if padding == "same":
                # TensorFlow: ceil(13 / stride) outputs, total padding (out - 1) * s + (k - 1) * d + 1 - 13,
                # the odd pixel after
                total = (-(-13 // stride) - 1) * stride + 4 * 2 + 1 - 13
                ref = F.conv2d(F.pad(x, (total // 2, total - total // 2) * 2), layer.conv.weight, layer.conv.bias,
                               stride, dilation=2, groups=4)
            else:
                ref = F.conv2d(x, layer.conv.weight, layer.conv.bias, stride, padding=4, dilation=2, groups=4)
            torch.testing.assert_close(out, ref, rtol=0, atol=0)
            assert out.shape[-1] == (13 if stride == 1 else 7)
