"""SSDLite detectors (issue #24, items 1-3 and 7): where the maps come from, the papers' complexity, the
torchvision contract (losses in training, detections in evaluation), checkpoints, torchvision's weights and
the ONNX export of the raw heads."""

from __future__ import annotations

import copy
import json

import pytest
import torch

import mobilenets
from mobilenets.detection import PAPER_FIGURES
from mobilenets.profile import profile
from mobilenets.registry import create_model, list_models

torchvision = pytest.importorskip("torchvision")

NAMES = ["ssdlite_mobilenet_v1", "ssdlite_mobilenet_v2", "ssdlite_mobilenet_v3_large", "ssdlite_mobilenet_v3_small"]


@pytest.fixture(scope="module")
def tiny():
    """A small detector (V3 Small x0.35, 5 classes, 96x96) with non-trivial batch-norm statistics."""
    torch.manual_seed(0)
    model = create_model("ssdlite_mobilenet_v3_small", num_classes=5, width_mult=0.35, image_size=96)
    model.train()
    with torch.no_grad():
        for _ in range(2):
            model.forward_raw(torch.rand(4, 3, 96, 96) * 2 - 1)
    return model.eval()


def test_registered_names_and_defaults():
    assert list_models(task="detection") == NAMES
    model = create_model("ssdlite_mobilenet_v3_large", num_classes=91)
    assert model.num_classes == 91 and model.options.image_size == (320, 320)
    assert model.info.input_size == (3, 320, 320) and model.info.mean == (0.5, 0.5, 0.5)
    # C4: the 13th bneck's expansion (672) at output stride 16, the last layer (960) at 32, then the extras
    info = model.backbone.feature_info
    assert info.channels() == [672, 960, 512, 256, 256, 128]
    assert info.reduction() == [16, 32, 64, 128, 256, 512]
    cls_logits, bbox = model.eval().forward_raw(torch.zeros(1, 3, 320, 320))
    # TensorFlow's anchors: 3 boxes on the 20x20 map, 6 on 10x10, 5x5, 3x3, 2x2, 1x1
    assert cls_logits.shape == (1, 2034, 91) and bbox.shape == (1, 2034, 4)


def test_mean_and_std_follow_in_chans():
    # the detector normalises inside forward, so a 3-value mean on a 1-channel model fails on every image
    model = create_model("ssdlite_mobilenet_v3_small", in_chans=1, num_classes=11, width_mult=0.35,
                         image_size=96).eval()
    assert model.info.input_size == (1, 96, 96)
    assert model.info.mean == (0.5,) and model.info.std == (0.5,)
    image = torch.rand(1, 70, 50)
    with torch.no_grad():
        (detections,) = model([image])
        batch, _ = model.preprocess([image])
    assert batch.shape == (1, 1, 96, 96)
    torch.testing.assert_close(batch.amin(), image.min() * 2 - 1, atol=0.05, rtol=0)
    assert set(detections) == {"boxes", "scores", "labels"}


@pytest.mark.parametrize("name, c4", [("ssdlite_mobilenet_v1", 512), ("ssdlite_mobilenet_v2", 576),
                                      ("ssdlite_mobilenet_v3_small", 288)])
def test_first_map_is_the_expansion_before_the_last_stride(name, c4):
    """V2: the expansion of layer 15 (576); V3 Small: the 9th bneck's (288); V1: the input of the last stage's
    depthwise conv, the 512-channel map at output stride 16."""
    model = create_model(name, width_mult=1.0, image_size=64).eval()
    info = model.backbone.feature_info
    assert info.channels()[0] == c4 and info.reduction()[:2] == [16, 32]
    body = model.backbone.body
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        before = body.stem(x)
        for stage in body.stages[:-1]:
            before = stage(before)
        first = body.stages[-1][0]
        expected = first.conv_pw(before) if name != "ssdlite_mobilenet_v1" else before
        maps = list(model.backbone(x).values())
    assert [tuple(m.shape[1:]) for m in maps][0] == (c4, 4, 4)
    torch.testing.assert_close(maps[0], expected, rtol=0, atol=0)


# the V2 row goes through the command line below
@pytest.mark.parametrize("fig", [f for f in PAPER_FIGURES if (f.arch, f.options) != ("ssdlite_mobilenet_v2", {})],
                         ids=lambda f: f"{f.arch}-{'-'.join(map(str, f.options)) or 'default'}")
def test_paper_complexity_within_5_percent(fig):
    model = create_model(fig.arch, **fig.options)
    counted = profile(model, (320, 320))
    assert counted.params / 1e6 == pytest.approx(fig.params_m, rel=0.05)
    assert counted.macs / 1e9 == pytest.approx(fig.macs_b, rel=0.05)


