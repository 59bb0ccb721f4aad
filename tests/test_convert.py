"""Converted weights give the source library's outputs (torchvision, timm, Keras 3 on the torch backend).

Each source model gets random weights and random BatchNorm statistics (the statistics of a random batch,
so activations keep a sensible scale), is saved the way its users save it, converted to a mobilenets
checkpoint, reloaded with ``mobilenets.load`` and compared in eval mode on random inputs.
"""

from __future__ import annotations


import pytest
import torch
from torch import nn

import mobilenets
from mobilenets.checkpoint import CheckpointError
from mobilenets.cli import main as cli_main
from mobilenets.convert import ConversionError, convert_file, convert_state_dict, resolve

torchvision = pytest.importorskip("torchvision")
timm = pytest.importorskip("timm")
pytest.importorskip("h5py")

TOL = 1e-4
# Keras 3.x on NumPy 2 warns on every variable read (np.array(copy=False)); thousands of lines of noise
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation doesn't accept a copy keyword")


def _randomize_torch(model: nn.Module, res: int) -> nn.Module:
    """Random affine BN parameters and running statistics taken from one random batch; layer scales (V4
    hybrids) of order 1, as trained ones are, rather than their 1e-5 init, which would hide their branches."""
    gen = torch.Generator().manual_seed(res)
    for name, p in model.named_parameters():
        if name.endswith("layer_scale.gamma"):
            with torch.no_grad():
                p.uniform_(0.5, 1.5, generator=gen)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.reset_running_stats()
            m.momentum = None  # cumulative average: after one batch, the batch statistics
            with torch.no_grad():
                m.weight.uniform_(0.5, 1.5, generator=gen)
                m.bias.normal_(0.0, 0.2, generator=gen)
    model.train()
    with torch.no_grad():
        model(torch.randn(4, 3, res, res, generator=gen))
    model.eval()
    return model


def _assert_same(expected: torch.Tensor, got: torch.Tensor, tol: float = TOL) -> None:
    assert expected.shape == got.shape
    # a meaningful comparison: the outputs vary across classes and samples
    assert expected.std() > 1e-2
    diff = (expected - got).abs().max().item()
    print(f"max abs difference {diff:.1e} (outputs up to {expected.abs().max().item():.1f})")
    assert diff <= tol, f"max abs difference {diff:.2e} > {tol}"


def _normalize(model: mobilenets.MobileNet, x01: torch.Tensor) -> torch.Tensor:
    mean = torch.tensor(model.info.mean).view(1, -1, 1, 1)
    std = torch.tensor(model.info.std).view(1, -1, 1, 1)
    return (x01 - mean) / std


# ---- torchvision -------------------------------------------------------------------------------------------

TORCHVISION_CASES = [
    ("mobilenet_v2", 0.5, 64),
    ("mobilenet_v2", 1.4, 49),
    ("mobilenet_v3_large", 0.75, 64),
    ("mobilenet_v3_large", 1.0, 49),
    ("mobilenet_v3_small", 0.5, 49),
    ("mobilenet_v3_small", 1.0, 64),
]


@pytest.mark.parametrize("arch,width,res", TORCHVISION_CASES)
def test_torchvision_outputs_match(tmp_path, arch, width, res):
    source = _randomize_torch(getattr(torchvision.models, arch)(width_mult=width), res)
    src = tmp_path / f"{arch}.pth"
    torch.save(source.state_dict(), src)
    convert_file("torchvision", src, tmp_path / "out.safetensors", arch, width)
    model = mobilenets.load(tmp_path / "out.safetensors")
    x = torch.randn(2, 3, res, res)
    with torch.no_grad():
        _assert_same(source(x), model(x))
    assert model.info.extra["converted_from"] == {"library": "torchvision", "arch": arch, "file": src.name}
    assert model.info.mean == mobilenets.models.base.IMAGENET_MEAN


# ---- timm --------------------------------------------------------------------------------------------------

TIMM_CASES = [
    ("mobilenetv1_100", 64),
    ("mobilenetv1_125", 49),
    ("mobilenetv2_035", 49),
    ("mobilenetv2_140", 64),
    ("mobilenetv3_large_075", 49),
    ("mobilenetv3_large_100", 64),
    ("mobilenetv3_small_050", 64),
    ("mobilenetv3_small_100", 49),
    ("tf_mobilenetv3_large_075", 65),
    ("tf_mobilenetv3_small_100", 64),
    ("tf_mobilenetv3_large_minimal_100", 64),
    ("tf_mobilenetv3_small_minimal_100", 49),
    ("mobilenetv4_conv_small", 64),
    ("mobilenetv4_conv_small_050", 49),
    ("mobilenetv4_conv_medium", 49),
    ("mobilenetv4_conv_large", 64),
    ("mobilenetv4_hybrid_medium", 64),
    ("mobilenetv4_hybrid_medium_075", 49),
    ("mobilenetv4_hybrid_large", 64),
]


