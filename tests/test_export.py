"""Export to ONNX/TorchScript: graphs hold the ops we promise, files reproduce PyTorch, errors are clear."""

import sys
from typing import Optional

import numpy as np
import pytest
import torch
from torch import nn

import mobilenets
from mobilenets.cli import main
from mobilenets.deploy import (
    ExportVerificationError,
    Predictor,
    count_batchnorm,
    expand_channel_gates,
    export_onnx,
    export_torchscript,
    fold_batchnorm,
    make_predictor,
    onnx_op_types,
    read_onnx_metadata,
    verify_onnx,
    verify_torchscript,
)

pytest.importorskip("onnxruntime")
SIZE = (3, 32, 32)


pytestmark = pytest.mark.usefixtures("one_thread")


def trained_like(
    name: str = "mobilenet_v3_small", inputs: Optional[list] = None, var_margin: float = 1.15, **options
) -> nn.Module:
    """A tiny model with non-trivial batch-norm statistics and affine terms and input-dependent logits of
    order 1, so that folding or export mistakes show up in the outputs (at init, BN is mean 0 / var 1 and the
    logits are ~1e-9 and nearly the same for every input).

    The running variances are set ``var_margin`` times the measured ones (15% above): a deep random ReLU
    network with exactly re-estimated batch norm is chaotic (float rounding grows layer by layer to ~1e-4 at
    the logits), a slightly contractive one is not, which is closer to how a trained network behaves.
    ``inputs``: the batches the statistics come from (default: two batches of random images). ``options``
    go to ``create_model`` (default width 0.35, 10 classes).
    """
    model = mobilenets.create_model(name, **{"width_mult": 0.35, "num_classes": 10, **options})
    gen = torch.Generator().manual_seed(0)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.weight.data.copy_(torch.rand(m.num_features, generator=gen) + 0.5)
            m.bias.data.copy_(torch.randn(m.num_features, generator=gen) * 0.1)
            m.reset_running_stats()
            m.momentum = None  # cumulative average: running stats become those of the batches below
        elif isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, 0, 2 / m.in_features**0.5, generator=gen)
        elif isinstance(m, mobilenets.LayerScale):
            # V4 hybrids: of order 1 as when trained; the 1e-5 init shrinks each stride-2 block's output to
            # where batch norm's eps dominates, and float rounding then decides the logits' last digits
            m.gamma.data.copy_(torch.rand(m.gamma.numel(), generator=gen) + 0.5)
    model.train()
    if inputs is None:
        inputs = [torch.randn(16, *SIZE, generator=gen) for _ in range(2)]
    with torch.no_grad():
        for batch in inputs:
            model(batch)
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_var.mul_(var_margin)
    return model.eval()


@pytest.fixture(scope="module")
def v3():
    return trained_like()


def test_fold_batchnorm_same_function_no_bn(v3):
    x = torch.randn(4, *SIZE)
    folded = fold_batchnorm(v3)
    assert count_batchnorm(folded) == 0 and count_batchnorm(v3) > 0  # original untouched
    with torch.no_grad():
        expected, got = v3(x), folded(x)
    # logits large enough, and different enough between inputs, for the comparison to mean something
    assert expected.abs().max() > 0.3 and expected.std(0).mean() > 0.05
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4)
    # every conv that had a norm now carries the folded bias
    assert all(m.conv.bias is not None for m in folded.modules() if isinstance(m, mobilenets.ConvNormAct))


def test_v4_folds_exports_and_runs_on_onnxruntime(tmp_path):
    """V4: UIB blocks, the fused IB and the head's batch norm on the pooled map all fold into convs."""
    model = trained_like("mobilenet_v4_conv_medium")
    x = torch.randn(4, *SIZE)
    folded = fold_batchnorm(model)
    assert count_batchnorm(folded) == 0 and folded.head_fc.conv.bias is not None
    with torch.no_grad():
        expected = model(x)
        torch.testing.assert_close(folded(x), expected, rtol=1e-4, atol=1e-4)
    assert expected.abs().max() > 0.3 and expected.std(0).mean() > 0.05
    path = export_onnx(model, tmp_path / "v4.onnx", SIZE, opset=17, dynamic_batch=True)
    ops = onnx_op_types(path)
    assert "BatchNormalization" not in ops and ops["Conv"] == sum(isinstance(m, nn.Conv2d) for m in model.modules())
    predict = make_predictor(model, "onnxruntime", threads=1, input_size=SIZE, opset=17)
    torch.testing.assert_close(predict(x), expected, rtol=1e-4, atol=1e-4)


