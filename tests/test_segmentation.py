"""Segmentation (issue #23): models and options, paper complexity, checkpoints, torchvision weights, data."""

import json

import pytest
import torch

import mobilenets
from mobilenets.cli import main
from mobilenets.registry import list_models
from mobilenets.segmentation import SegmentationModel
from mobilenets.segmentation.models import PAPER_FIGURES

SEG = list_models(task="segmentation")


def _eval(name, **options):
    torch.manual_seed(0)
    return mobilenets.create_model(name, **options).eval()


def test_registered_names():
    assert SEG == ["deeplabv3_mobilenet_v2", "deeplabv3_mobilenet_v3_large", "lraspp_mobilenet_v2",
                   "lraspp_mobilenet_v3_large", "lraspp_mobilenet_v3_small"]
    # classification listings are unchanged; task=None lists every task's (detection's too)
    assert not set(SEG) & set(list_models()) and set(list_models(task=None)) == (
        set(SEG) | set(list_models()) | set(list_models(task="detection")))
    with pytest.raises(ValueError, match="task must be one of"):
        list_models(task="keypoints")


@pytest.mark.parametrize("name", SEG)
def test_logits_at_input_resolution_non_square(name):
    model = _eval(name, num_classes=5)
    with torch.no_grad():
        out = model(torch.randn(2, 3, 72, 104))
    assert isinstance(model, SegmentationModel) and out.shape == (2, 5, 72, 104)
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("name", ["lraspp_mobilenet_v3_large", "deeplabv3_mobilenet_v2"])
def test_output_stride_8_and_16(name):
    x = torch.randn(1, 3, 64, 96)
    for os_ in (8, 16):
        model = _eval(name, output_stride=os_, num_classes=3)
        reductions = model.backbone.feature_info.reduction()
        assert reductions == [8, os_] and model(x).shape == (1, 3, 64, 96)
    with pytest.raises(ValueError, match="output_stride must be 8 or 16 for segmentation, got 32"):
        mobilenets.create_model(name, output_stride=32)


def test_heads_read_the_maps_the_papers_name():
    # LR-ASPP: 40 channels at 1/8 and the 960-channel conv at 1/16 (V3 paper Figure 10)
    assert _eval("lraspp_mobilenet_v3_large").backbone.feature_info.channels() == [40, 960]
    # the V2 paper's DeepLabv3 reads the 320-channel map, not the 1280-channel conv (section 6.3)
    v2 = _eval("deeplabv3_mobilenet_v2")
    assert v2.backbone.feature_info.channels() == [32, 320] and not hasattr(v2.backbone, "final_conv")
    assert v2.head.aspp.atrous_rates == (6, 12, 18)
    assert _eval("deeplabv3_mobilenet_v2", output_stride=8).head.aspp.atrous_rates == (12, 24, 36)
    assert _eval("deeplabv3_mobilenet_v2", aspp=False).head.aspp.atrous_rates == ()
    assert _eval("lraspp_mobilenet_v2", head_channels=64).head.cbr.conv.out_channels == 64


def test_paper_pooling_gates_vary_across_the_image():
    model = _eval("lraspp_mobilenet_v3_large", pooling="paper", num_classes=4)
    with torch.no_grad():
        # 1024x2048 at output stride 16 is a 64x128 map: 49x49 windows, stride (16, 20) -> 1x4 gates
        assert model.head.scale(torch.randn(1, 960, 64, 128)).shape == (1, 128, 1, 4)
        # a map smaller than 49 px pools over its whole side
        assert model.head.scale(torch.randn(1, 960, 16, 64)).shape == (1, 128, 1, 1)
        assert model(torch.randn(1, 3, 128, 256)).shape == (1, 4, 128, 256)
    assert _eval("lraspp_mobilenet_v3_large").head.pooling == "global"