@pytest.mark.parametrize("name,res", TIMM_CASES)
def test_timm_outputs_match(tmp_path, name, res):
    source = _randomize_torch(timm.create_model(name), res)
    src = tmp_path / f"{name}.pth"
    torch.save(source.state_dict(), src)
    convert_file("timm", src, tmp_path / "out.safetensors", name)
    model = mobilenets.load(tmp_path / "out.safetensors")
    x = torch.randn(2, 3, res, res)
    with torch.no_grad():
        expected = source(x)
        if "hybrid" in name:
            # attention over random features amplifies float32 rounding: timm's own fused and unfused attention
            # kernels differ by ~1e-5 of the outputs' size here, so the bound is relative (a wrong mapping is
            # off by the outputs' size); block by block the two implementations agree to ~1e-7 relative
            _assert_same(expected, model(x), 1e-4 * expected.abs().max().item())
        else:
            _assert_same(expected, model(x))
    cfg = timm.models.get_pretrained_cfg(name)
    assert model.info.mean == pytest.approx(cfg.mean) and model.info.std == pytest.approx(cfg.std)
    assert model.info.extra["converted_from"]["arch"] == name
    if name.startswith("tf_"):
        assert model.options.padding == "same" and model.options.bn_eps == 1e-3


@pytest.mark.parametrize(
    "timm_name, ours, width",
    [
        ("mobilenetv3_small_075", "mobilenet_v3_small", 0.75),
        ("tf_mobilenetv3_small_075", "mobilenet_v3_small", None),
        ("mobilenetv4_conv_medium", "mobilenet_v4_conv_medium", 1.0),
    ],
)
def test_timm_safetensors_and_our_names(tmp_path, timm_name, ours, width):
    """timm weights as hub users have them (timm's save_for_hf: model.safetensors, keys sorted so dw_mid before
    dw_start, and config.json naming the model), --arch given as our name: the config says which V3 it is."""
    from timm.models import save_for_hf

    source = _randomize_torch(timm.create_model(timm_name), 48)
    save_for_hf(source, tmp_path, safe_serialization=True)
    model = convert_state_dict("timm", tmp_path / "model.safetensors", ours, width)
    assert model.info.extra["converted_from"]["arch"] == timm_name
    x = torch.randn(2, 3, 48, 48)
    with torch.no_grad():
        _assert_same(source(x), model(x))


@pytest.mark.parametrize("ours, width", [("mobilenet_v3_large", None), ("mobilenet_v3_small", 0.75)])
def test_timm_v3_by_our_name_is_ambiguous(tmp_path, ours, width):
    """timm's PyTorch-trained V3 and its TensorFlow port have the same tensors: weights alone cannot say which
    one an architecture name means, and the wrong one gives other outputs."""
    digits = f"{round((width or 1.0) * 100):03d}"
    size = ours.rsplit("_", 1)[1]
    pytorch, tf = f"mobilenetv3_{size}_{digits}", f"tf_mobilenetv3_{size}_{digits}"
    source = _randomize_torch(timm.create_model(tf), 48)
    torch.save(source.state_dict(), tmp_path / "w.pth")
    names = f"ambiguous for timm: {pytorch} .* and {tf} .*--arch {pytorch} or --arch {tf}"
    with pytest.raises(ValueError, match=names):
        convert_state_dict("timm", tmp_path / "w.pth", ours, width)
    with pytest.raises(ValueError, match="ambiguous"):
        convert_state_dict("timm", source.state_dict(), ours, width)
    # what the refusal prevents: the other timm model on the same weights computes something else
    wrong = convert_state_dict("timm", tmp_path / "w.pth", pytorch)
    x = torch.randn(2, 3, 48, 48)
    with torch.no_grad():
        expected, diff = source(x), (wrong(x) - source(x)).abs().max().item()
        print(f"{pytorch} on {tf} weights: max abs difference {diff:.1f} (outputs up to {expected.abs().max():.1f})")
        assert diff > 0.1 * expected.abs().max()
        _assert_same(source(x), convert_state_dict("timm", tmp_path / "w.pth", tf)(x))