def test_v4_hybrid_exports_and_runs_on_onnxruntime(tmp_path):
    """Mobile MQA exports (matrix products and softmax) and runs on ONNX Runtime. Its batch norm before the
    attention has no conv of its own to fold into, so it stays: one BatchNormalization per attention block."""
    model = trained_like("mobilenet_v4_hybrid_medium", width_mult=0.5)
    x = torch.randn(4, *SIZE)
    with torch.no_grad():
        expected = model(x)
        torch.testing.assert_close(fold_batchnorm(model)(x), expected, rtol=1e-4, atol=1e-4)
    assert expected.abs().max() > 0.3 and expected.std(0).mean() > 0.05
    path = export_onnx(model, tmp_path / "hybrid.onnx", SIZE, opset=17, dynamic_batch=True)
    ops = onnx_op_types(path)
    attention = sum(isinstance(m, mobilenets.MobileMultiQueryAttention) for m in model.modules())
    assert attention == 8 and ops["BatchNormalization"] == attention and ops["Softmax"] == attention
    predict = make_predictor(model, "onnxruntime", threads=1, input_size=SIZE, opset=17)
    torch.testing.assert_close(predict(x), expected, rtol=1e-4, atol=1e-4)


def test_fold_keeps_groupnorm():
    model = mobilenets.create_model("mobilenet_v2", width_mult=0.35, num_classes=10, norm_layer="groupnorm").eval()
    folded = fold_batchnorm(model)
    assert sum(isinstance(m, nn.GroupNorm) for m in folded.modules()) > 0
    x = torch.randn(2, *SIZE)
    with torch.no_grad():
        torch.testing.assert_close(folded(x), model(x))


@pytest.mark.parametrize("opset", [13, 18])
def test_onnx_ops_and_match(v3, tmp_path, opset):
    path = export_onnx(v3, tmp_path / "m.onnx", SIZE, opset=opset, dynamic_batch=True)
    ops = onnx_op_types(path)
    assert "BatchNormalization" not in ops
    assert ops["Conv"] == sum(isinstance(m, nn.Conv2d) for m in v3.modules())
    if opset >= 14:
        # one native node per h-swish and per SE gate
        assert ops["HardSwish"] == sum(isinstance(m, nn.Hardswish) for m in v3.modules())
        assert ops["HardSigmoid"] == sum(isinstance(m, nn.Hardsigmoid) for m in v3.modules())
    else:
        # HardSwish is not an ONNX op before opset 14: x * HardSigmoid(x)
        assert "HardSwish" not in ops
        assert ops["HardSigmoid"] == sum(isinstance(m, (nn.Hardswish, nn.Hardsigmoid)) for m in v3.modules())
    # every mean over H and W (each SE squeeze, the head's pooling) is a GlobalAveragePool, none a ReduceMean
    from mobilenets.layers import SqueezeExcite

    assert "ReduceMean" not in ops
    assert ops["GlobalAveragePool"] == sum(isinstance(m, SqueezeExcite) for m in v3.modules()) + 1
    result = verify_onnx(v3, path, SIZE)
    assert result.batch_sizes == (1, 3) and result.max_abs_diff <= 1e-4 and result.top1_agreement == 1.0
    meta = read_onnx_metadata(path)
    assert meta["arch"] == "mobilenet_v3_small" and meta["input_size"] == "[3, 32, 32]"


def test_onnx_optimize_off_keeps_the_exporters_means(v3, tmp_path):
    path = export_onnx(v3, tmp_path / "m.onnx", SIZE, optimize=False)
    ops = onnx_op_types(path)
    assert "GlobalAveragePool" not in ops and ops["ReduceMean"] >= 2
    verify_onnx(v3, path, SIZE)


