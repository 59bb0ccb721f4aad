"""INT8 post-training quantization with ONNX Runtime: integer graph, per-channel weights, outputs close to fp32."""

import pytest
import torch

from mobilenets.deploy import export_onnx, onnx_op_types, onnxruntime_op_types, onnxruntime_predictor, quantize_onnx

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

import mobilenets  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")

SIZE = (3, 32, 32)


def _quadrant_data(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Images whose class is the brightest quadrant: a task a tiny network learns in a few dozen steps, so
    its logits are spread out the way a trained model's are (an untrained one's are ~1e-9 and all alike)."""
    gen = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, 4, (n,), generator=gen)
    images = torch.randn(n, *SIZE, generator=gen) * 0.5
    half = SIZE[-1] // 2
    for i, label in enumerate(labels.tolist()):
        row, col = divmod(label, 2)
        images[i, :, row * half : (row + 1) * half, col * half : (col + 1) * half] += 1.5
    return images, labels


def _trained_on_quadrants(name: str, width_mult: float, steps: int = 60) -> torch.nn.Module:
    """A whole network trained on the quadrant task. Random weights will not do for INT8 checks: at init,
    and with ``mobilenets.deploy.bench.spread_batchnorm_``'s statistics, the input's part of the logits fades
    layer by layer to ~1e-6 of a constant offset (every input gets the same class, so INT8 agrees with fp32
    whatever it computes); with batch-norm statistics re-estimated on random images the logits do vary, but
    INT8 noise is a third of that variation and the top-1 agreement wanders between 0.75 and 0.95 with the
    seed. Trained, the logits vary by a quarter of their size and INT8 moves them by a few percent."""
    with torch.random.fork_rng():  # the same weights (and dropout) whichever tests ran before
        torch.manual_seed(0)
        model = mobilenets.create_model(name, width_mult=width_mult, num_classes=4)
        return _fit_quadrants(model, steps, lr=1e-2)


def _fit_quadrants(model: torch.nn.Module, steps: int, lr: float) -> torch.nn.Module:
    """``steps`` AdamW steps of batch 32 on the quadrant task; returns ``model`` in eval mode."""
    images, labels = _quadrant_data(512, seed=0)
    opt = torch.optim.AdamW(model.parameters(), lr=lr)
    model.train()
    for step in range(steps):
        idx = torch.arange(step * 32, step * 32 + 32) % len(images)
        loss = torch.nn.functional.cross_entropy(model(images[idx]), labels[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.eval()


def assert_not_degenerate(logits: torch.Tensor) -> None:
    """Logits that differ between inputs by a good part of their size, with at least three winning classes:
    else the class, and the relative error against the logits' (constant) size, say nothing."""
    spread, size = logits.std(0).mean().item(), logits.abs().max().item()
    assert spread > 0.1 * size, (spread, size)
    assert len(set(logits.argmax(1).tolist())) >= 3, logits.argmax(1)


@pytest.fixture(scope="module")
def v2_files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("quant")
    model = _trained_on_quadrants("mobilenet_v2", 0.35)
    test_x, test_y = _quadrant_data(64, seed=1)
    with torch.no_grad():
        assert (model(test_x).argmax(1) == test_y).float().mean() >= 0.9  # it did learn the task
    fp32 = export_onnx(model, folder / "fp32.onnx", SIZE, opset=17, dynamic_batch=True)
    calibration = list(_quadrant_data(32, seed=2)[0].split(8))
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


def assert_int8_close_to_fp32(fp32, int8) -> None:
    run32, run8 = onnxruntime_predictor(fp32, threads=1), onnxruntime_predictor(int8, threads=1)
    x = _quadrant_data(64, seed=3)[0]  # images like the calibration ones, not those images themselves
    ref, got = run32(x), run8(x)
    assert_not_degenerate(ref)
    # quantization noise is small against the spread of the logits between inputs, and the decision rarely changes
    rel = ((got - ref).norm() / (ref - ref.mean(0)).norm()).item()
    agreement = (got.argmax(1) == ref.argmax(1)).float().mean().item()
    assert rel < 0.2, rel
    assert agreement >= 0.9, agreement
    assert not torch.equal(got, ref)  # it really runs in integer arithmetic