def test_profile_command_counts_v2_as_the_paper(capsys):
    from mobilenets.cli import main

    assert main(["profile", "ssdlite_mobilenet_v2", "--resolution", "320x320", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    # V2 paper Table 6: 4.3M params, 0.8B MAdds; the raw heads counted, not NMS
    assert out["params"] == pytest.approx(4.3e6, rel=0.05) and out["macs"] == pytest.approx(0.8e9, rel=0.05)
    assert out["num_classes"] == 91


def test_reduced_tail_keeps_the_first_expansion_on_v3_unless_told():
    kept = create_model("ssdlite_mobilenet_v3_large", reduced_tail=True)
    assert kept.options.backbone.reduced_tail_expansion == "kept"
    assert kept.backbone.feature_info.channels()[:2] == [672, 480]
    halved = create_model("ssdlite_mobilenet_v3_large", reduced_tail=True, reduced_tail_expansion="halved")
    assert halved.backbone.feature_info.channels()[:2] == [336, 480]
    # torchvision's ssdlite320 (reduced tail, six boxes on every map) has 3,440,060 parameters
    tv_layout = create_model("ssdlite_mobilenet_v3_large", reduced_tail=True, reduce_boxes_in_lowest_layer=False)
    assert sum(p.numel() for p in tv_layout.parameters()) == 3440060


@pytest.mark.parametrize("options, message", [
    ({"output_stride": 16}, "output_stride must be 32"),
    ({"num_classes": 1}, "num_classes must be an integer >= 2"),
    ({"image_size": (320,)}, "image_size must be"),
    ({"image_size": 16}, "image_size must be at least 32"),
    ({"nms_thresh": 1.5}, "nms_thresh must be a number in"),
    ({"reduce_boxes_in_lowest_layer": 1}, "reduce_boxes_in_lowest_layer must be True or False"),
])
def test_bad_options_are_refused(options, message):
    with pytest.raises(ValueError, match=message):
        create_model("ssdlite_mobilenet_v3_small", **options)


def test_unknown_option_lists_the_accepted_ones():
    with pytest.raises(TypeError, match=r"unknown option 'dropout'.*accepted options: num_classes, image_size"):
        create_model("ssdlite_mobilenet_v2", dropout=0.1)


def test_training_returns_torchvision_losses_that_train(tiny):
    model = copy.deepcopy(tiny).train()
    images = [torch.rand(3, 120, 80), torch.rand(3, 96, 96)]
    targets = [
        {"boxes": torch.tensor([[10.0, 20.0, 60.0, 100.0], [30.0, 5.0, 70.0, 40.0]]), "labels": torch.tensor([1, 4])},
        {"boxes": torch.zeros((0, 4)), "labels": torch.zeros((0,), dtype=torch.int64)},
    ]
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    losses = []
    for _ in range(3):
        loss = model(images, targets)
        assert set(loss) == {"bbox_regression", "classification"}
        total = sum(loss.values())
        optimizer.zero_grad()
        total.backward()
        optimizer.step()
        losses.append(float(total.detach()))
    assert all(torch.isfinite(torch.tensor(losses))) and losses[-1] < losses[0]


def test_evaluation_is_preprocess_raw_heads_and_decode(tiny):
    images = [torch.rand(3, 150, 90), torch.rand(3, 96, 96)]
    tiny.score_thresh = 0.0
    with torch.no_grad():
        detections = tiny(images)
        batch, sizes = tiny.preprocess(images)
        assert batch.shape == (2, 3, 96, 96) and sizes == [(150, 90), (96, 96)]
        # normalised to [-1, 1] with the model's mean and std
        assert batch.min() >= -1 and batch.max() <= 1 and batch.min() < -0.9
        decoded = tiny.decode(*tiny.forward_raw(batch), sizes)
    for det, dec, (h, w) in zip(detections, decoded, sizes):
        assert set(det) == {"boxes", "scores", "labels"} and len(det["boxes"]) == tiny.detections_per_img
        for key in det:
            torch.testing.assert_close(det[key], dec[key])
        boxes = det["boxes"]
        assert boxes[:, 0].min() >= 0 and boxes[:, 2].max() <= w and boxes[:, 3].max() <= h
        assert det["labels"].min() >= 1 and det["labels"].max() <= 4


@pytest.mark.parametrize("size", [(96, 96), (97, 131)])
def test_anchors_fit_the_maps_at_any_size(size):
    model = create_model("ssdlite_mobilenet_v2", width_mult=0.35, num_classes=3, image_size=size).eval()
    with torch.no_grad():
        maps = list(model.backbone(torch.zeros(1, 3, *size)).values())
        cls_logits, _ = model.forward_raw(torch.zeros(1, 3, *size))
    assert [tuple(m.shape[-2:]) for m in maps] == model.feature_sizes()
    anchors = model.anchors(2)
    assert len(anchors) == 2 and anchors[0].shape == (cls_logits.shape[1], 4)


def test_decode_refuses_outputs_of_another_size(tiny):
    with pytest.raises(ValueError, match=r"decodes cls_logits of shape \(N, \d+, 5\)"):
        tiny.decode(torch.zeros(1, 10, 5), torch.zeros(1, 10, 4))


def test_checkpoint_round_trip(tiny, tmp_path):
    path = mobilenets.save(tiny, tmp_path / "det.safetensors", class_names=["background", "a", "b", "c", "d"])
    loaded = mobilenets.load(path)
    assert type(loaded) is type(tiny) and loaded.options == tiny.options
    assert loaded.info.extra["class_names"][1] == "a"
    x = torch.rand(1, 3, 96, 96)
    with torch.no_grad():
        for a, b in zip(tiny.forward_raw(x), loaded.forward_raw(x)):
            torch.testing.assert_close(a, b, rtol=0, atol=0)


@pytest.fixture(scope="module")
def torchvision_ssdlite():
    """torchvision's ssdlite320_mobilenet_v3_large with random weights and batch-norm statistics (no download)."""
    from torchvision.models.detection import ssdlite320_mobilenet_v3_large

    torch.manual_seed(0)
    model = ssdlite320_mobilenet_v3_large(weights=None, weights_backbone=None)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 1.5)
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.2, 0.2)
            elif isinstance(m, torch.nn.Conv2d) and m.bias is not None:
                # the heads' last convs: logits far from zero, so that scores and NMS have something to order
                m.weight.mul_(10)
    return model.eval()