def test_option_errors():
    with pytest.raises(TypeError, match=r"unknown option 'head_chanels'.*did you mean 'head_channels'.*accepted "
                                        r"options: num_classes, head_channels, aspp"):
        mobilenets.create_model("lraspp_mobilenet_v3_large", head_chanels=64)
    with pytest.raises(ValueError, match="aspp=False applies to the DeepLabv3 heads"):
        mobilenets.create_model("lraspp_mobilenet_v3_large", aspp=False)
    with pytest.raises(ValueError, match="aux_head applies to the DeepLabv3 heads"):
        mobilenets.create_model("lraspp_mobilenet_v2", aux_head=True)
    with pytest.raises(ValueError, match="pooling='paper' applies to LR-ASPP"):
        mobilenets.create_model("deeplabv3_mobilenet_v2", pooling="paper")
    with pytest.raises(ValueError, match="pooling must be one of 'global', 'paper'"):
        mobilenets.create_model("lraspp_mobilenet_v2", pooling="max")
    with pytest.raises(ValueError, match="atrous_rates needs aspp=True"):
        mobilenets.create_model("deeplabv3_mobilenet_v2", aspp=False, atrous_rates=(6, 12))
    with pytest.raises(ValueError, match="low_level must be one of 'stage', 'first_block'"):
        mobilenets.create_model("lraspp_mobilenet_v2", low_level="block")
    with pytest.raises(ValueError, match="head_channels must be an integer >= 1"):
        mobilenets.create_model("deeplabv3_mobilenet_v2", head_channels=0)
    with pytest.raises(ValueError, match="num_classes must be an integer >= 1"):
        mobilenets.create_model("deeplabv3_mobilenet_v2", num_classes=0)
    with pytest.raises(ValueError, match="reduced_tail must be True or False"):
        mobilenets.create_model("lraspp_mobilenet_v3_small", reduced_tail="yes")
    with pytest.raises(ValueError, match="features_only applies to classification models"):
        mobilenets.create_model("lraspp_mobilenet_v3_small", features_only=True)
    with pytest.raises(RuntimeError, match="built without aux_head"):
        _eval("deeplabv3_mobilenet_v2").forward_with_aux(torch.randn(1, 3, 64, 64))


def test_aux_head_logits_at_input_size():
    model = _eval("deeplabv3_mobilenet_v3_large", aux_head=True, num_classes=6)
    out, aux = model.forward_with_aux(torch.randn(1, 3, 64, 80))
    assert out.shape == aux.shape == (1, 6, 64, 80)
    assert model.aux_head.conv.conv.in_channels == 40


@pytest.mark.parametrize("figure", PAPER_FIGURES, ids=lambda f: f.arch)
def test_paper_complexity_within_3_percent(figure):
    model = mobilenets.create_model(figure.arch, **figure.options)
    report = mobilenets.profile(model, figure.resolution)
    assert report.params / 1e6 == pytest.approx(figure.params_m, rel=0.03)
    assert report.macs / 1e9 == pytest.approx(figure.macs_b, rel=0.03)


def test_rf2_halves_the_first_expansion_of_the_last_stage():
    paper = _eval("lraspp_mobilenet_v3_large", reduced_tail=True)
    kept = _eval("lraspp_mobilenet_v3_large", reduced_tail=True, reduced_tail_expansion="kept")
    first = lambda m: m.backbone.stages[-1][0].conv_pw.conv.out_channels  # noqa: E731
    assert (first(paper), first(kept)) == (336, 672)
    assert paper.backbone.feature_info.channels() == [40, 480]
    with pytest.raises(ValueError, match="reduced_tail_expansion='kept' needs reduced_tail=True"):
        mobilenets.create_model("mobilenet_v3_large", reduced_tail_expansion="kept")
    with pytest.raises(ValueError, match="reduced_tail_expansion='kept' does not apply to mobilenet_v2"):
        mobilenets.create_model("mobilenet_v2", reduced_tail=True, reduced_tail_expansion="kept")


