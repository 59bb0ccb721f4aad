"""Where ONNX Runtime spends a model's time, by op type: fp32, and INT8 (ours, rewritten) after its fusions.

Exports ``MODEL`` (random weights, batch-norm statistics drawn away from their init values), quantizes it with
``quantize_onnx`` on random calibration batches, runs both files ``--runs`` times at batch 1 with ONNX
Runtime's profiler on, and prints each op type's share of the summed kernel time and its milliseconds per run.

    .venv/bin/python benchmarks/ort_profile.py mobilenet_v3_large --threads 1
"""

from __future__ import annotations

import argparse
import collections
import json
import tempfile
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch

import mobilenets
from mobilenets.deploy import export_onnx, quantize_onnx
from mobilenets.deploy.bench import spread_batchnorm_


def profile(path: Path, threads: int, runs: int, x: np.ndarray, prefix: str) -> collections.Counter:
    opts = ort.SessionOptions()
    opts.intra_op_num_threads, opts.inter_op_num_threads = threads, 1
    opts.enable_profiling = True
    opts.profile_file_prefix = prefix
    session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    warmup = 5
    for _ in range(warmup + runs):
        session.run(None, {"input": x})
    trace = json.loads(Path(session.end_profiling()).read_text())
    # one kernel event per node and run, in order: drop the warm-up runs' events
    nodes = [e for e in trace if e.get("cat") == "Node" and e["name"].endswith("_kernel_time")]
    per_run = len(nodes) // (warmup + runs)
    by_op: collections.Counter = collections.Counter()
    for event in nodes[warmup * per_run:]:
        by_op[event["args"]["op_name"]] += event["dur"]
    return by_op


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
    with tempfile.TemporaryDirectory() as tmp:
        fp32 = export_onnx(model, Path(tmp) / "fp32.onnx", size, dynamic_batch=True)
        int8 = quantize_onnx(fp32, Path(tmp) / "int8.onnx", [torch.randn(8, *size, generator=gen) for _ in range(4)])
        for name, path in (("fp32", fp32), ("int8", int8)):
            by_op = profile(path, args.threads, args.runs, x, str(Path(tmp) / name))
            total = sum(by_op.values())
            print(f"{args.model} {name}, {args.threads} thread(s): {total / args.runs / 1e3:.2f} ms of kernels per run")
            for op, us in by_op.most_common():
                print(f"  {op:<26} {100 * us / total:5.1f}%  {us / args.runs / 1e3:6.3f} ms")


if __name__ == "__main__":
    main()