def test_timm_config_json_contradicting_the_name_is_refused(tmp_path):
    """timm's name for the weights (config.json beside model.safetensors) against a different --arch."""
    from timm.models import save_for_hf

    save_for_hf(timm.create_model("mobilenetv3_large_100"), tmp_path, safe_serialization="both")
    config = tmp_path / "config.json"
    for weights in ("model.safetensors", "pytorch_model.bin"):
        with pytest.raises(ConversionError) as exc_info:
            convert_state_dict("timm", tmp_path / weights, "tf_mobilenetv3_large_100")
        message = _one_line_error(exc_info, config)
        assert "says the weights are timm's mobilenetv3_large_100, not tf_mobilenetv3_large_100" in message
    with pytest.raises(ConversionError, match="not mobilenet_v3_large width_mult=0.75"):
        convert_state_dict("timm", tmp_path / "model.safetensors", "mobilenet_v3_large", 0.75)
    with pytest.raises(ConversionError, match="not mobilenet_v3_small"):
        convert_state_dict("timm", tmp_path / "model.safetensors", "mobilenet_v3_small")
    config.write_text('{"architecture": "mobilenetv3_rw"}')
    with pytest.raises(ConversionError, match="names timm's 'mobilenetv3_rw'.*different head"):
        convert_state_dict("timm", tmp_path / "model.safetensors", "mobilenet_v3_large")
    config.write_text("{not json")
    with pytest.raises(ConversionError, match="unreadable config.json beside model.safetensors"):
        convert_state_dict("timm", tmp_path / "model.safetensors", "mobilenet_v3_large")


def test_timm_names_with_two_ports_are_the_ambiguous_ones():
    """Our names that timm registers both as a PyTorch model and as a tf_ port are exactly those refused."""
    from mobilenets.convert import timm as timm_source

    ports: dict[str, set[bool]] = {}
    for name in timm.list_models("*mobilenetv[1-4]*"):
        try:
            spec = resolve("timm", name)
        except ValueError:
            continue  # variants we refuse (depth multipliers, anti-aliased V4s ...)
        ports.setdefault(spec.arch, set()).add(name.startswith("tf_"))
    assert set(ports) == set(mobilenets.list_models())
    assert sorted(arch for arch, tf in ports.items() if tf == {True, False}) == list(timm_source.BOTH_PORTS)


def test_torchvision_key_order_does_not_matter():
    """State dicts rebuilt in another order (e.g. from safetensors, which sorts keys) convert the same."""
    import random

    source = _randomize_torch(torchvision.models.mobilenet_v3_large(width_mult=0.5), 48)
    items = list(source.state_dict().items())
    random.Random(0).shuffle(items)
    model = convert_state_dict("torchvision", dict(items), "mobilenet_v3_large", 0.5)
    x = torch.randn(2, 3, 48, 48)
    with torch.no_grad():
        _assert_same(source(x), model(x))


def test_timm_v1_at_another_width():
    """timm rounds V1 widths to multiples of 8 (16 stem channels at 0.35 where the paper's rule gives 11)."""
    from timm.models.efficientnet import _gen_mobilenet_v1

    source = _randomize_torch(_gen_mobilenet_v1("mobilenetv1_100", 0.35), 64)
    model = convert_state_dict("timm", source.state_dict(), "mobilenetv1_035")
    assert model.stem.out_channels == 16 and model.options.channel_rounding == "divisible"
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        _assert_same(source(x), model(x))


def test_timm_without_classifier_gives_pooled_features():
    source = _randomize_torch(timm.create_model("mobilenetv2_050", num_classes=0), 48)
    model = convert_state_dict("timm", source.state_dict(), "mobilenetv2_050")
    assert model.num_classes == 0
    x = torch.randn(2, 3, 48, 48)
    with torch.no_grad():
        _assert_same(source(x), model(x))


def test_background_class_is_recorded(tmp_path):
    source = _randomize_torch(torchvision.models.mobilenet_v2(width_mult=0.35, num_classes=1001), 48)
    src = tmp_path / "slim.pth"
    torch.save(source.state_dict(), src)
    convert_file("torchvision", src, tmp_path / "out.safetensors", "mobilenet_v2", 0.35)
    meta = mobilenets.read_metadata(tmp_path / "out.safetensors")
    assert meta["options"]["num_classes"] == 1001
    assert meta["background_class"] is True


def test_input_channels_are_read_from_the_weights():
    source = _randomize_torch(torchvision.models.mobilenet_v3_small(), 48)
    state = source.state_dict()
    # a 1-channel variant: the stem conv takes one input plane
    state["features.0.0.weight"] = state["features.0.0.weight"].sum(1, keepdim=True)
    model = convert_state_dict("torchvision", state, "mobilenet_v3_small")
    assert model.options.in_chans == 1
    # the summed filters on one plane compute what the original does on that plane repeated three times
    gray = torch.randn(2, 1, 48, 48)
    with torch.no_grad():
        _assert_same(source(gray.expand(-1, 3, -1, -1)), model.eval()(gray))


# ---- Keras 3 (torch backend) -------------------------------------------------------------------------------