def test_profile_command_non_square(capsys):
    code = main(["profile", "lraspp_mobilenet_v3_small", "--resolution", "64x128", "--num-classes", "19",
                 "--option", "reduced_tail=true", "--option", "head_channels=64", "--json"])
    data = json.loads(capsys.readouterr().out)
    model = mobilenets.create_model("lraspp_mobilenet_v3_small", reduced_tail=True, head_channels=64, num_classes=19)
    expected = mobilenets.profile(model, (64, 128))
    assert code == 0 and data["resolution"] == [64, 128] and data["num_classes"] == 19
    assert (data["params"], data["macs"]) == (expected.params, expected.macs)
    with pytest.raises(SystemExit):
        main(["profile", "lraspp_mobilenet_v3_small", "--resolution", "64x"])
    assert "expected N or HxW" in capsys.readouterr().err


def test_save_and_load_rebuild_a_segmentation_model(tmp_path):
    model = _eval("deeplabv3_mobilenet_v2", num_classes=4, aspp=False, width_mult=0.5, aux_head=True)
    path = mobilenets.save(model, tmp_path / "seg.safetensors", class_names=["bg", "a", "b", "c"])
    same = mobilenets.load(path)
    x = torch.randn(1, 3, 64, 64)
    assert isinstance(same, SegmentationModel) and same.options == model.options
    assert torch.equal(same(x), model(x)) and same.info.extra["class_names"] == ["bg", "a", "b", "c"]
    with pytest.raises(ValueError, match="features_only applies to classification checkpoints"):
        mobilenets.load(path, features_only=True)


def _torchvision_segmentation(name, **kwargs):
    segmentation = pytest.importorskip("torchvision.models.segmentation")
    torch.manual_seed(0)
    model = getattr(segmentation, name)(weights=None, weights_backbone=None, num_classes=7, **kwargs).eval()
    for m in model.modules():  # batch norm statistics that are not the identity
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.2, 0.2)
    return model


@pytest.mark.parametrize("name,aux", [("lraspp_mobilenet_v3_large", False), ("deeplabv3_mobilenet_v3_large", True),
                                      ("deeplabv3_mobilenet_v3_large", False)])
def test_torchvision_conversion_gives_the_same_outputs(name, aux, tmp_path, capsys):
    from mobilenets.convert import convert_state_dict

    theirs = _torchvision_segmentation(name, **({"aux_loss": True} if aux else {}))
    state = theirs.state_dict()
    # safetensors files hold keys sorted by name: the forward order must not depend on the file's order
    ours = convert_state_dict("torchvision", dict(sorted(state.items())), name)
    x = torch.randn(1, 3, 80, 112)
    with torch.no_grad():
        expected = theirs(x)
        assert (ours(x) - expected["out"]).abs().max() <= 1e-4
        if aux:
            assert (ours.forward_with_aux(x)[1] - expected["aux"]).abs().max() <= 1e-4
    assert hasattr(ours, "aux_head") == aux and ours.num_classes == 7
    assert ours.info.extra["converted_from"]["library"] == "torchvision"
    if aux:  # the command line, and the checkpoint rebuilding the converted model
        torch.save(state, tmp_path / "tv.pth")
        assert main(["convert", "--from", "torchvision", "--arch", name, str(tmp_path / "tv.pth"),
                     str(tmp_path / "ours.safetensors")]) == 0
        assert "atrous_rates=[12, 24, 36]" in capsys.readouterr().out
        with torch.no_grad():
            assert (mobilenets.load(tmp_path / "ours.safetensors")(x) - expected["out"]).abs().max() <= 1e-4


def test_torchvision_conversion_refuses_another_architecture():
    from mobilenets.convert import ConversionError, convert_state_dict

    state = _torchvision_segmentation("lraspp_mobilenet_v3_large").state_dict()
    with pytest.raises(ConversionError, match="does not fit"):
        convert_state_dict("torchvision", state, "deeplabv3_mobilenet_v3_large")


# -- data ---------------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def scenes():
    from mobilenets.data.segmentation import build_segmentation_data

    try:
        return build_segmentation_data("fashion-mnist-scenes", train_scenes=50, test_scenes=20, seed=3)
    except Exception as exc:  # noqa: BLE001 - the dataset package is a system dependency
        pytest.skip(f"Fashion-MNIST not available: {exc}")


