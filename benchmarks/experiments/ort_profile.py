"""Where ONNX Runtime spends a model's time: fp32, and INT8 (ours, rewritten) after its fusions, by kind of op.

Exports ``MODEL`` (random weights, batch-norm statistics drawn away from their init values), quantizes it with
``export_int8_onnx`` (as ``make_predictor`` does) on random calibration batches,
runs both files ``--runs`` times at batch 1 with ONNX Runtime's profiler on, and prints each kind of op's
share of the summed kernel time and its milliseconds per run. Convolutions are split into pointwise (1x1),
depthwise (one filter per channel, by kernel size) and full ones, read from the graph ONNX Runtime runs.

The last lines compare the two precisions per category (pointwise convs, depthwise convs, element-wise ops,
...): taking, in every category, whichever of fp32 and INT8 is faster gives a lower bound on what any mix of
the two could cost, before counting the conversions between them. If that bound is above a target ratio,
no placement of INT8 ops reaches it with these kernels on this machine.

    .venv/bin/python benchmarks/experiments/ort_profile.py mobilenet_v3_large --threads 1
"""

from __future__ import annotations

import argparse
import collections
import json
import tempfile
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch

import mobilenets
from mobilenets.deploy import export_onnx
from mobilenets.deploy.quantize import export_int8_onnx
from mobilenets.deploy.bench import spread_batchnorm_

# op type (fp32 or its integer counterpart) -> category compared across precisions
CATEGORY = {
    "Gemm": "matrix product", "QGemm": "matrix product", "MatMul": "matrix product",
    "GlobalAveragePool": "pooling", "QLinearGlobalAveragePool": "pooling", "ReduceMean": "pooling",
    "Mul": "element-wise", "Add": "element-wise", "HardSigmoid": "element-wise", "HardSwish": "element-wise",
    "Clip": "element-wise", "Relu": "element-wise", "QLinearMul": "element-wise", "QLinearAdd": "element-wise",
}


def conv_kind(node: onnx.NodeProto, weights: dict[str, list[int]]) -> str:
    """``Conv pw``, ``Conv dw k3``, ``QLinearConv full k3``, ...: the kind of a (fused) convolution node."""
    attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
    dims = weights.get(node.input[3] if node.op_type == "QLinearConv" else node.input[1], [])
    kernel = list(attrs.get("kernel_shape", dims[2:]))
    if attrs.get("group", 1) > 1:
        return f"{node.op_type} dw k{kernel[0]}"
    return f"{node.op_type} {'pw' if kernel == [1, 1] else f'full k{kernel[0]}'}"


def profile(path: Path, threads: int, runs: int, x: np.ndarray, prefix: str) -> collections.Counter:
    opts = ort.SessionOptions()
    opts.intra_op_num_threads, opts.inter_op_num_threads = threads, 1
    opts.enable_profiling = True
    opts.profile_file_prefix = prefix
    opts.optimized_model_filepath = prefix + ".optimized.onnx"
    session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    graph = onnx.load(opts.optimized_model_filepath).graph
    weights = {t.name: list(t.dims) for t in graph.initializer}
    label = {n.name: conv_kind(n, weights) for n in graph.node if n.op_type in ("Conv", "QLinearConv")}
    warmup = 5
    for _ in range(warmup + runs):
        session.run(None, {"input": x})
    trace = json.loads(Path(session.end_profiling()).read_text())
    # one kernel event per node and run, in order: drop the warm-up runs' events
    nodes = [e for e in trace if e.get("cat") == "Node" and e["name"].endswith("_kernel_time")]
    per_run = len(nodes) // (warmup + runs)
    by_op: collections.Counter = collections.Counter()
    for event in nodes[warmup * per_run:]:
        by_op[label.get(event["name"][: -len("_kernel_time")], event["args"]["op_name"])] += event["dur"]
    return by_op


def category(op: str) -> str:
    if "Conv" in op:
        return op.split(" ", 1)[1]  # pw, dw k3, full k3, ...: the same for Conv and QLinearConv
    return CATEGORY.get(op, "layout and conversion")  # reorders, transposes, Q/DQ, reshapes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", nargs="?", default="mobilenet_v3_large")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--resolution", type=int, default=224)
    parser.add_argument("--runs", type=int, default=30)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    gen = torch.Generator().manual_seed(0)
    model = spread_batchnorm_(mobilenets.create_model(args.model).eval(), gen)
    size = (3, args.resolution, args.resolution)
    x = torch.randn(1, *size, generator=gen).numpy()
    per_category: dict[str, collections.Counter] = {}
    with tempfile.TemporaryDirectory() as tmp:
        fp32 = export_onnx(model, Path(tmp) / "fp32.onnx", size, dynamic_batch=True)
        calibration = [torch.randn(8, *size, generator=gen) for _ in range(4)]
        # the INT8 file as make_predictor makes it: expanded widths padded for the integer depthwise kernels
        int8 = export_int8_onnx(model, Path(tmp) / "padded.onnx", Path(tmp) / "int8.onnx", calibration, size)
        for name, path in (("fp32", fp32), ("int8", int8)):
            by_op = profile(path, args.threads, args.runs, x, str(Path(tmp) / name))
            total = sum(by_op.values())
            print(f"{args.model} {name}, {args.threads} thread(s): {total / args.runs / 1e3:.2f} ms of kernels per run")
            for op, us in by_op.most_common():
                print(f"  {op:<26} {100 * us / total:5.1f}%  {us / args.runs / 1e3:6.3f} ms")
            cats: collections.Counter = collections.Counter()
            for op, us in by_op.items():
                cats[category(op)] += us / args.runs / 1e3
            per_category[name] = cats
    fp, q = per_category["fp32"], per_category["int8"]
    print(f"\nby category, ms per run ({args.threads} thread(s)):")
    print(f"  {'category':<24} {'fp32':>7} {'int8':>7} {'int8/fp32':>9}")
    for cat in sorted(set(fp) | set(q), key=lambda c: -fp.get(c, 0)):
        a, b = fp.get(cat, 0.0), q.get(cat, 0.0)
        print(f"  {cat:<24} {a:7.3f} {b:7.3f} {b / a if a else float('inf'):9.2f}")
    best = sum(min(fp.get(c, 0.0), q.get(c, 0.0)) for c in set(fp) | set(q))
    print(f"INT8 as quantized / fp32: {sum(q.values()) / sum(fp.values()):.3f} (kernel time)")
    print(f"lower bound for any fp32/INT8 mix, the faster precision in every category, conversions free: "
          f"{best / sum(fp.values()):.3f} of fp32")


if __name__ == "__main__":
    main()