def _randomize_keras(keras, model, res: int, input_scale: float):
    import numpy as np

    rng = np.random.default_rng(res)
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            gamma, beta, mean, var = layer.get_weights()
            layer.set_weights([rng.uniform(0.5, 1.5, gamma.shape), rng.normal(0, 0.2, beta.shape), mean, var])
            layer.momentum = 0.0  # the next training-mode call stores that batch's statistics
    model(rng.uniform(0, input_scale, (8, res, res, 3)).astype("float32"), training=True)
    # logits of unit scale on fresh inputs, so that the absolute tolerance means the same for every model
    last = [layer for layer in model.layers if hasattr(layer, "kernel")][-1]
    fresh = rng.uniform(0, input_scale, (4, res, res, 3)).astype("float32")
    scale = float(np.std(keras.ops.convert_to_numpy(model(fresh, training=False))))
    last.set_weights([w / scale for w in last.get_weights()])


def _save_keras2_h5(keras, model, path) -> None:
    """The legacy layout of the ImageNet files Keras downloads: ``layer_names``, ``weight_names`` ("x/kernel:0")."""
    import h5py

    with h5py.File(path, "w") as f:
        f.attrs["layer_names"] = [layer.name.encode() for layer in model.layers]
        f.attrs["backend"] = b"tensorflow"
        f.attrs["keras_version"] = b"2.2.4"
        for layer in sorted(model.layers, key=lambda layer: layer.name):
            group = f.create_group(layer.name)
            names = []
            for var in layer.weights:
                role = var.name
                if isinstance(layer, keras.layers.DepthwiseConv2D) and role == "kernel":
                    role = "depthwise_kernel"
                name = f"{layer.name}/{role}:0"
                group.create_dataset(name, data=keras.ops.convert_to_numpy(var))
                names.append(name.encode())
            group.attrs["weight_names"] = names


# (Keras application, extra kwargs, --arch, alpha, resolution, how it is saved)
KERAS_CASES = [
    # Keras' MobileNet pads stride-2 depthwise convs by (0, 1) whatever the size: TensorFlow "same" only
    # while every strided layer sees an even size, i.e. at multiples of 32 (docs/convert.md)
    ("MobileNet", {}, "MobileNet", 0.25, 64, "weights.h5"),
    ("MobileNet", {}, "mobilenet_v1", 0.5, 96, "keras2.h5"),
    ("MobileNetV2", {}, "MobileNetV2", 0.35, 64, "keras"),
    ("MobileNetV2", {}, "MobileNetV2", 0.56, 49, "weights.h5"),  # alpha where Keras truncates before rounding
    ("MobileNetV3Small", {}, "MobileNetV3Small", 0.75, 64, "keras"),
    ("MobileNetV3Small", {}, "mobilenet_v3_small", 1.0, 49, "weights.h5"),
    ("MobileNetV3Large", {}, "MobileNetV3Large", 0.5, 48, "h5"),
    ("MobileNetV3Large", {}, "MobileNetV3Large", 1.0, 64, "weights.h5"),
    ("MobileNetV3Small", {"minimalistic": True}, "mobilenet_v3_small_minimal", 1.0, 64, "keras2.h5"),
    ("MobileNetV3Large", {"minimalistic": True}, "mobilenet_v3_large_minimal", 0.75, 48, "weights.h5"),
]


@pytest.mark.parametrize("app,kwargs,arch,alpha,res,fmt", KERAS_CASES)
def test_keras_outputs_match(keras, tmp_path, app, kwargs, arch, alpha, res, fmt):
    import numpy as np

    source = getattr(keras.applications, app)(
        input_shape=(res, res, 3), alpha=alpha, weights=None, classifier_activation=None, **kwargs
    )
    v3 = app.startswith("MobileNetV3")
    # V3 rescales [0, 255] itself; MobileNet / V2 expect preprocess_input's [-1, 1]
    _randomize_keras(keras, source, res, 255.0 if v3 else 1.0)
    src = tmp_path / f"source.{fmt}"
    if fmt == "weights.h5":
        source.save_weights(src)
    elif fmt == "keras2.h5":
        _save_keras2_h5(keras, source, src)
    else:
        source.save(src)
    convert_file("keras", src, tmp_path / "out.safetensors", arch, alpha)
    model = mobilenets.load(tmp_path / "out.safetensors")

    x01 = np.random.default_rng(1).uniform(0, 1, (2, res, res, 3)).astype("float32")
    expected = keras.ops.convert_to_numpy(source(x01 * 255.0 if v3 else x01 * 2.0 - 1.0, training=False))
    with torch.no_grad():
        got = model(_normalize(model, torch.from_numpy(x01).permute(0, 3, 1, 2)))
    _assert_same(torch.from_numpy(np.asarray(expected)), got)
    assert model.info.mean == (0.5, 0.5, 0.5) and model.info.std == (0.5, 0.5, 0.5)
    assert model.info.extra["converted_from"]["library"] == "keras"