def test_scenes_are_deterministic_and_splits_use_their_own_images(scenes):
    from mobilenets.data.fashion_mnist import FASHION_MNIST_CLASSES
    from mobilenets.data.scenes import FashionMNISTScenes

    assert (len(scenes.train.source), len(scenes.test.source)) == (60000, 10000)
    assert scenes.classes == ["background", *FASHION_MNIST_CLASSES] and scenes.in_chans == 1
    again = FashionMNISTScenes(scenes.train.source, 50, seed=3)
    for i in (0, 7, 49):
        a, b = scenes.train.scene(i), again.scene(i)
        assert torch.equal(a.image, b.image) and torch.equal(a.mask, b.mask) and torch.equal(a.boxes, b.boxes)
    other = FashionMNISTScenes(scenes.train.source, 50, seed=4)
    assert not torch.equal(other.scene(0).image, scenes.train.scene(0).image)
    assert scenes.train[0][0].shape == (1, 128, 128) and scenes.train[0][1].shape == (128, 128)


def test_scene_mask_is_the_visible_ink_and_boxes_are_tight(scenes):
    counts = []
    for i in range(20):
        scene = scenes.test.scene(i)
        ink = scene.image[0] > scenes.test.ink_threshold
        assert torch.equal(ink, scene.mask > 0)  # class where ink is, background elsewhere
        assert int(scene.mask.max()) <= 10 and len(scene.boxes) == len(scene.labels) <= 4
        covered = torch.zeros_like(ink)
        for (x0, y0, x1, y1), label in zip(scene.boxes.tolist(), scene.labels.tolist()):
            window = scene.mask[y0:y1, x0:x1] == label
            # tight: the garment's class reaches every edge of its box
            assert window[0].any() and window[-1].any() and window[:, 0].any() and window[:, -1].any()
            covered[y0:y1, x0:x1] = True
        assert not (ink & ~covered).any()
        counts.append(len(scene.labels))
    assert min(counts) >= 1 and max(counts) > 1