def test_int8_close_to_fp32(v2_files):
    _, fp32, int8 = v2_files
    assert_int8_close_to_fp32(fp32, int8)


def test_int8_v4_close_to_fp32(tmp_path):
    """V4's blocks (a linear depthwise conv before the expansion, FFN, the fused IB) and its head's batch norm
    on the pooled map quantize like the rest: every conv INT8, outputs close to fp32."""
    model = _trained_on_quadrants("mobilenet_v4_conv_medium", 0.35)
    fp32 = export_onnx(model, tmp_path / "fp32.onnx", SIZE, opset=17, dynamic_batch=True)
    int8 = quantize_onnx(fp32, tmp_path / "int8.onnx", list(_quadrant_data(32, seed=2)[0].split(8)))
    n_conv = sum(isinstance(m, torch.nn.Conv2d) for m in model.modules())
    assert onnx_op_types(int8)["DequantizeLinear"] >= n_conv
    assert_int8_close_to_fp32(fp32, int8)


def test_empty_calibration_refused(v2_files, tmp_path):
    _, fp32, _ = v2_files
    with pytest.raises(ValueError, match="calibration data is empty"):
        quantize_onnx(fp32, tmp_path / "int8.onnx", [])
    assert not (tmp_path / "int8.onnx").exists()


def test_unknown_method(v2_files, tmp_path):
    _, fp32, _ = v2_files
    with pytest.raises(ValueError, match="minmax, percentile, entropy"):
        quantize_onnx(fp32, tmp_path / "int8.onnx", [torch.zeros(1, *SIZE)], method="kl")


def test_float_nodes_stay_float_and_unknown_names_are_refused(v2_files, tmp_path):
    _, fp32, int8 = v2_files
    stem = next(n.name for n in onnx.load(str(fp32)).graph.node if n.op_type == "Conv")
    mixed = quantize_onnx(fp32, tmp_path / "mixed.onnx", list(_quadrant_data(32, seed=2)[0].split(8)),
                          float_nodes=[stem])
    # the stem's weights stay float (no DequantizeLinear feeds it); every other conv is still quantized
    graph = onnx.load(str(mixed)).graph
    producers = {out: node.op_type for node in graph.node for out in node.output}
    convs = {n.name: producers.get(n.input[1]) for n in graph.node if n.op_type == "Conv"}
    assert convs.pop(stem) is None and set(convs.values()) == {"DequantizeLinear"}
    assert onnxruntime_op_types(mixed)["QLinearConv"] == onnxruntime_op_types(int8)["QLinearConv"] - 1
    assert_int8_close_to_fp32(fp32, mixed)
    with pytest.raises(ValueError, match="float_nodes not in fp32.onnx: stem_conv"):
        quantize_onnx(fp32, tmp_path / "bad.onnx", [torch.zeros(1, *SIZE)], float_nodes=["stem_conv"])


# -- MobileNetV3: h-swish, h-sigmoid and the SE mean in integer arithmetic -----------------------------

V3_FLOAT_ONLY = {"HardSwish", "HardSigmoid", "ReduceMean"}


@pytest.fixture(scope="module")
def v3_files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("quant_v3")
    # trained, so that the activations cross h-swish's kinks and the logits differ between inputs
    model = _trained_on_quadrants("mobilenet_v3_small", 0.5)
    files = {opset: export_onnx(model, folder / f"fp32_{opset}.onnx", SIZE, opset=opset, dynamic_batch=True)
             for opset in (13, 18)}
    calibration = list(_quadrant_data(32, seed=2)[0].split(8))
    return model, files, calibration, folder


