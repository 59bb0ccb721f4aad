"""ONNX Runtime latency with intra-op thread spinning off (our default) and on (ONNX Runtime's default).

Each measurement is a block: open a session for one (model, precision, spinning) setting, warm it up, time
``--calls`` calls at batch 1, close it. Blocks of all settings alternate for ``--repeats`` rounds, so spinning
threads of one setting never overlap another's timing. Prints per-setting medians over all calls.

    .venv/bin/python benchmarks/experiments/ort_spinning.py --threads 2
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch

import mobilenets
from mobilenets.deploy import export_onnx, onnxruntime_session, quantize_onnx


def block(path: Path, threads: int, spin: bool, x, calls: int) -> list[float]:
    session = onnxruntime_session(path, threads, spinning=spin)  # our predictors' session, spinning aside
    for _ in range(5):
        session.run(None, {"input": x})
    times = []
    for _ in range(calls):
        start = time.perf_counter()
        session.run(None, {"input": x})
        times.append(time.perf_counter() - start)
    del session
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", nargs="*", default=["mobilenet_v3_large", "mobilenet_v2"])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--calls", type=int, default=40)
    parser.add_argument("--repeats", type=int, default=4)
    args = parser.parse_args()
    gen = torch.Generator().manual_seed(0)
    size = (3, 224, 224)
    x = torch.randn(1, *size, generator=gen).numpy()
    print(f"batch 1, 224 px, {args.threads} threads, {args.repeats} blocks x {args.calls} calls per setting")
    with tempfile.TemporaryDirectory() as tmp:
        files = {}
        for name in args.models:
            model = mobilenets.create_model(name).eval()
            fp32 = export_onnx(model, Path(tmp) / f"{name}.onnx", size, dynamic_batch=True)
            calibration = [torch.randn(8, *size, generator=gen) for _ in range(4)]
            files[(name, "fp32")] = fp32
            files[(name, "int8")] = quantize_onnx(fp32, Path(tmp) / f"{name}.int8.onnx", calibration)
        samples: dict[tuple, list[float]] = {}
        for _ in range(args.repeats):
            for (name, precision), path in files.items():
                for spin in (False, True):
                    samples.setdefault((name, precision, spin), []).extend(block(path, args.threads, spin, x, args.calls))
    print(f"{'model':<20} {'precision':<9} {'spin off ms':>11} {'spin on ms':>10} {'on / off':>8}")
    for (name, precision) in files:
        off = statistics.median(samples[(name, precision, False)]) * 1e3
        on = statistics.median(samples[(name, precision, True)]) * 1e3
        print(f"{name:<20} {precision:<9} {off:>11.2f} {on:>10.2f} {on / off:>8.3f}")


if __name__ == "__main__":
    main()
