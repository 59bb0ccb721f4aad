"""INT8 with ONNX Runtime, V3's activations rewritten into integer ops or quantized as exported.

For each model (random weights, batch norm statistics drawn away from their init values so the activations are
those of a working network): export fp32 ONNX, quantize it twice on the same calibration batches (``quantize_onnx``
with ``integer_activations`` on and off), count the float ops ONNX Runtime is left with after its QDQ fusions, and
time fp32, INT8 as exported and INT8 rewritten, interleaved in one process (batch 1, 224 px by default).

    .venv/bin/python benchmarks/int8_integer_activations.py --threads 2
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
from pathlib import Path

import torch

import mobilenets
from mobilenets.deploy import export_onnx, onnxruntime_op_types, onnxruntime_predictor, quantize_onnx
from mobilenets.deploy.bench import spread_batchnorm_, time_interleaved

FLOAT_OPS = {"Conv", "Add", "Mul", "Clip", "Gemm", "HardSwish", "HardSigmoid", "ReduceMean", "GlobalAveragePool"}


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
    print(f"batch {args.batch}, {args.resolution} px, {args.threads} threads, {args.rounds} x {args.iters} calls each")
    print(f"{'model':<20} {'fp32 ms':>8} {'INT8 as exported':>17} {'INT8 rewritten':>15} {'exported/fp32':>14} "
          f"{'rewritten/fp32':>15}  float ops left (as exported -> rewritten)")
    for name in args.models:
        model = spread_batchnorm_(mobilenets.create_model(name).eval(), gen)
        with tempfile.TemporaryDirectory() as tmp:
            fp32 = export_onnx(model, Path(tmp) / "fp32.onnx", size, dynamic_batch=True)
            plain = quantize_onnx(fp32, Path(tmp) / "plain.onnx", calibration, integer_activations=False)
            rewritten = quantize_onnx(fp32, Path(tmp) / "int8.onnx", calibration)
            left = {k: sum(v for op, v in onnxruntime_op_types(p).items() if op in FLOAT_OPS | {"QuantizeLinear", "DequantizeLinear"})
                    for k, p in (("plain", plain), ("rewritten", rewritten))}
            runners = {(k,): onnxruntime_predictor(p, args.threads)
                       for k, p in (("fp32", fp32), ("plain", plain), ("rewritten", rewritten))}
            samples = time_interleaved(runners, x, args.rounds, args.iters)
        med = {k[0]: statistics.median(v) * 1e3 for k, v in samples.items()}
        print(f"{name:<20} {med['fp32']:>8.2f} {med['plain']:>17.2f} {med['rewritten']:>15.2f} "
              f"{med['plain'] / med['fp32']:>14.3f} {med['rewritten'] / med['fp32']:>15.3f}  "
              f"{left['plain']} -> {left['rewritten']} (float ops and Q/DQ)", flush=True)


if __name__ == "__main__":
    main()