def test_keras_without_top_gives_pooled_features(keras, tmp_path):
    import numpy as np

    source = keras.applications.MobileNetV2(
        input_shape=(64, 64, 3), alpha=0.5, weights=None, include_top=False, pooling="avg"
    )
    _randomize_keras(keras, source, 64, 1.0)
    source.save_weights(tmp_path / "notop.weights.h5")
    model = convert_state_dict("keras", tmp_path / "notop.weights.h5", "MobileNetV2", 0.5)
    assert model.num_classes == 0
    x01 = np.random.default_rng(2).uniform(0, 1, (2, 64, 64, 3)).astype("float32")
    expected = keras.ops.convert_to_numpy(source(x01 * 2.0 - 1.0, training=False))
    with torch.no_grad():
        got = model(_normalize(model, torch.from_numpy(x01).permute(0, 3, 1, 2)))
    _assert_same(torch.from_numpy(np.asarray(expected)), got)


def test_keras_transfer_learning_model(keras, tmp_path):
    """The usual fine-tuning setup, a MobileNet without top inside a Sequential with a Dense head, converts
    to our model with that many classes (Keras 3 weights and legacy .h5, where the base is one nested group)."""
    import numpy as np

    base = keras.applications.MobileNetV2(
        input_shape=(64, 64, 3), alpha=0.35, weights=None, include_top=False, pooling="avg"
    )
    source = keras.Sequential([keras.Input((64, 64, 3)), base, keras.layers.Dense(10)])
    _randomize_keras(keras, source, 64, 1.0)
    x01 = np.random.default_rng(3).uniform(0, 1, (2, 64, 64, 3)).astype("float32")
    expected = torch.from_numpy(np.asarray(keras.ops.convert_to_numpy(source(x01 * 2.0 - 1.0, training=False))))
    source.save_weights(tmp_path / "ft.weights.h5")
    source.save(tmp_path / "ft.h5")
    for path in (tmp_path / "ft.weights.h5", tmp_path / "ft.h5"):
        model = convert_state_dict("keras", path, "MobileNetV2", 0.35)
        assert model.num_classes == 10
        with torch.no_grad():
            _assert_same(expected, model(_normalize(model, torch.from_numpy(x01).permute(0, 3, 1, 2))))


# ---- names, options, CLI -----------------------------------------------------------------------------------


def test_resolve_reports_the_options_it_sets():
    spec = resolve("keras", "MobileNetV3Small", 0.5)
    assert spec.arch == "mobilenet_v3_small" and spec.width_mult == 0.5
    assert spec.options["stem_width"] == "fixed" and spec.options["padding"] == "same"
    spec = resolve("timm", "mobilenetv3_small_050")
    assert spec.width_mult == 0.5 and spec.options["stem_width"] == "fixed"
    assert resolve("timm", "mobilenetv3_small_075").options.get("stem_width") is None
    assert resolve("timm", "mobilenet_v3_large_minimal").source_arch == "tf_mobilenetv3_large_minimal_100"
    spec = resolve("timm", "mobilenet_v4_conv_small", 0.35)
    assert spec.source_arch == "mobilenetv4_conv_small_035" and spec.arch == "mobilenet_v4_conv_small"
    assert spec.options == {"stem_width": "fixed", "head_width": "fixed"} and spec.mean == (0.5, 0.5, 0.5)
    assert resolve("timm", "mobilenetv4_conv_large").source_arch == "mobilenetv4_conv_large"


@pytest.mark.parametrize(
    "source,arch,width,match",
    [
        ("caffe", "mobilenet_v2", None, "unknown source library 'caffe'"),
        ("timm", "mobilenetv2_110d", None, "depth multiplier"),
        ("timm", "mobilenetv4_hybrid_small", None, "the V4 hybrids are medium and large"),
        ("timm", "mobilenetv4_conv_aa_large", None, "anti-aliased"),
        ("timm", "mobilenetv4_conv_tiny", None, "not a supported timm MobileNet name"),
        ("timm", "mobilenetv4_conv_small_050", 1.0, "has width 0.5, but width_mult=1"),
        ("timm", "mobilenetv3_large_075", 1.0, "has width 0.75, but width_mult=1"),
        ("torchvision", "mobilenet_v1", None, "torchvision has no MobileNet called 'mobilenet_v1'"),
        ("keras", "EfficientNetB0", None, "not a Keras MobileNet"),
        ("keras", "MobileNet", 0.0, r"width_mult must be in \(0, 4\]"),
    ],
)
def test_bad_names_are_refused(source, arch, width, match):
    with pytest.raises(ValueError, match=match):
        resolve(source, arch, width)