def _png(path, array, mode):
    from PIL import Image

    img = Image.fromarray(array.astype("uint8"), mode="L" if mode == "P" else mode)
    if mode == "P":
        img = img.convert("P")
        img.putpalette([v for i in range(256) for v in (i, 255 - i, i // 2)])
        img.putdata(array.flatten().tolist())
    img.save(path)


def test_voc_layout(tmp_path):
    import numpy as np

    from mobilenets.data.segmentation import VOC_CLASSES, VOCSegmentation

    root = tmp_path / "VOCdevkit" / "VOC2012"
    for d in ("JPEGImages", "SegmentationClass", "ImageSets/Segmentation"):
        (root / d).mkdir(parents=True)
    mask = np.zeros((24, 32), dtype=np.uint8)
    mask[4:12, 6:20] = 15  # person
    mask[3, :] = 255  # border: ignored
    _png(root / "SegmentationClass" / "2007_000001.png", mask, "P")
    from PIL import Image

    Image.fromarray(np.full((24, 32, 3), 90, dtype=np.uint8)).save(root / "JPEGImages" / "2007_000001.jpg")
    (root / "ImageSets" / "Segmentation" / "train.txt").write_text("2007_000001\n")
    data = VOCSegmentation(tmp_path, "train")
    image, target = data[0]
    assert image.shape == (3, 24, 32) and image.dtype == torch.uint8 and data.classes == list(VOC_CLASSES)
    assert torch.equal(target, torch.from_numpy(mask.astype("int64")))
    with pytest.raises(FileNotFoundError, match="val.txt: no such list"):
        VOCSegmentation(tmp_path, "val")
    _png(root / "SegmentationClass" / "2007_000001.png", np.stack([mask] * 3, -1), "RGB")
    with pytest.raises(ValueError, match="a RGB image; a mask must hold class indices"):
        data[0]
    mask[0, 0] = 40
    _png(root / "SegmentationClass" / "2007_000001.png", mask, "P")
    with pytest.raises(ValueError, match=r"values \[40\] are not classes 0-20 nor 255"):
        data[0]


def test_mask_folder_layout(tmp_path):
    import numpy as np
    from PIL import Image

    from mobilenets.data.segmentation import MaskFolder

    (tmp_path / "images").mkdir()
    (tmp_path / "masks").mkdir()
    for k in range(3):
        Image.fromarray(np.full((16, 20, 3), 40 * k, dtype=np.uint8)).save(tmp_path / "images" / f"im{k}.png")
        _png(tmp_path / "masks" / f"im{k}.png", np.full((16, 20), k, dtype=np.uint8), "L")
    data = MaskFolder(tmp_path, ["background", "cat", "dog"])
    assert len(data) == 3 and [int(data[k][1].unique()) for k in range(3)] == [0, 1, 2]
    (tmp_path / "masks" / "im2.png").unlink()
    with pytest.raises(ValueError, match=r"1 images without a mask, e.g. \['im2'\]"):
        MaskFolder(tmp_path, ["background", "cat", "dog"])


def test_joint_transforms_keep_image_and_mask_aligned():
    from mobilenets.data.segmentation import IGNORE_INDEX, JointTransform

    torch.manual_seed(0)
    mask = torch.zeros(64, 96, dtype=torch.int64)
    mask[8:40, 10:30] = 1
    mask[30:60, 50:90] = 2
    image = (mask * 100).to(torch.uint8).expand(3, -1, -1).clone()  # the image spells out its mask
    train = JointTransform(48, (0.0, 0.0, 0.0), (1.0, 1.0, 1.0), train=True, scale=(0.3, 1.0))
    agree, flipped = [], []
    for _ in range(10):
        x, y = train(image, mask)
        assert x.shape == (3, 48, 48) and x.dtype == torch.float32 and y.shape == (48, 48) and y.dtype == torch.int64
        assert set(y.unique().tolist()) <= {0, 1, 2}
        from_image = (x[0] * 255 / 100).round().long()
        agree.append((from_image == y).float().mean().item())
        flipped.append((from_image.flip(-1) == y).float().mean().item())
    # the image's values follow the mask (bilinear edges aside); a mask flipped on its own would not
    assert min(agree) > 0.93 and max(flipped) < 0.8  # measured: 0.954-1.0 against 0.37-0.74
    x, y = JointTransform(32, (0.5,) * 3, (0.5,) * 3, train=False)(image, mask)
    assert x.shape == (3, 32, 48) and y.shape == (32, 48) and IGNORE_INDEX not in y.tolist()


def test_segmentation_dataset_names():
    from mobilenets.data.segmentation import SEGMENTATION_DATASETS, build_segmentation_data, segmentation_dataset_name

    assert SEGMENTATION_DATASETS == ("fashion_mnist_scenes", "voc", "mask_folder")
    assert segmentation_dataset_name("Fashion-MNIST-Scenes") == "fashion_mnist_scenes"
    with pytest.raises(ValueError, match="unknown segmentation dataset 'coco'; accepted: fashion_mnist_scenes"):
        segmentation_dataset_name("coco")
    with pytest.raises(ValueError, match="mask_folder needs classes"):
        build_segmentation_data("mask_folder", "somewhere")


@pytest.mark.parametrize("backbone", ["mobilenet_v1", "mobilenet_v4_conv_small", "mobilenet_v4_hybrid_medium"])
def test_heads_on_other_backbones_of_the_zoo(backbone):
    from mobilenets.registry import get_entry
    from mobilenets.segmentation import SegmentationOptions, build_segmentation

    for head in ("lraspp", "deeplabv3"):
        opts = SegmentationOptions.build({"head": head}, {"num_classes": 3, "output_stride": 16}, "custom")
        model = build_segmentation(f"{head}_{backbone}", opts, get_entry(backbone).build).eval()
        assert model.backbone.feature_info.reduction() == [8, 16]
        with torch.no_grad():
            assert model(torch.randn(1, 3, 64, 96)).shape == (1, 3, 64, 96)
