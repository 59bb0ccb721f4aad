"""ONNX Runtime latency of each of our graph changes beside the graph without it, interleaved in one process.

For each model (random weights, batch-norm statistics drawn away from their init values so the activations are
those of a working network), batch 1 and 224 px by default, these files are timed side by side:

* ``fp32-exporter``: fp32 as ``torch.onnx.export`` writes it (``export_onnx(..., optimize=False)``: every
  spatial mean a ``ReduceMean``);
* ``fp32``: our export (``pool_spatial_means``: ``GlobalAveragePool``, which ONNX Runtime keeps in its NCHWc
  layout);
* ``fp32-gates``: our export with ``expand_gates=True`` (``expand_channel_gates``: each squeeze-excite gate
  repeated over H and W by a ``Resize``, so ONNX Runtime keeps the gate multiply in its NCHWc layout instead of
  converting the feature map out of it and back); what the ``onnxruntime`` backend of ``make_predictor`` runs;
* ``fp32-padded``: our export of ``pad_expanded_channels(model)`` (the float file ``export_int8_onnx`` leaves),
  to show whether padding would pay in fp32;
* ``int8-as-exported``: ``quantize_onnx(..., integer_activations=False)`` of our export: h-swish and h-sigmoid
  stay float between Q/DQ pairs;
* ``int8-rewritten``: ``quantize_onnx`` of our export (``integer_friendly``: integer end to end);
* ``int8``: what ``make_predictor(..., "onnxruntime-int8")`` runs (``export_int8_onnx``): ``int8-rewritten``
  of the padded export, whose expanded widths are multiples of 16, which ONNX Runtime's fast integer depthwise
  kernels need;
* ``int8-stem-fp32``: ``int8`` with the stem conv left in float (``quantize_onnx(..., float_nodes=...)``):
  its 3 input channels miss ONNX Runtime's fast integer kernels, which fp32's NCHWc conv does not need;
* ``int8-dw-fp32``: ``int8-stem-fp32`` with every depthwise conv left in float too, so only the pointwise convs,
  the classifier and the element-wise ops run in integer (at 2 threads ONNX Runtime's integer depthwise kernels
  can be slower than its fp32 ones: ``benchmarks/experiments/ort_profile.py``).

Every file is checked against the model before it is timed. The last column counts the float ops and Q/DQ
nodes left in the graph ONNX Runtime runs (as exported -> rewritten).

    .venv/bin/python benchmarks/experiments/ort_graph_changes.py --threads 2
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
from pathlib import Path

import onnx
import torch

import mobilenets
from mobilenets.deploy import export_onnx, onnxruntime_op_types, onnxruntime_predictor, quantize_onnx
from mobilenets.deploy.bench import spread_batchnorm_, time_interleaved
from mobilenets.deploy.quantize import export_int8_onnx

FLOAT_OPS = {"Conv", "Add", "Mul", "Clip", "Gemm", "HardSwish", "HardSigmoid", "ReduceMean", "GlobalAveragePool",
             "QuantizeLinear", "DequantizeLinear"}
COLUMNS = ("fp32-exporter", "fp32", "fp32-gates", "fp32-padded", "int8-as-exported", "int8-rewritten", "int8",
           "int8-stem-fp32", "int8-dw-fp32")
RATIOS = (  # (label, numerator, denominator)
    ("fp32/exporter", "fp32", "fp32-exporter"),
    ("gates/fp32", "fp32-gates", "fp32"),
    ("padded/fp32", "fp32-padded", "fp32"),
    ("exported/fp32", "int8-as-exported", "fp32"),
    ("rewritten/fp32", "int8-rewritten", "fp32"),
    ("int8/fp32", "int8", "fp32"),
    ("int8/rewritten", "int8", "int8-rewritten"),
    ("stem-fp32/int8", "int8-stem-fp32", "int8"),
    ("dw-fp32/int8", "int8-dw-fp32", "int8"),
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", nargs="*", default=["mobilenet_v3_large", "mobilenet_v3_small", "mobilenet_v2"])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--resolution", type=int, default=224)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--iters", type=int, default=5)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    size = (3, args.resolution, args.resolution)
    gen = torch.Generator().manual_seed(0)
    calibration = [torch.randn(8, *size, generator=gen) for _ in range(4)]
    x = torch.randn(args.batch, *size, generator=gen)
    print(f"batch {args.batch}, {args.resolution} px, {args.threads} threads, {args.rounds} x {args.iters} calls "
          "each; median ms, then ratios of medians")
    print(f"{'model':<19}" + "".join(f"{c:>17}" for c in COLUMNS) + "".join(f"{r[0]:>15}" for r in RATIOS)
          + "  float ops + Q/DQ left")
    for name in args.models:
        model = spread_batchnorm_(mobilenets.create_model(name).eval(), gen)
        with torch.no_grad():
            ref = model(x)
        with tempfile.TemporaryDirectory() as tmp:
            folder = Path(tmp)

            def fp32(m, stem: str, **options) -> Path:
                return export_onnx(m, folder / f"{stem}.onnx", size, dynamic_batch=True, **options)

            files = {"fp32-exporter": fp32(model, "exporter", optimize=False), "fp32": fp32(model, "ours"),
                     "fp32-gates": fp32(model, "gates", expand_gates=True)}
            files["int8"] = export_int8_onnx(model, folder / "padded.onnx", folder / "int8.onnx", calibration, size)
            files["fp32-padded"] = folder / "padded.onnx"
            convs = [n for n in onnx.load(str(files["fp32-padded"])).graph.node if n.op_type == "Conv"]
            depthwise = [n.name for n in convs if any(a.name == "group" and a.i > 1 for a in n.attribute)]
            files["int8-stem-fp32"] = quantize_onnx(files["fp32-padded"], folder / "int8_stem_fp32.onnx", calibration,
                                                    float_nodes=[convs[0].name])
            files["int8-dw-fp32"] = quantize_onnx(files["fp32-padded"], folder / "int8_dw_fp32.onnx", calibration,
                                                  float_nodes=[convs[0].name, *depthwise])
            files["int8-as-exported"] = quantize_onnx(files["fp32"], folder / "int8_as_exported.onnx", calibration,
                                                      integer_activations=False)
            files["int8-rewritten"] = quantize_onnx(files["fp32"], folder / "int8_rewritten.onnx", calibration)
            left = [sum(n for op, n in onnxruntime_op_types(files[k]).items() if op in FLOAT_OPS)
                    for k in ("int8-as-exported", "int8-rewritten")]
            runners = {(k,): onnxruntime_predictor(files[k], args.threads) for k in COLUMNS}
            for (key,), run in runners.items():
                error = ((run(x) - ref).abs().max() / ref.abs().max()).item()
                if error > (1e-4 if key.startswith("fp32") else 0.5):
                    raise SystemExit(f"{name} {key}: relative max error {error:.2e} against the model")
            samples = time_interleaved(runners, x, args.rounds, args.iters)
        med = {k[0]: statistics.median(v) * 1e3 for k, v in samples.items()}
        print(f"{name:<19}" + "".join(f"{med[c]:>17.2f}" for c in COLUMNS)
              + "".join(f"{med[a] / med[b]:>15.3f}" for _, a, b in RATIOS) + f"  {left[0]} -> {left[1]}", flush=True)


if __name__ == "__main__":
    main()