def test_width_policy_options_are_validated():
    with pytest.raises(ValueError, match="stem_width must be one of 'scaled', 'fixed'"):
        mobilenets.create_model("mobilenet_v2", stem_width="tiny")
    with pytest.raises(ValueError, match="expand_width=.scaled. does not apply to mobilenet_v2"):
        mobilenets.create_model("mobilenet_v2", expand_width="scaled")
    with pytest.raises(ValueError, match="head_width=.fixed. does not apply to mobilenet_v1"):
        mobilenets.create_model("mobilenet_v1", head_width="fixed")
    with pytest.raises(ValueError, match="channel_rounding must be one of 'default', 'divisible'"):
        mobilenets.create_model("mobilenet_v2", channel_rounding=True)
    with pytest.raises(ValueError, match="channel_rounding='truncate_divisible' does not apply to mobilenet_v1"):
        mobilenets.create_model("mobilenet_v1", channel_rounding="truncate_divisible")
    # the options change the network where the libraries differ, e.g. Keras V3 keeps a 16-channel stem
    assert mobilenets.create_model("mobilenet_v3_small", width_mult=0.5).stem.out_channels == 8
    assert mobilenets.create_model("mobilenet_v3_small", width_mult=0.5, stem_width="fixed").stem.out_channels == 16


def test_cli_convert(tmp_path, capsys):
    source = _randomize_torch(timm.create_model("tf_mobilenetv3_small_minimal_100"), 48)
    torch.save(source.state_dict(), tmp_path / "w.pth")
    dst = tmp_path / "out.safetensors"
    name = "tf_mobilenetv3_small_minimal_100"
    code = cli_main(["convert", "--from", "timm", "--arch", name, str(tmp_path / "w.pth"), str(dst)])
    assert code == 0
    out = capsys.readouterr().out
    assert "mobilenet_v3_small_minimal" in out and "padding=same" in out and "bn_eps=0.001" in out
    meta = mobilenets.read_metadata(dst)
    assert meta["converted_from"] == {"library": "timm", "arch": "tf_mobilenetv3_small_minimal_100", "file": "w.pth"}
    x = torch.randn(1, 3, 48, 48)
    with torch.no_grad():
        _assert_same(source(x), mobilenets.load(dst)(x))


# ---- bad input ---------------------------------------------------------------------------------------------


def _one_line_error(exc_info, path) -> str:
    message = str(exc_info.value)
    assert "\n" not in message
    assert str(path) in message
    return message


@pytest.fixture(scope="module")
def tv_v2_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("tv") / "mobilenet_v2_050.pth"
    torch.save(torchvision.models.mobilenet_v2(width_mult=0.5).state_dict(), path)
    return path


@pytest.mark.parametrize(
    "suffix,source,arch",
    [(".pth", "torchvision", "mobilenet_v2"), (".h5", "keras", "MobileNetV2"), (".keras", "keras", "MobileNetV2")],
)
def test_not_a_checkpoint(tmp_path, suffix, source, arch):
    path = tmp_path / f"notes{suffix}"
    path.write_text("these are my holiday notes, not weights\n" * 20)
    with pytest.raises(ValueError) as exc_info:
        convert_state_dict(source, path, arch)
    message = _one_line_error(exc_info, path)
    assert "cannot be read" in message or "not a readable" in message


def test_missing_file(tmp_path):
    with pytest.raises(ValueError, match="no such file"):
        convert_state_dict("keras", tmp_path / "absent.weights.h5", "MobileNetV2")