def _gated_spatial_ses(model: nn.Module, size) -> int:
    """How many squeeze-excite blocks see a feature map larger than 1x1 at ``size``."""
    from mobilenets.layers import SqueezeExcite

    seen = []
    hooks = [m.register_forward_hook(lambda m, args, out: seen.append(args[0].shape[2] * args[0].shape[3] > 1))
             for m in model.modules() if isinstance(m, SqueezeExcite)]
    with torch.no_grad():
        model(torch.zeros(1, *size))
    for h in hooks:
        h.remove()
    return sum(seen)


def _muls_fed_by_reorders(path, tmp_path) -> tuple[int, int]:
    """(Muls in the graph ONNX Runtime's CPU provider runs, those of them fed by a ReorderOutput: out of its
    blocked layout)."""
    import onnx

    from mobilenets.deploy.runtime import onnxruntime_session

    optimized = tmp_path / f"{path.stem}.ort.onnx"
    onnxruntime_session(path, threads=1, optimization="all", optimized_model=optimized)
    graph = onnx.load(str(optimized)).graph
    made_by = {out: n.op_type for n in graph.node for out in n.output}
    muls = [n for n in graph.node if n.op_type == "Mul"]
    return len(muls), sum(any(made_by.get(i) == "ReorderOutput" for i in n.input) for n in muls)


@pytest.mark.parametrize("opset", [13, 18])
def test_onnx_expand_gates_keeps_onnxruntime_layout(v3, tmp_path, opset):
    plain = export_onnx(v3, tmp_path / "plain.onnx", SIZE, opset=opset, dynamic_batch=True)
    gated = export_onnx(v3, tmp_path / "gated.onnx", SIZE, opset=opset, dynamic_batch=True, expand_gates=True)
    # one Resize per gate multiply on a map larger than 1x1 (6 of the 9 at 32 px); h-swish's own Mul (opset 13)
    # and the gates on 1x1 maps are left alone
    expected = _gated_spatial_ses(v3, SIZE)
    assert expected == 6 and onnx_op_types(gated).get("Resize") == expected
    assert "Resize" not in onnx_op_types(plain)
    # the same function, to float rounding
    assert verify_onnx(v3, gated, SIZE).max_abs_diff <= 1e-4
    # ONNX Runtime converts the plain file's gate multiplies out of its blocked layout, and not the gated file's
    plain_muls, plain_reordered = _muls_fed_by_reorders(plain, tmp_path)
    gated_muls, gated_reordered = _muls_fed_by_reorders(gated, tmp_path)
    assert plain_reordered >= expected and gated_reordered == 0 and gated_muls == plain_muls


def test_expand_channel_gates_only_rewrites_per_sample_gates(tmp_path):
    """A gate of the same batch (here a GlobalAveragePool of the input) is repeated; a constant (1, C, 1, 1)
    scale is not: its repeat would still broadcast over the batch."""
    import onnx
    from onnx import TensorProto, helper

    from mobilenets.deploy.runtime import onnxruntime_predictor

    x = helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 4, 3, 5])
    y = helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 4, 3, 5])
    scale = onnx.numpy_helper.from_array(np.arange(1, 5, dtype=np.float32).reshape(1, 4, 1, 1), "scale")
    nodes = [
        helper.make_node("GlobalAveragePool", ["input"], ["mean"]),
        helper.make_node("Sigmoid", ["mean"], ["gate"]),
        helper.make_node("Mul", ["gate", "input"], ["gated"], name="gate_mul"),
        helper.make_node("Mul", ["gated", "scale"], ["logits"], name="scale_mul"),
    ]
    model = helper.make_model(helper.make_graph(nodes, "g", [x], [y], [scale]),
                              opset_imports=[helper.make_opsetid("", 13)])
    before = tmp_path / "before.onnx"
    onnx.save(model, str(before))
    assert expand_channel_gates(model) == 1
    onnx.checker.check_model(model, full_check=True)
    assert [n.op_type for n in model.graph.node] == ["GlobalAveragePool", "Sigmoid", "Resize", "Mul", "Mul"]
    assert model.graph.node[3].input[0] == model.graph.node[2].output[0]  # the gate's side of the gate Mul
    after = tmp_path / "after.onnx"
    onnx.save(model, str(after))
    batch = torch.randn(2, 4, 3, 5)
    torch.testing.assert_close(onnxruntime_predictor(after, 1)(batch), onnxruntime_predictor(before, 1)(batch))
    assert expand_channel_gates(model) == 0  # nothing left to rewrite


