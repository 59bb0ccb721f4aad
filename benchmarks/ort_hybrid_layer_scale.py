"""ONNX Runtime latency of MobileNetV4 Hybrid-M with untrained (1e-5) and order-1 layer scales.

At their 1e-5 init the layer scales shrink activations into float32's subnormal range, which CPUs compute
slowly; ONNX Runtime's ``session.set_denormal_as_zero`` flushes them. Batch 1, 224 px, 2 threads, the three
sessions timed one after another, twice; prints the median ms of each block of 60 calls (quoted in
docs/models.md; nothing is written).

    .venv/bin/python benchmarks/ort_hybrid_layer_scale.py
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import onnxruntime as ort
import torch

import mobilenets
from mobilenets.deploy import export_onnx


def session(path: Path, denormal_as_zero: bool) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads = 2, 1
    if denormal_as_zero:
        options.add_session_config_entry("session.set_denormal_as_zero", "1")
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def main() -> None:
    argparse.ArgumentParser(description=__doc__.splitlines()[0]).parse_args()
    torch.manual_seed(0)
    model = mobilenets.create_model("mobilenet_v4_hybrid_medium").eval()
    folder = Path(tempfile.mkdtemp())
    init = export_onnx(model, folder / "init.onnx", (3, 224, 224), opset=17)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, mobilenets.LayerScale):
                m.gamma.uniform_(0.5, 1.5)
    order1 = export_onnx(model, folder / "order1.onnx", (3, 224, 224), opset=17)
    runs = {
        "layer scales 1e-5 (init)": session(init, False),
        "layer scales 1e-5, denormal_as_zero": session(init, True),
        "layer scales in [0.5, 1.5]": session(order1, False),
    }
    x = torch.randn(1, 3, 224, 224).numpy()
    # block by block, two rounds: sessions run interleaved call by call fight over ONNX Runtime's spinning
    # thread pools (benchmarks/experiments/ort_spinning.py)
    for round_ in (1, 2):
        for name, s in runs.items():
            feed = {s.get_inputs()[0].name: x}
            for _ in range(10):
                s.run(None, feed)
            times = []
            for _ in range(60):
                start = time.perf_counter()
                s.run(None, feed)
                times.append(time.perf_counter() - start)
            print(f"round {round_}  {name:<40} {statistics.median(times) * 1e3:7.2f} ms")

if __name__ == "__main__":
    main()