def test_truncated_pytorch_file(tmp_path, tv_v2_file):
    path = tmp_path / "cut.pth"
    path.write_bytes(tv_v2_file.read_bytes()[: tv_v2_file.stat().st_size // 2])
    with pytest.raises(CheckpointError) as exc_info:
        convert_state_dict("torchvision", path, "mobilenet_v2", 0.5)
    assert "cannot be read as a weights-only PyTorch file" in _one_line_error(exc_info, path)


def test_truncated_keras_files(keras, tmp_path):
    source = keras.applications.MobileNetV2(input_shape=(32, 32, 3), alpha=0.35, weights=None)
    for name in ("m.weights.h5", "m.keras"):
        full = tmp_path / name
        if name.endswith(".keras"):
            source.save(full)
        else:
            source.save_weights(full)
        cut = tmp_path / f"cut.{name}"
        cut.write_bytes(full.read_bytes()[: full.stat().st_size // 2])
        with pytest.raises(ConversionError) as exc_info:
            convert_state_dict("keras", cut, "MobileNetV2", 0.35)
        assert "damaged" in _one_line_error(exc_info, cut) or "not a readable" in str(exc_info.value)


def test_other_width(tv_v2_file):
    with pytest.raises(ConversionError) as exc_info:
        convert_state_dict("torchvision", tv_v2_file, "mobilenet_v2", 1.0)
    message = _one_line_error(exc_info, tv_v2_file)
    assert "does not fit" in message and "mobilenet_v2 width_mult=1" in message


def test_other_architecture(tv_v2_file):
    with pytest.raises(ConversionError) as exc_info:
        convert_state_dict("torchvision", tv_v2_file, "mobilenet_v3_small", 0.5)
    assert "mobilenet_v3_small width_mult=0.5" in _one_line_error(exc_info, tv_v2_file)


def test_keras_model_name_mismatch(keras, tmp_path):
    path = tmp_path / "v1.keras"
    keras.applications.MobileNet(input_shape=(32, 32, 3), alpha=0.25, weights=None).save(path)
    with pytest.raises(ConversionError, match="holds Keras model 'mobilenet_0.25_32', not MobileNetV2"):
        convert_state_dict("keras", path, "MobileNetV2", 0.25)
    with pytest.raises(ConversionError, match=r"\(alpha 0.25\), not width_mult=0.5"):
        convert_state_dict("keras", path, "MobileNet", 0.5)
    # without a width, the alpha in the model name is used
    assert convert_state_dict("keras", path, "MobileNet").options.width_mult == 0.25


def test_pytorch_file_given_as_keras(tv_v2_file):
    with pytest.raises(ConversionError, match="looks like torchvision weights .*; use --from torchvision"):
        convert_state_dict("keras", tv_v2_file, "MobileNetV2", 0.5)


def test_file_of_another_source_names_the_source(keras, tmp_path, tv_v2_file):
    from safetensors.torch import save_file

    h5 = tmp_path / "mobilenet_v2.h5"
    keras.applications.MobileNetV2(input_shape=(32, 32, 3), alpha=0.35, weights=None).save(h5)
    for source in ("torchvision", "timm"):
        with pytest.raises(ConversionError) as exc_info:
            convert_state_dict(source, h5, "mobilenet_v2", 0.35)
        assert "looks like a Keras file" in _one_line_error(exc_info, h5) and "--from keras" in str(exc_info.value)
    with pytest.raises(ConversionError, match="looks like torchvision weights .*'features.0.0.weight'.*--from torch"):
        convert_state_dict("timm", tv_v2_file, "mobilenetv2_050")
    timm_file = tmp_path / "model.safetensors"
    save_file(timm.create_model("mobilenetv2_050").state_dict(), str(timm_file))
    for source, arch in (("torchvision", "mobilenet_v2"), ("keras", "MobileNetV2")):
        with pytest.raises(ConversionError, match="looks like timm weights .*; use --from timm"):
            convert_state_dict(source, timm_file, arch, 0.5)
    with pytest.raises(ConversionError, match="<state dict>: looks like torchvision weights"):
        convert_state_dict("timm", torch.load(tv_v2_file, weights_only=True), "mobilenetv2_050")


def test_mobilenets_files_are_not_converted(tmp_path):
    from mobilenets.train.trainer import STATE_FORMAT

    model = mobilenets.create_model("mobilenet_v2", width_mult=0.5, num_classes=3)
    checkpoint = mobilenets.save(model, tmp_path / "best.safetensors")
    with pytest.raises(ConversionError, match="a mobilenets checkpoint already; nothing to convert"):
        convert_state_dict("timm", checkpoint, "mobilenetv2_050")
    bare = tmp_path / "weights.pth"
    torch.save(model.state_dict(), bare)
    with pytest.raises(ConversionError, match=r"mobilenets tensors .*create_model\(ARCH, pretrained="):
        convert_state_dict("torchvision", bare, "mobilenet_v2", 0.5)
    state = tmp_path / "last.pt"
    torch.save({"format": STATE_FORMAT, "model": model.state_dict(), "ema": None, "optimizer": {}}, state)
    with pytest.raises(ConversionError, match="a mobilenets training state .*mobilenets evaluate"):
        convert_state_dict("torchvision", state, "mobilenet_v2", 0.5)


def test_v3_without_head_is_refused():
    state = timm.create_model("mobilenetv3_small_100").state_dict()
    for key in ("conv_head.weight", "conv_head.bias", "classifier.weight", "classifier.bias"):
        del state[key]
    with pytest.raises(ConversionError, match="lacks the classifier \\*and\\* the pooled 1024-wide head"):
        convert_state_dict("timm", state, "mobilenetv3_small_100")


def test_output_must_be_safetensors(tmp_path, tv_v2_file):
    with pytest.raises(ValueError, match="must end in .safetensors"):
        convert_file("torchvision", tv_v2_file, tmp_path / "out.pth", "mobilenet_v2", 0.5)


def test_cli_error_is_one_line(tmp_path, tv_v2_file, capsys):
    dst = tmp_path / "o.safetensors"
    code = cli_main(["convert", "--from", "torchvision", "--arch", "mobilenet_v2", str(tv_v2_file), str(dst)])
    assert code == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and str(tv_v2_file) in err and "does not fit" in err
    assert not dst.exists()


# ---- backbones for dense prediction (issue #20) ----------------------------------------------------------------

TIMM_FEATURE_CASES = [
    # timm's V2 features end at its last block (320 channels), ours at the final 1x1 conv: indices 0-3 agree
    ("mobilenetv2_100", (0, 1, 2, 3), "bottleneck", 16),
    ("mobilenetv2_050", (1, 3), "expansion", 16),
    ("mobilenetv3_large_100", (0, 1, 2, 3, 4), "bottleneck", 16),
    ("mobilenetv3_large_100", (1, 2, 3, 4), "expansion", 16),
    ("tf_mobilenetv3_small_075", (0, 2, 3, 4), "bottleneck", 16),
    ("tf_mobilenetv3_small_075", (2, 3, 4), "expansion", 8),
    ("mobilenetv4_conv_small", (0, 1, 2, 3, 4), "bottleneck", 16),
    ("mobilenetv4_conv_medium", (1, 2, 3, 4), "expansion", 16),
    ("mobilenetv4_hybrid_medium", (1, 3, 4), "bottleneck", 16),
    ("mobilenetv4_hybrid_medium", (2, 3, 4), "bottleneck", 8),
]


@pytest.mark.parametrize("name,out_indices,location,output_stride", TIMM_FEATURE_CASES)
def test_timm_features_only_maps_match(tmp_path, name, out_indices, location, output_stride):
    """A checkpoint converted from timm, loaded with features_only=True at output stride 16 (or 8), gives the
    maps of timm's own features_only model with the same weights."""
    source = _randomize_torch(timm.create_model(name), 64)
    src = tmp_path / f"{name}.pth"
    torch.save(source.state_dict(), src)
    convert_file("timm", src, tmp_path / "out.safetensors", name)
    theirs = timm.create_model(name, features_only=True, out_indices=out_indices, output_stride=output_stride,
                               feature_location=location)
    missing, _ = theirs.load_state_dict(source.state_dict(), strict=False)
    assert not missing
    theirs.eval()
    ours = mobilenets.load(tmp_path / "out.safetensors", features_only=True, out_indices=out_indices,
                           output_stride=output_stride, feature_location=location)
    assert ours.feature_info.channels() == theirs.feature_info.channels()
    assert ours.feature_info.reduction() == theirs.feature_info.reduction()
    x = torch.randn(2, 3, 96, 96, generator=torch.Generator().manual_seed(0))
    # random weights give maps in the hundreds (thousands through attention), where float32 rounding of two
    # different kernel orders reaches ~1e-3 (V4-Conv-M's expansion maps: 6.7e-4 on one run); in float64 the
    # two agree to ~1e-11, which a wrong mapping cannot
    theirs, ours, x = theirs.double(), ours.double(), x.double()
    with torch.no_grad():
        expected, got = theirs(x), ours(x)
    assert len(expected) == len(got) == len(out_indices)
    for a, b in zip(expected, got):
        _assert_same(a, b)


def test_torchvision_dilated_v3_large_backbone_matches(tmp_path):
    """torchvision's segmentation backbone, mobilenet_v3_large(dilated=True).features (output stride 16), is
    the converted model at output_stride=16."""
    from torchvision.models.mobilenetv3 import _mobilenet_v3_conf
    from torchvision.models.mobilenetv3 import MobileNetV3 as TVMobileNetV3

    settings, last_channel = _mobilenet_v3_conf("mobilenet_v3_large", dilated=True)
    source = _randomize_torch(TVMobileNetV3(settings, last_channel), 64)
    src = tmp_path / "tv.pth"
    torch.save(source.state_dict(), src)
    convert_file("torchvision", src, tmp_path / "out.safetensors", "mobilenet_v3_large")
    ours = mobilenets.load(tmp_path / "out.safetensors", features_only=True, out_indices=(3, 4), output_stride=16)
    x = torch.randn(2, 3, 96, 96)
    with torch.no_grad():
        c4 = source.features[:13](x)  # the end of the 14x14 stage (LR-ASPP's low-level input)
        c5 = source.features[13:](c4)
        got = ours(x)
    assert c5.shape[-1] == 6  # 96 / 16
    _assert_same(c4, got[0])
    _assert_same(c5, got[1])
    # and its logits, through the dilated network, match torchvision's
    whole = mobilenets.load(tmp_path / "out.safetensors", output_stride=16)
    with torch.no_grad():
        _assert_same(source(x), whole(x))
