"""INT8 post-training quantization with ONNX Runtime: integer graph, per-channel weights, outputs close to fp32."""

import pytest
import torch

from mobilenets.deploy import export_onnx, onnx_op_types, onnxruntime_predictor, quantize_onnx

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

import mobilenets  # noqa: E402

SIZE = (3, 32, 32)


@pytest.fixture(scope="module")
def v2_files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("quant")
    # a freshly initialised model: random weights are not chaotic at init (deep random nets with
    # re-estimated batch-norm statistics amplify any rounding layer by layer, trained ones do not)
    model = mobilenets.create_model("mobilenet_v2", width_mult=0.35, num_classes=10).eval()
    fp32 = export_onnx(model, folder / "fp32.onnx", SIZE, opset=17, dynamic_batch=True)
    gen = torch.Generator().manual_seed(1)
    calibration = [torch.randn(8, *SIZE, generator=gen) for _ in range(4)]
    int8 = quantize_onnx(fp32, folder / "int8.onnx", calibration)
    return model, fp32, int8


def test_int8_graph_is_quantized_per_channel(v2_files):
    model, _, int8 = v2_files
    ops = onnx_op_types(int8)
    n_conv = sum(isinstance(m, torch.nn.Conv2d) for m in model.modules())
    assert ops["QuantizeLinear"] >= n_conv and ops["DequantizeLinear"] >= n_conv
    graph = onnx.load(str(int8)).graph
    inits = {t.name: t for t in graph.initializer}
    # each Conv's weight input comes from a DequantizeLinear whose scale has one entry per output channel
    producers = {out: node for node in graph.node for out in node.output}
    per_channel = 0
    for node in graph.node:
        if node.op_type == "Conv":
            dq = producers[node.input[1]]
            assert dq.op_type == "DequantizeLinear"
            scale = inits[dq.input[1]]
            weight = inits[dq.input[0]]
            assert weight.data_type == onnx.TensorProto.INT8
            per_channel += list(scale.dims) == [weight.dims[0]]
    assert per_channel == n_conv


def test_int8_close_to_fp32(v2_files):
    _, fp32, int8 = v2_files
    run32, run8 = onnxruntime_predictor(fp32, threads=1), onnxruntime_predictor(int8, threads=1)
    x = torch.randn(64, *SIZE, generator=torch.Generator().manual_seed(2))
    ref, got = run32(x), run8(x)
    # quantization noise is small against the spread of the logits, and the decision rarely changes
    rel = ((got - ref).norm() / ref.norm()).item()
    agreement = (got.argmax(1) == ref.argmax(1)).float().mean().item()
    assert rel < 0.2, rel
    assert agreement >= 0.8, agreement
    assert not torch.equal(got, ref)  # it really runs in integer arithmetic


def test_empty_calibration_refused(v2_files, tmp_path):
    _, fp32, _ = v2_files
    with pytest.raises(ValueError, match="calibration data is empty"):
        quantize_onnx(fp32, tmp_path / "int8.onnx", [])
    assert not (tmp_path / "int8.onnx").exists()


def test_unknown_method(v2_files, tmp_path):
    _, fp32, _ = v2_files
    with pytest.raises(ValueError, match="minmax, percentile, entropy"):
        quantize_onnx(fp32, tmp_path / "int8.onnx", [torch.zeros(1, *SIZE)], method="kl")


# -- quantization-aware fine-tuning ----------------------------------------------------------------


def test_weight_fake_quant_grid():
    from mobilenets.deploy.qat import WeightFakeQuant

    w = torch.randn(4, 3, 3, 3) * torch.tensor([1e-3, 1e-1, 1.0, 10.0]).view(4, 1, 1, 1)
    q = WeightFakeQuant()(w)
    scale = w.abs().amax(dim=(1, 2, 3)) / 127
    for c in range(4):  # per channel: on that channel's own grid, within half a step, extremes kept
        levels = q[c] / scale[c]
        torch.testing.assert_close(levels, levels.round(), atol=1e-3, rtol=0)
        assert (q[c] - w[c]).abs().max() <= scale[c] / 2 + 1e-6
        assert q[c].abs().max() == pytest.approx(w[c].abs().max().item(), rel=1e-5)


def test_qat_finetune_learns_and_strips(tmp_path):
    from mobilenets.deploy.qat import prepare_qat, qat_finetune

    model = mobilenets.create_model("mobilenet_v3_small", width_mult=0.35, num_classes=4).eval()
    gen = torch.Generator().manual_seed(0)
    batch = (torch.randn(8, *SIZE, generator=gen), torch.randint(0, 4, (8,), generator=gen))
    qat = prepare_qat(model)
    qat.eval()
    with torch.no_grad():
        before = torch.nn.functional.cross_entropy(qat(batch[0]), batch[1]).item()
    tuned = qat_finetune(model, [batch], steps=5, lr=3e-3)
    with torch.no_grad():
        after = torch.nn.functional.cross_entropy(tuned(batch[0]), batch[1]).item()
    assert after < before
    # a plain folded model again: no batch norm, no fake quantization left, exports and quantizes
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in tuned.modules())
    assert all(not m._forward_pre_hooks and not hasattr(m, "parametrizations") for m in tuned.modules())
    fp32 = export_onnx(tuned, tmp_path / "qat.onnx", SIZE, opset=17, dynamic_batch=True)
    int8 = quantize_onnx(fp32, tmp_path / "qat8.onnx", [batch[0]])
    assert onnxruntime_predictor(int8)(batch[0]).shape == (8, 4)