@pytest.mark.parametrize("opset", [13, 18])
def test_integer_friendly_rewrite_computes_the_same(v3_files, opset):
    """Below opset 14 h-swish arrives as x * HardSigmoid(x), from 14 as HardSwish. Both forms are rewritten,
    and the function does not change. (The SE mean arrives as GlobalAveragePool already: see test_export.)"""
    from mobilenets.deploy.quantize import integer_friendly

    _, files, _, _ = v3_files
    proto = onnx.load(str(files[opset]))
    before = {n.op_type for n in proto.graph.node}
    assert before & V3_FLOAT_ONLY
    counts = integer_friendly(proto)
    onnx.checker.check_model(proto)
    assert set(counts) == before & V3_FLOAT_ONLY
    assert not {n.op_type for n in proto.graph.node} & V3_FLOAT_ONLY
    # every activation ends in a conv, so the h-sigmoid's Mul by 1/6 went into the weights: no Mul by a constant
    constants = {t.name for t in proto.graph.initializer}
    assert not [n.name for n in proto.graph.node if n.op_type == "Mul" and set(n.input) & constants]
    ort = pytest.importorskip("onnxruntime")
    x = torch.randn(4, *SIZE, generator=torch.Generator().manual_seed(3)).numpy()
    ref = ort.InferenceSession(str(files[opset]), providers=["CPUExecutionProvider"]).run(None, {"input": x})[0]
    got = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"input": x})[0]
    assert abs(ref).max() > 0.1  # logits of a size that shows an error
    assert abs(got - ref).max() < 1e-5 * abs(ref).max()


def test_integer_friendly_leaves_other_means_alone():
    from onnx import TensorProto, helper

    from mobilenets.deploy.quantize import integer_friendly

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, 5, 5])
    outs = [helper.make_tensor_value_info(n, TensorProto.FLOAT, None) for n in ("c", "flat", "hw", "neg")]
    nodes = [
        helper.make_node("ReduceMean", ["x"], ["c"], axes=[1]),  # over channels
        helper.make_node("ReduceMean", ["x"], ["flat"], axes=[2, 3], keepdims=0),  # drops the dims
        helper.make_node("ReduceMean", ["x"], ["hw"], axes=[2, 3]),  # the SE squeeze
        helper.make_node("HardSigmoid", ["x"], ["neg"], alpha=-0.5),  # decreasing: no clip form
    ]
    model = helper.make_model(helper.make_graph(nodes, "g", [x], outs), opset_imports=[helper.make_opsetid("", 13)])
    assert integer_friendly(model) == {"ReduceMean": 1}
    assert [n.op_type for n in model.graph.node] == ["ReduceMean", "ReduceMean", "GlobalAveragePool", "HardSigmoid"]