def test_onnx_fixed_batch_and_mismatch_detected(v3, tmp_path):
    path = export_onnx(v3, tmp_path / "m.onnx", SIZE, opset=17, batch_size=2)
    assert verify_onnx(v3, path, SIZE).batch_sizes == (2,)
    other = trained_like()
    with torch.no_grad():
        other.classifier.bias.add_(1e-3)  # an offset ten times the tolerance
    with pytest.raises(ExportVerificationError, match="does not match PyTorch"):
        verify_onnx(other, path, SIZE)


def test_onnx_v2_relu6_exports_as_clip(tmp_path):
    model = trained_like("mobilenet_v2")
    path = export_onnx(model, tmp_path / "v2.onnx", SIZE, opset=17)
    ops = onnx_op_types(path)
    assert "BatchNormalization" not in ops and ops["Clip"] == sum(isinstance(m, nn.ReLU6) for m in model.modules())
    verify_onnx(model, path, SIZE)


def test_bad_opset(v3, tmp_path):
    with pytest.raises(ValueError, match=r"opset must be in \[11, 23\]"):
        export_onnx(v3, tmp_path / "m.onnx", SIZE, opset=9)
    assert not (tmp_path / "m.onnx").exists()


@pytest.mark.filterwarnings("ignore::FutureWarning")  # torch.jit.load is deprecated, still what we test
def test_torchscript_roundtrip(v3, tmp_path):
    path = export_torchscript(v3, tmp_path / "m.pt", SIZE)
    result = verify_torchscript(v3, path, SIZE)
    assert result.max_abs_diff <= 1e-4
    loaded = torch.jit.load(str(path))
    assert not any("batch_norm" in str(node.kind()) for node in loaded.graph.nodes())


@pytest.mark.parametrize("backend", ["eager", "onnxruntime", "openvino"])
def test_predictor_backends_match_model(v3, backend):
    if backend == "openvino":
        pytest.importorskip("openvino")
    predict = make_predictor(v3, backend, threads=1, input_size=SIZE, opset=17)
    x = torch.randn(5, *SIZE)
    with torch.no_grad():
        torch.testing.assert_close(predict(x), v3(x), rtol=1e-4, atol=1e-4)


def test_missing_onnxruntime_names_extra(v3, monkeypatch):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # makes `import onnxruntime` raise ImportError
    with pytest.raises(ImportError, match=r"pip install 'mobilenets\[export\]'"):
        make_predictor(v3, "onnxruntime", input_size=SIZE)


def test_openvino_runs_fp32_not_bf16(v3):
    """OpenVINO would run an fp32 model in bf16 on a CPU that has it; the ``openvino`` backend asks for fp32,
    and every op of the compiled model runs in it (the test above bounds the difference to 1e-4 as well)."""
    ov = pytest.importorskip("openvino")
    predict = make_predictor(v3, "openvino", threads=1, input_size=SIZE, opset=17)
    assert predict.compiled.get_property("INFERENCE_PRECISION_HINT") == ov.Type.f32
    ops = predict.compiled.get_runtime_model().get_ops()
    precisions = {str(op.get_rt_info()["runtimePrecision"].astype(str)) for op in ops
                  if op.get_rt_info()["layerType"].astype(str) == "Convolution"}
    assert precisions == {"f32"}


def test_openvino_precision_is_checked(v3, tmp_path):
    pytest.importorskip("openvino")
    from mobilenets.deploy import openvino_predictor

    path = export_onnx(v3, tmp_path / "v3.onnx", SIZE, opset=17)
    with pytest.raises(ValueError, match="precision must be one of f32, bf16, f16, default, got 'fp32'"):
        openvino_predictor(path, precision="fp32")
    with pytest.raises(FileNotFoundError, match="model file not found"):
        openvino_predictor(tmp_path / "absent.onnx")


