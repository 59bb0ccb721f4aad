"""Inference speed: our backends beside torchvision's and timm's, in one interleaved run (docs/deployment.md).

Batch 1 at 224 px, ``--threads`` threads, for mobilenet_v2 and mobilenet_v3_large:

* our best fp32 path (eager with folded BN + channels-last, torch.compile with Inductor freezing, ONNX
  Runtime on our export, or OpenVINO on it when installed) <= 0.45x torchvision eager latency;
* our best fp32 path <= 1.0x ONNX Runtime running torchvision's own ``torch.onnx.export`` file;
* our best INT8 path (our QDQ file on ONNX Runtime or on OpenVINO, or PT2E compiled by Inductor) <= 0.6x our
  best fp32.

With the mobile extra installed, the phone runtimes join (issue #22): ExecuTorch's XNNPACK delegate and LiteRT, fp32
and INT8, on our export and on torchvision's, with the target our best fp32 <= 0.8x ONNX Runtime on
torchvision's export.

Also prints the CPU's fp32 matmul GFLOP/s (the compute ceiling) and each model's achieved GFLOP/s.
Compiling (``compile``, ``inductor-int8``) takes about half a minute per model and backend on a 2-core CPU;
``--no-compile`` leaves both out. The run (every row, the ceiling and the ratios) is appended to
``benchmarks/results/speed.json`` (``--results`` names another file).

    .venv/bin/python benchmarks/bench_speed.py --threads 2 --rounds 20 --iters 5 --no-compile
"""

from __future__ import annotations

import argparse
import importlib.util

import torch

from _results import add_results_option, add_timing_options, append_run
from mobilenets.deploy.bench import matmul_gflops, run_benchmark

# OpenVINO is optional (the openvino extra): its backends join when it is installed
OPENVINO = importlib.util.find_spec("openvino") is not None
# ExecuTorch and LiteRT are optional too (the mobile extra)
MOBILE = all(importlib.util.find_spec(m) is not None for m in ("executorch", "litert_torch", "ai_edge_litert"))
FP32 = ("eager", "compile", "onnxruntime", *(("openvino",) if OPENVINO else ()), *(("executorch", "litert") if MOBILE else ()))
INT8 = ("onnxruntime-int8", "inductor-int8", *(("openvino-int8",) if OPENVINO else ()),
        *(("executorch-int8", "litert-int8") if MOBILE else ()))
COMPILED = ("compile", "inductor-int8")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", nargs="*", default=["mobilenet_v2", "mobilenet_v3_large"])
    add_timing_options(parser, rounds=20)
    parser.add_argument("--implementations", default="mobilenets,torchvision,timm",
                        help="comma-separated (default mobilenets,torchvision,timm)")
    parser.add_argument("--no-compile", action="store_true",
                        help="leave out the Inductor backends, compile and inductor-int8 (slow to compile)")
    add_results_option(parser, "speed")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    ceiling_before = matmul_gflops(args.threads)
    ours = [b for b in (*FP32, *INT8) if not (args.no_compile and b in COMPILED)]
    rows = [
        r.to_dict()
        for r in run_benchmark(
            args.models, backends=ours, batches=[1], threads=args.threads,
            peer_backends=["eager", "onnxruntime", *(("executorch", "litert") if MOBILE else ())],
            resolution=224, implementations=args.implementations.split(","), rounds=args.rounds,
            iters_per_round=args.iters,
        )
    ]
    ceiling = max(ceiling_before, matmul_gflops(args.threads))
    print(f"fp32 matmul ceiling (1024^3, {args.threads} threads): {ceiling:.1f} GFLOP/s "
          f"(before {ceiling_before:.1f})\n")
    print(f"{'model':<20} {'impl':<12} {'backend':<17} {'median ms':>9} {'p90 ms':>8} {'GFLOP/s':>8} {'% ceiling':>9}")
    for r in rows:
        print(f"{r['model']:<20} {r['implementation']:<12} {r['backend']:<17} {r['latency_ms_median']:>9.2f} "
              f"{r['latency_ms_p90']:>8.2f} {r['gflops']:>8.2f} {100 * r['gflops'] / ceiling:>8.1f}%")
    summary = []
    for model in args.models:
        lat = {(r["implementation"], r["backend"]): r["latency_ms_median"] for r in rows if r["model"] == model}
        def fastest(backends: tuple[str, ...]) -> str:
            return min((b for b in backends if ("mobilenets", b) in lat), key=lambda b: lat[("mobilenets", b)])

        best_backend, int8_backend = fastest(FP32), fastest(INT8)
        best, int8 = lat[("mobilenets", best_backend)], lat[("mobilenets", int8_backend)]
        checks = {
            "best_fp32 / torchvision eager": (best / lat[("torchvision", "eager")], 0.45),
            "best_fp32 / torchvision onnxruntime": (best / lat[("torchvision", "onnxruntime")],
                                                    0.8 if MOBILE else 1.0),
            "best_int8 / best_fp32": (int8 / best, 0.6),
        }
        print(f"\n{model}: our best fp32 path is {best_backend} ({best:.2f} ms), best INT8 {int8_backend} ({int8:.2f} ms)")
        for name, (ratio, target) in checks.items():
            print(f"  {name:<38} {ratio:6.3f}  target <= {target}  {'MET' if ratio <= target else 'NOT MET'}")
        summary.append({"model": model, "best_fp32_backend": best_backend, "best_int8_backend": int8_backend,
                        "ratios": {k: v[0] for k, v in checks.items()}})
    path = append_run(args.results, {"ceiling_gflops": ceiling, "rows": rows, "summary": summary})
    print(f"\nappended to {path}")


if __name__ == "__main__":
    main()