def test_torchvision_ssdlite_converts_to_the_same_heads_and_detections(torchvision_ssdlite):
    from mobilenets.convert import convert_state_dict

    tv = torchvision_ssdlite
    # sorted keys, as a safetensors file stores them: the converter restores torchvision's forward order
    ours = convert_state_dict("torchvision", dict(sorted(tv.state_dict().items())), "ssdlite320_mobilenet_v3_large")
    assert ours.arch == "ssdlite_mobilenet_v3_large" and ours.num_classes == 91
    assert ours.options.backbone.reduced_tail_expansion == "kept" and not ours.options.reduce_boxes_in_lowest_layer
    torch.manual_seed(1)
    images = [torch.rand(3, 240, 320), torch.rand(3, 300, 200)]
    with torch.no_grad():
        batch, sizes = ours.preprocess(images)
        reference_batch = tv.transform(images)[0].tensors
        torch.testing.assert_close(batch, reference_batch, rtol=0, atol=1e-6)
        reference = tv.head(list(tv.backbone(reference_batch).values()))
        cls_logits, bbox = ours.forward_raw(batch)
        assert cls_logits.abs().max() > 1.0
        assert (cls_logits - reference["cls_logits"]).abs().max() <= 1e-4
        assert (bbox - reference["bbox_regression"]).abs().max() <= 1e-4
        expected, got = tv(images), ours(images)
    for e, g in zip(expected, got):
        assert torch.equal(e["labels"], g["labels"])
        torch.testing.assert_close(g["boxes"], e["boxes"], rtol=0, atol=1e-3)
        torch.testing.assert_close(g["scores"], e["scores"], rtol=0, atol=1e-5)


def test_torchvision_ssdlite_conversion_refuses_other_widths():
    from mobilenets.convert import resolve

    with pytest.raises(ValueError, match="width_mult must be 1"):
        resolve("torchvision", "ssdlite320_mobilenet_v3_large", 0.75)


def test_onnx_export_of_the_raw_heads_decodes_to_the_same_detections(tiny, tmp_path, capsys):
    pytest.importorskip("onnxruntime")
    from mobilenets.cli import main
    from mobilenets.deploy.ort import onnxruntime_session

    checkpoint = mobilenets.save(tiny, tmp_path / "det.safetensors")
    out = tmp_path / "det.onnx"
    # opset 17: the TorchScript-based exporter, seconds faster here than the dynamo one of the default opset 18
    assert main(["export", str(checkpoint), "--format", "onnx", "--opset", "17", "--output", str(out)]) == 0
    assert "no NMS in the graph" in capsys.readouterr().out
    session = onnxruntime_session(str(out))
    assert [o.name for o in session.get_outputs()] == ["cls_logits", "bbox_regression"]
    images = [torch.rand(3, 120, 100)]
    tiny.score_thresh = 0.0
    with torch.no_grad():
        batch, sizes = tiny.preprocess(images)
        expected_raw = tiny.forward_raw(batch)
        expected = tiny(images)[0]
    cls_logits, bbox = (torch.from_numpy(a) for a in session.run(None, {"input": batch.numpy()}))
    assert (cls_logits - expected_raw[0]).abs().max() <= 1e-4 and (bbox - expected_raw[1]).abs().max() <= 1e-4
    decoded = tiny.decode(cls_logits, bbox, sizes)[0]
    assert torch.equal(decoded["labels"], expected["labels"])
    torch.testing.assert_close(decoded["boxes"], expected["boxes"], rtol=0, atol=1e-3)
    assert main(["export", str(checkpoint), "--format", "onnx", "--int8", "--output", str(tmp_path / "q.onnx")]) == 2
    assert "is a detector: it exports to an fp32 ONNX file" in capsys.readouterr().err