# Two OpenVINO predictors freed in the order they were made, then a signal with a Python handler. With a Core per
# predictor, each CPU plugin's alternate signal stack was put back after its memory was unmapped, and the signal
# killed the process with SIGSEGV (test_train's Ctrl-C test, after the OpenVINO tests, in the same process).
_OPENVINO_THEN_SIGNAL = """
import os, signal, sys
from mobilenets.deploy import openvino_predictor
first, second = openvino_predictor(sys.argv[1], threads=1), openvino_predictor(sys.argv[1], threads=1)
del first, second
signal.signal(signal.SIGINT, lambda *args: print("handled", flush=True))
os.kill(os.getpid(), signal.SIGINT)
print("survived", flush=True)
"""


def test_signals_are_handled_after_openvino_predictors_are_freed(v3, tmp_path):
    import subprocess

    pytest.importorskip("openvino")
    path = export_onnx(v3, tmp_path / "v3.onnx", SIZE, opset=17)
    proc = subprocess.run([sys.executable, "-c", _OPENVINO_THEN_SIGNAL, str(path)], capture_output=True, text=True,
                          timeout=300)
    assert (proc.returncode, proc.stdout.split()) == (0, ["handled", "survived"]), proc.stderr[-2000:]


def test_missing_openvino_names_its_extra(v3, monkeypatch):
    monkeypatch.setitem(sys.modules, "openvino", None)
    with pytest.raises(ImportError, match=r"install the openvino extra: pip install 'mobilenets\[openvino\]'"):
        make_predictor(v3, "openvino", input_size=SIZE)


def test_unknown_backend(v3):
    with pytest.raises(ValueError, match="accepted: eager, compile, onnxruntime, onnxruntime-int8"):
        make_predictor(v3, "tensorrt")


# -- command line ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory, v3):
    path = tmp_path_factory.mktemp("ckpt") / "v3.safetensors"
    mobilenets.save(v3, path, input_size=list(SIZE))
    return path


def test_cli_export_onnx(checkpoint, tmp_path, capsys):
    out = tmp_path / "v3.onnx"
    code = main(["export", str(checkpoint), "--output", str(out), "--opset", "17", "--dynamic-batch"])
    stdout = capsys.readouterr().out
    assert code == 0 and out.is_file()
    assert "verified: max |PyTorch - exported|" in stdout and "batches [1, 3]" in stdout
    assert "HardSwish" in onnx_op_types(out) and "Resize" not in onnx_op_types(out)


def test_cli_export_onnxruntime_layout(checkpoint, v3, tmp_path, capsys):
    out = tmp_path / "v3_ort.onnx"
    code = main(["export", str(checkpoint), "--output", str(out), "--dynamic-batch", "--onnxruntime-layout"])
    assert code == 0 and "verified: max |PyTorch - exported|" in capsys.readouterr().out
    assert onnx_op_types(out)["Resize"] == _gated_spatial_ses(v3, SIZE)
    for extra in (["--format", "torchscript"], ["--int8"]):
        assert main(["export", str(checkpoint), "--output", str(tmp_path / "x"), "--onnxruntime-layout", *extra]) == 2
        assert "--onnxruntime-layout applies to the fp32 ONNX file" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


@pytest.mark.filterwarnings("ignore::FutureWarning")  # torch.jit.load is deprecated, still what we test
def test_cli_export_torchscript(checkpoint, tmp_path, capsys):
    import re

    out = tmp_path / "v3.pt"
    assert main(["export", str(checkpoint), "--format", "torchscript", "--output", str(out)]) == 0
    stdout = capsys.readouterr().out
    # the command reloaded the file and compared it with the checkpoint's model before reporting success
    verified = re.search(
        rf"^wrote {re.escape(str(out))} \(torchscript, input \(3, 32, 32\)\); verified: max \|PyTorch - exported\| = "
        r"(\S+) \(tolerance 1e-04\) over batches \[1, 3\], top-1 agreement 100\.0%$",
        stdout, re.MULTILINE,
    )
    assert verified, stdout
    assert float(verified.group(1)) <= 1e-4
    # and the file on its own computes what the checkpoint's model computes
    model = mobilenets.load(checkpoint).eval()
    loaded = torch.jit.load(str(out), map_location="cpu").eval()
    x = torch.randn(4, *SIZE, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        expected, got = model(x), loaded(x)
    assert expected.abs().max() > 0.3 and expected.std(0).mean() > 0.05  # logits that show a mismatch
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4)