def test_integer_friendly_keeps_the_scale_where_a_residual_needs_it():
    """h-swish feeding a residual Add: 6 x h-swish(x) + x would be wrong, so the Mul by 1/6 stays; a second
    h-swish whose path ends in a conv still may not drop its own (all or none), and the function is unchanged."""
    from onnx import TensorProto, helper, numpy_helper

    from mobilenets.deploy.quantize import integer_friendly

    ort = pytest.importorskip("onnxruntime")
    rng = torch.Generator().manual_seed(0)
    w = numpy_helper.from_array(torch.randn(4, 4, 1, 1, generator=rng).numpy(), "w")
    nodes = [
        helper.make_node("HardSwish", ["x"], ["a"]),
        helper.make_node("Add", ["a", "x"], ["res"]),
        helper.make_node("HardSwish", ["res"], ["b"]),
        helper.make_node("Conv", ["b", "w"], ["y"]),
    ]
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 4, 3, 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 4, 3, 3])], initializer=[w],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 14)])
    original = model.SerializeToString()
    assert integer_friendly(model) == {"HardSwish": 2}
    onnx.checker.check_model(model)
    constants = {t.name for t in model.graph.initializer}
    assert sum(n.op_type == "Mul" and bool(set(n.input) & constants) for n in model.graph.node) == 2
    x = (3 * torch.randn(2, 4, 3, 3, generator=rng)).numpy()
    ref = ort.InferenceSession(original, providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    got = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    assert abs(got - ref).max() < 1e-5 * abs(ref).max()


def test_padded_expanded_channels_same_function_and_int8(v3_files):
    from mobilenets.deploy import count_batchnorm, pad_expanded_channels
    from mobilenets.deploy.quantize import export_int8_onnx
    from mobilenets.layers import ConvNormAct, InvertedResidual

    model, files, calibration, folder = v3_files
    padded = pad_expanded_channels(model)
    blocks = [(b, p) for b, p in zip(model.modules(), padded.modules()) if isinstance(b, InvertedResidual)]
    expanded = [(b, p) for b, p in blocks if isinstance(b.conv_pw, ConvNormAct)]
    assert all(p.conv_dw.out_channels % 16 == 0 for _, p in expanded)
    grew = [(b.conv_dw.out_channels, p.conv_dw.out_channels) for b, p in expanded
            if p.conv_dw.out_channels != b.conv_dw.out_channels]
    assert grew and all(new - old < 16 for old, new in grew), grew
    assert count_batchnorm(model) > 0 and count_batchnorm(padded) == 0  # the original is left as it was
    x = torch.randn(4, *SIZE, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        ref, got = model(x), padded(x)
    assert ref.abs().max() > 0.1
    torch.testing.assert_close(got, ref, atol=1e-5 * ref.abs().max().item(), rtol=0)
    # our INT8 file (export_int8_onnx pads the same way) against the unpadded model's fp32 file
    int8 = export_int8_onnx(model, folder / "padded.onnx", folder / "padded_int8.onnx", calibration, SIZE)
    assert_int8_close_to_fp32(files[18], int8)


def test_padding_refuses_what_it_cannot_keep_equal():
    from mobilenets.deploy import pad_expanded_channels
    from mobilenets.layers import InvertedResidual

    sigmoid = torch.nn.Sequential(InvertedResidual(8, 24, 8, act_layer=torch.nn.Sigmoid))  # sigmoid(0) = 0.5
    with pytest.raises(ValueError, match=r"act\(0\) = 0"):
        pad_expanded_channels(sigmoid)
    with pytest.raises(ValueError, match="multiple must be >= 1"):
        pad_expanded_channels(sigmoid, multiple=0)


def test_int8_v3_runs_in_integer_end_to_end(v3_files):
    model, files, calibration, folder = v3_files
    fp32 = files[18]
    int8 = quantize_onnx(fp32, folder / "int8.onnx", calibration)
    as_exported = quantize_onnx(fp32, folder / "int8_as_exported.onnx", calibration, integer_activations=False)
    # op types of the graph ONNX Runtime actually runs, after its QDQ fusions
    ops, ops_before = set(onnxruntime_op_types(int8)), set(onnxruntime_op_types(as_exported))
    # as exported, h-swish and h-sigmoid stay float between DequantizeLinear and QuantizeLinear (ONNX Runtime
    # runs HardSwish as x * HardSigmoid(x)); the export already wrote the SE mean as GlobalAveragePool
    assert {"HardSigmoid", "Mul"} <= ops_before
    # rewritten, every op between the input's QuantizeLinear and the logits' DequantizeLinear is an integer one
    float_compute = {"Conv", "Add", "Mul", "Clip", "Gemm", "GlobalAveragePool"} | V3_FLOAT_ONLY
    assert not ops & float_compute, ops & float_compute
    assert {"QLinearConv", "QLinearAdd", "QLinearMul", "QLinearGlobalAveragePool"} <= ops
    assert_int8_close_to_fp32(fp32, int8)
    assert not list(folder.glob("*.fp32.onnx"))  # the rewritten float copy is not left behind


# -- quantization-aware fine-tuning ----------------------------------------------------------------


def test_quantization_drops_only_the_preprocess_advice(v2_files, tmp_path, caplog, monkeypatch):
    import contextlib
    import logging

    from mobilenets.deploy import quantize as quantize_module
    from mobilenets.deploy.quantize import _PreprocessAdvice

    # the filter drops ONNX Runtime's advice (both wordings it logs) and passes anything else
    def record(message: str) -> logging.LogRecord:
        return logging.LogRecord("root", logging.WARNING, __file__, 1, message, None, None)

    advice = _PreprocessAdvice()
    assert not advice.filter(record("Please consider to run pre-processing before quantization. Refer to example: "))
    assert not advice.filter(record("Please consider pre-processing before quantization. See "))
    assert advice.filter(record("an unrelated warning")) and advice.filter(record("pre-processing done"))
    _, fp32, _ = v2_files
    with caplog.at_level(logging.WARNING):
        logging.warning("an unrelated warning")  # root records other than the advice still pass
        quantize_onnx(fp32, tmp_path / "int8.onnx", [torch.randn(8, *SIZE)])
    messages = [r.getMessage() for r in caplog.records]
    assert "an unrelated warning" in messages
    assert not any("pre-processing" in m for m in messages), messages
    assert not logging.getLogger().filters  # and the filter is gone afterwards
    # control: without the filter this ONNX Runtime does log the advice, so its absence above is the filter's doing
    caplog.clear()
    monkeypatch.setattr(quantize_module, "_without_preprocess_advice", contextlib.nullcontext)
    with caplog.at_level(logging.WARNING):
        quantize_onnx(fp32, tmp_path / "int8_unfiltered.onnx", [torch.randn(8, *SIZE)])
    assert any("pre-processing before quantization" in r.getMessage() for r in caplog.records)


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
    from mobilenets.deploy import fold_batchnorm
    from mobilenets.deploy.qat import prepare_qat, qat_finetune

    from test_export import trained_like

    # a random model with input-dependent logits of order 1, its running variances 30% above the measured
    # ones; no dropout, so that a training-mode forward is a function of the weights and the batch alone
    with torch.random.fork_rng():  # leaves the global stream where the test's seed put it
        model = trained_like("mobilenet_v3_small", var_margin=1.3, num_classes=4, dropout=0.0)
    gen = torch.Generator().manual_seed(0)
    batch = (torch.randn(8, *SIZE, generator=gen), torch.randint(0, 4, (8,), generator=gen))
    folded = fold_batchnorm(model)
    with torch.no_grad():
        float_logits = model(batch[0])
        # the first training step's forward: fake quantization with the ranges of this batch
        fake_logits = prepare_qat(model).train()(batch[0])
    before = torch.nn.functional.cross_entropy(float_logits, batch[1]).item()
    fake_loss = torch.nn.functional.cross_entropy(fake_logits, batch[1]).item()
    # the rounding moves the logits by a little, not by nothing and not by their own size
    rel = ((fake_logits - float_logits).norm() / float_logits.norm()).item()
    assert 1e-3 < rel < 0.1, rel
    log: list[str] = []
    tuned = qat_finetune(model, [batch], steps=5, lr=3e-3, log=log.append)
    # fine-tuning ran with fake quantization: its first step's loss is the fake-quantized one, not the float one
    first = float(log[0].rsplit("loss ", 1)[1])
    assert len(log) == 5 and log[0].startswith("qat step 1/5")
    assert first == pytest.approx(fake_loss, abs=1e-4) and abs(first - before) > 5e-4, (first, fake_loss, before)
    with torch.no_grad():
        after = torch.nn.functional.cross_entropy(tuned(batch[0]), batch[1]).item()
    assert after < before - 0.3, (before, after)  # fitted the batch, by far more than the noise of a fresh init
    # every conv and linear weight moved from the folded starting point (fine-tuning updates them all)
    start, end = folded.state_dict(), tuned.state_dict()
    assert start.keys() == end.keys()
    moved = {k: (end[k] - start[k]).abs().max().item() for k in start if k.endswith("weight")}
    assert moved and min(moved.values()) > 1e-4, moved
    # a plain folded model again: no batch norm, no fake quantization left, exports and quantizes
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in tuned.modules())
    assert all(not m._forward_pre_hooks and not hasattr(m, "parametrizations") for m in tuned.modules())
    fp32 = export_onnx(tuned, tmp_path / "qat.onnx", SIZE, opset=17, dynamic_batch=True)
    int8 = quantize_onnx(fp32, tmp_path / "qat8.onnx", [batch[0]])
    assert onnxruntime_predictor(int8)(batch[0]).shape == (8, 4)


# -- PT2E INT8 through torchao and Inductor (the inductor-int8 backend) -------------------------------


@pytest.fixture(scope="module")
def trained_v3():
    """The first four blocks of V3-Small (one with ReLU and squeeze-excite, two plain, one with h-swish and
    squeeze-excite: the parts that cost ONNX Runtime its INT8 speedup) under a linear head, trained on the
    quadrant task to well above chance. Four blocks rather than eleven: Inductor's C++ compilation is what
    these tests spend their time on, and it grows with the graph."""
    torch.manual_seed(0)
    full = mobilenets.create_model("mobilenet_v3_small", width_mult=0.35, num_classes=4)
    body = torch.nn.Sequential(full.stem, full.blocks[:4])
    assert any(isinstance(m, torch.nn.Hardswish) for m in body.modules()) and any(
        isinstance(m, mobilenets.layers.SqueezeExcite) for m in body.modules()
    )
    channels = body(torch.zeros(1, *SIZE)).shape[1]
    model = torch.nn.Sequential(body, torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(channels, 4))
    return _fit_quadrants(model, steps=80, lr=3e-3)


def test_inductor_int8_agrees_with_fp32(trained_v3):
    pytest.importorskip("torchao")
    from mobilenets.deploy import make_predictor

    test_x, test_y = _quadrant_data(128, seed=1)
    with torch.no_grad():
        ref = trained_v3(test_x)
    assert (ref.argmax(1) == test_y).float().mean() >= 0.8  # it did learn the task
    calibration = list(_quadrant_data(64, seed=2)[0].split(16))
    predict = make_predictor(trained_v3, "inductor-int8", input_size=SIZE, calibration=calibration)
    ort8 = make_predictor(trained_v3, "onnxruntime-int8", input_size=SIZE, calibration=calibration, opset=17)

    def relative_error(logits: torch.Tensor) -> float:
        return ((logits - ref).norm() / ref.norm()).item()

    got = predict(test_x)
    rel, rel_ort = relative_error(got), relative_error(ort8(test_x))
    # quantization noise: present (it really runs INT8), small against the logits, and no larger than that
    # of ONNX Runtime's quantizer, which applies the same scheme (per-channel INT8 weights, UINT8 activations)
    assert 0 < rel < 0.2 and rel < 1.25 * rel_ort, (rel, rel_ort)
    assert (got.argmax(1) == ref.argmax(1)).float().mean() >= 0.95
    # the graph Inductor compiled has per-channel INT8 weights for every conv (SE's included) and the head
    targets = [str(n.target) for n in predict.module.graph.nodes if n.op == "call_function"]
    n_weights = sum(isinstance(m, (torch.nn.Conv2d, torch.nn.Linear)) for m in trained_v3.modules())
    assert sum("dequantize_per_channel" in t for t in targets) == n_weights


def test_openvino_int8_runs_in_integer_as_close_to_fp32_as_onnxruntime(trained_v3):
    """``openvino-int8`` quantizes like ``onnxruntime-int8`` (same padded export, calibration and scheme), leaving
    h-swish and h-sigmoid as OpenVINO's native ops: every conv and the classifier run in 8-bit integer, and its
    outputs are as close to fp32 as ONNX Runtime's."""
    pytest.importorskip("openvino")
    from mobilenets.deploy import make_predictor

    test_x, test_y = _quadrant_data(128, seed=1)
    with torch.no_grad():
        ref = trained_v3(test_x)
    assert (ref.argmax(1) == test_y).float().mean() >= 0.8
    calibration = list(_quadrant_data(64, seed=2)[0].split(16))
    ov8 = make_predictor(trained_v3, "openvino-int8", input_size=SIZE, calibration=calibration, opset=17)
    ort8 = make_predictor(trained_v3, "onnxruntime-int8", input_size=SIZE, calibration=calibration, opset=17)
    got = ov8(test_x)
    rel, rel_ort = (((y - ref).norm() / ref.norm()).item() for y in (got, ort8(test_x)))
    # quantization noise present (integer arithmetic), small, and of the size of ONNX Runtime's (the two
    # requantize intermediate results with their own rounding, and round h-swish differently)
    assert 1e-3 < rel < 0.2 and rel < 1.5 * rel_ort, (rel, rel_ort)
    assert (got.argmax(1) == ref.argmax(1)).float().mean() >= 0.95
    kinds = {}
    for op in ov8.compiled.get_runtime_model().get_ops():
        info = op.get_rt_info()
        kinds.setdefault(info["layerType"].astype(str), set()).add(info["runtimePrecision"].astype(str))
    n_convs = sum(isinstance(m, torch.nn.Conv2d) for m in trained_v3.modules())
    assert "HardSwish" in onnx_op_types(ov8.path)  # native, not rewritten into Add/Clip/Mul
    assert kinds["Convolution"] <= {"u8", "i8"} and kinds["FullyConnected"] <= {"u8", "i8"}, kinds
    assert sum(op.get_rt_info()["layerType"].astype(str) == "Convolution"
               for op in ov8.compiled.get_runtime_model().get_ops()) == n_convs


def test_compile_backend_matches_eager(trained_v3):
    """torch.compile with Inductor freezing (weights folded and prepacked for oneDNN) keeps the function,
    also after the INT8 test above imported torchao's quantizer, which registers Inductor passes globally."""
    from mobilenets.deploy import make_predictor

    x = _quadrant_data(16, seed=3)[0]
    with torch.no_grad():
        expected = trained_v3(x)
    assert expected.abs().max() > 1  # logits of a trained model, not ~0
    torch.testing.assert_close(make_predictor(trained_v3, "compile")(x), expected, rtol=1e-4, atol=1e-4)


def test_inductor_int8_needs_calibration_of_the_right_shape(trained_v3):
    pytest.importorskip("torchao")
    from mobilenets.deploy import make_predictor
    from mobilenets.deploy.pt2e import quantize_pt2e

    with pytest.raises(ValueError, match="needs calibration batches"):
        make_predictor(trained_v3, "inductor-int8", input_size=SIZE)
    with pytest.raises(ValueError, match="calibration data is empty"):
        quantize_pt2e(trained_v3, [], SIZE)
    with pytest.raises(ValueError, match=r"expected \(N, 3, 32, 32\)"):
        quantize_pt2e(trained_v3, [torch.zeros(2, 3, 48, 48)], SIZE)


def test_missing_torchao_names_extra(trained_v3, monkeypatch):
    import sys

    from mobilenets.deploy import make_predictor

    # None in sys.modules makes an import raise ImportError, as if torchao were not installed
    for name in [m for m in sys.modules if m == "torchao" or m.startswith("torchao.")] + ["torchao"]:
        monkeypatch.setitem(sys.modules, name, None)
    with pytest.raises(ImportError, match=r"torchao is not installed.*pip install 'mobilenets\[export\]'"):
        make_predictor(trained_v3, "inductor-int8", input_size=SIZE, calibration=[torch.zeros(1, *SIZE)])