def test_cli_export_missing_checkpoint(tmp_path, capsys):
    code = main(["export", str(tmp_path / "nope.safetensors"), "--output", str(tmp_path / "x.onnx")])
    err = capsys.readouterr().err
    assert code == 2 and "nope.safetensors" in err and "mobilenets export: error:" in err
    assert not (tmp_path / "x.onnx").exists()


def test_cli_export_not_a_checkpoint(tmp_path, capsys):
    from safetensors.torch import save_file

    bogus = tmp_path / "bogus.safetensors"
    save_file({"w": torch.zeros(3)}, str(bogus))  # a valid safetensors file without our metadata
    code = main(["export", str(bogus), "--output", str(tmp_path / "x.onnx")])
    err = capsys.readouterr().err
    assert code == 2 and "bogus.safetensors" in err and not (tmp_path / "x.onnx").exists()


def test_cli_export_mismatched_weights(tmp_path, capsys):
    from safetensors.torch import load_file, save_file

    good = tmp_path / "good.safetensors"
    mobilenets.save(mobilenets.create_model("mobilenet_v3_small", width_mult=0.35, num_classes=10), good)
    tensors = load_file(str(good))
    tensors["classifier.weight"] = torch.zeros(7, 3)  # wrong shape for the architecture in the metadata
    from safetensors import safe_open

    with safe_open(str(good), "pt") as fh:
        meta = fh.metadata()
    bad = tmp_path / "bad.safetensors"
    save_file(tensors, str(bad), metadata=meta)
    code = main(["export", str(bad), "--output", str(tmp_path / "x.onnx")])
    err = capsys.readouterr().err
    assert code == 2 and "bad.safetensors" in err and "classifier.weight" in err


# -- INT8 export on the command line -----------------------------------------------------------------

FMNIST = "/usr/share/datasets/fashion-mnist"


@pytest.fixture(scope="module")
def fmnist_checkpoint(fmnist_run):
    """The session's briefly trained Fashion-MNIST V3-Small (``fmnist_run`` in conftest.py): INT8 is checked on a
    model whose outputs carry signal, not on near-tied logits. Its checkpoint, model, and data normalised as the
    checkpoint says."""
    from mobilenets.train.evaluate import checkpoint_data

    path = fmnist_run / "best.safetensors"
    model = mobilenets.load(path).eval()
    bundle, _ = checkpoint_data(path, model)
    return path, model, bundle


def test_cli_export_int8_roundtrip(fmnist_checkpoint, tmp_path, capsys):
    import re

    from torch.utils.data import DataLoader

    from mobilenets.deploy import onnxruntime_predictor

    path, model, bundle = fmnist_checkpoint
    out = tmp_path / "v3s.int8.onnx"
    code = main(["export", str(path), "--int8", "--output", str(out), "--opset", "17", "--calibration-batches", "2",
                 "--check-images", "200", "--threads", "1"])
    stdout = capsys.readouterr().out
    assert code == 0 and out.is_file(), stdout
    assert "calibrated on 64 fashion_mnist validation images" in stdout
    assert "fp32 graph verified: max |PyTorch - exported|" in stdout
    printed = float(re.search(r"top-1 agreement with fp32 ([\d.]+)%", stdout).group(1)) / 100
    ops = onnx_op_types(out)
    assert ops["QuantizeLinear"] > 0 and ops["DequantizeLinear"] >= ops["Conv"] and "BatchNormalization" not in ops
    assert read_onnx_metadata(out)["arch"] == "mobilenet_v3_small"  # preprocessing metadata survives
    # the file runs on its own, at any batch size, and agrees with the fp32 checkpoint as reported
    images, _ = next(iter(DataLoader(bundle.test, batch_size=200)))
    got = torch.cat([onnxruntime_predictor(out, threads=1)(x) for x in images.split(50)])
    with torch.no_grad():
        ref = model(images)
    agreement = (got.argmax(1) == ref.argmax(1)).float().mean().item()
    # the printed figure, within one image of 200 (the command runs batches of 64, here 50) and its rounding
    assert agreement == pytest.approx(printed, abs=0.006)
    # export's own gate (--min-agreement, 0.9) passed: about 97% on this model, whose logits carry signal
    assert agreement >= 0.9
    assert not torch.allclose(got, ref, atol=1e-4)  # integer arithmetic, not the fp32 graph


def test_cli_export_int8_of_a_run_without_validation_split(fmnist_checkpoint, tmp_path, capsys):
    """A run trained on every training image (--val-fraction 0) has no validation split: INT8 then calibrates
    on its first training images, without augmentation, and still checks on test images."""
    from torch.utils.data import DataLoader

    from mobilenets.data import build_data
    from mobilenets.train.evaluate import calibration_batches

    path, model, bundle = fmnist_checkpoint
    full = tmp_path / "full.safetensors"
    meta = mobilenets.read_metadata(path)
    mobilenets.save(model, full, input_size=[1, 28, 28], mean=meta["mean"], std=meta["std"],
                    class_names=meta["class_names"], training={**meta["training"], "val_fraction": 0.0})
    out = tmp_path / "full.int8.onnx"
    assert main(["export", str(full), "--int8", "--output", str(out), "--opset", "17", "--calibration-batches", "2",
                 "--check-images", "200", "--threads", "1"]) == 0
    stdout = capsys.readouterr().out
    assert "calibrated on 64 fashion_mnist training images" in stdout and "200 fashion_mnist test images" in stdout
    # those calibration images: the first training images as evaluation sees images (no augmentation)
    whole = build_data("fashion_mnist", FMNIST, val_fraction=0.0, random_erasing=0.0)
    assert whole.val is None
    batches = calibration_batches(whole, batches=2, batch_size=32)
    assert [tuple(b.shape) for b in batches] == [(32, 1, 28, 28)] * 2
    torch.testing.assert_close(batches[0], calibration_batches(whole, batches=1, batch_size=32)[0], rtol=0, atol=0)
    raw = whole.train.base
    first = torch.stack([torch.as_tensor(np.asarray(raw[i][0]), dtype=torch.float32).reshape(28, 28) / 255
                         for i in range(32)])
    mean, std = whole.mean[0], whole.std[0]
    torch.testing.assert_close(batches[0][:, 0], (first - mean) / std, rtol=1e-5, atol=1e-5)


def test_cli_export_int8_errors(fmnist_checkpoint, checkpoint, tmp_path, capsys):
    path, _, _ = fmnist_checkpoint
    out = tmp_path / "x.onnx"
    # the v3 checkpoint carries no training record, so no dataset to calibrate on
    assert main(["export", str(checkpoint), "--int8", "--output", str(out)]) == 2
    assert "no training record names its dataset; pass --dataset" in capsys.readouterr().err
    assert main(["export", str(path), "--int8", "--format", "torchscript", "--output", str(out)]) == 2
    assert "--int8 writes onnx, executorch, tflite files, not torchscript" in capsys.readouterr().err
    assert main(["export", str(path), "--int8", "--resolution", "32", "--output", str(out)]) == 2
    assert "calibrates on the checkpoint's 28 px images" in capsys.readouterr().err
    assert not out.exists()


def test_a_predictor_says_what_it_runs_and_closes(tmp_path):
    """make_predictor returns a Predictor: callable, with the file it runs (None for PyTorch backends) and
    close(), which frees the session and the temporary folder it owns and refuses to run afterwards."""
    torch.manual_seed(0)
    model = mobilenets.create_model("mobilenet_v1", width_mult=0.25, num_classes=10).eval()
    x = torch.randn(2, *SIZE)
    eager = make_predictor(model, "eager")
    assert isinstance(eager, Predictor) and eager.path is None and eager.module is not None
    predict = make_predictor(model, "onnxruntime", threads=1, input_size=SIZE, opset=17)
    assert predict.path.suffix == ".onnx" and predict.path.is_file() and predict.session is not None
    torch.testing.assert_close(predict(x), eager(x), rtol=1e-4, atol=1e-4)
    folder = predict.path.parent
    predict.close()
    assert not folder.exists() and predict.session is None
    with pytest.raises(RuntimeError, match="closed"):
        predict(x)
    with make_predictor(model, "onnxruntime", threads=1, input_size=SIZE, opset=17, workdir=tmp_path) as kept:
        assert kept.path.parent == tmp_path
    assert kept.path.is_file()  # a folder the caller gave stays theirs
