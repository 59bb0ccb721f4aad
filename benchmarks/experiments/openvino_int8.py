"""Does another runtime's INT8 meet "INT8 <= 0.6x our best fp32" where ONNX Runtime's does not? OpenVINO on
this CPU, beside ONNX Runtime, interleaved in one process (benchmarks/results/speed.md, "Other runtimes").

Not a dependency of the library: ``pip install openvino nncf`` into the venv first. For each model (random
weights, batch-norm statistics spread as in ``benchmarks/experiments/ort_graph_changes.py``), batch 1 at 224 px:

* ``ort-fp32`` / ``ort-int8``: ONNX Runtime on our fp32 export and on our INT8 file
  (``export_int8_onnx``: QDQ, per-channel weights, integer end to end), as the ``onnxruntime`` and
  ``onnxruntime-int8`` backends run them (the fp32 file with repeated squeeze-excite gates);
* ``ov-fp32``: OpenVINO's CPU plugin on our plain fp32 export, with ``INFERENCE_PRECISION_HINT=f32`` (on a CPU
  with AMX or AVX-512 BF16 its default for an fp32 model is bf16, which is not fp32);
* ``ov-bf16``: the same file at OpenVINO's default precision on this CPU (bf16), for reference only;
* ``ov-int8-qdq``: OpenVINO on our INT8 file for ONNX Runtime (it reads QuantizeLinear/DequantizeLinear pairs
  as its own FakeQuantize and runs the convs in integer);
* ``ov-int8-native``: the same quantization of the same padded export, but with h-swish and h-sigmoid left as
  the exported ``HardSwish``/``HardSigmoid`` ops (``integer_activations=False``) instead of ``integer_friendly``'s
  rewrite for ONNX Runtime: OpenVINO fuses them into its integer convs; what ``openvino-int8`` runs;
* ``ov-int8-nncf``: NNCF's post-training quantization (OpenVINO's own tool, default "performance" preset) of
  the fp32 model, on the same calibration images.

Every runner is checked against the model on one image first. Threads: ``--threads`` for both runtimes, one
stream, latency hint, ONNX Runtime without spinning (the runtimes share the cores in turn).

    .venv/bin/python benchmarks/experiments/openvino_int8.py --threads 2
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
from pathlib import Path

import numpy as np
import torch

import mobilenets
from mobilenets.deploy import export_onnx, onnxruntime_predictor, openvino_predictor, quantize_onnx
from mobilenets.deploy.bench import spread_batchnorm_, time_interleaved
from mobilenets.deploy.quantize import export_int8_onnx, export_int8_source

COLUMNS = ("ort-fp32", "ort-int8", "ov-fp32", "ov-bf16", "ov-int8-qdq", "ov-int8-native", "ov-int8-nncf")
RATIOS = (  # (label, numerator, denominator)
    ("ort int8/fp32", "ort-int8", "ort-fp32"),
    ("ov qdq/fp32", "ov-int8-qdq", "ov-fp32"),
    ("ov native/fp32", "ov-int8-native", "ov-fp32"),
    ("ov nncf/fp32", "ov-int8-nncf", "ov-fp32"),
    ("ov fp32/ort fp32", "ov-fp32", "ort-fp32"),
    ("ov bf16/fp32", "ov-bf16", "ov-fp32"),
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", nargs="*", default=["mobilenet_v3_large", "mobilenet_v2"])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--iters", type=int, default=5)
    args = parser.parse_args()
    import nncf
    import onnxruntime
    import openvino as ov

    torch.set_num_threads(args.threads)
    core = ov.Core()
    capabilities = ", ".join(core.get_property("CPU", "OPTIMIZATION_CAPABILITIES"))
    print(f"OpenVINO {ov.__version__}, NNCF {nncf.__version__}, ONNX Runtime {onnxruntime.__version__}; CPU: "
          f"{core.get_property('CPU', 'FULL_DEVICE_NAME')}, {capabilities}")
    results = {}
    for name in args.models:
        gen = torch.Generator().manual_seed(0)
        model = spread_batchnorm_(mobilenets.create_model(name).eval(), gen)
        calibration = [torch.randn((4, 3, 224, 224), generator=gen) for _ in range(8)]
        with tempfile.TemporaryDirectory(prefix="mobilenets-ov-") as tmp:
            tmp = Path(tmp)
            plain = export_onnx(model, tmp / "fp32.onnx", dynamic_batch=True)
            gates = export_onnx(model, tmp / "fp32-gates.onnx", dynamic_batch=True, expand_gates=True)
            int8 = export_int8_onnx(model, tmp / "int8-source.onnx", tmp / "int8.onnx", calibration)
            native = quantize_onnx(export_int8_source(model, tmp / "native-source.onnx"), tmp / "int8-native.onnx",
                                   calibration, integer_activations=False)
            nncf_model = tmp / "int8-nncf.xml"
            ov.save_model(nncf.quantize(
                core.read_model(str(plain)),
                nncf.Dataset([b[i:i + 1].numpy() for b in calibration for i in range(len(b))]),
                subset_size=sum(len(b) for b in calibration),
            ), str(nncf_model))
            runners = {
                "ort-fp32": onnxruntime_predictor(gates, args.threads),
                "ort-int8": onnxruntime_predictor(int8, args.threads),
                "ov-fp32": openvino_predictor(plain, args.threads),
                "ov-bf16": openvino_predictor(plain, args.threads, precision="default"),
                "ov-int8-qdq": openvino_predictor(int8, args.threads),
                "ov-int8-native": openvino_predictor(native, args.threads),
                "ov-int8-nncf": openvino_predictor(nncf_model, args.threads),
            }
            x = torch.randn((1, 3, 224, 224), generator=torch.Generator().manual_seed(1))
            with torch.inference_mode():
                reference = model(x)
            scale = float(reference.abs().max())
            for key, run in runners.items():
                diff = float((run(x) - reference).abs().max())
                note = (f" (OpenVINO precision {run.compiled.get_property('INFERENCE_PRECISION_HINT')})"
                        if hasattr(run, "compiled") else "")
                print(f"{name} {key:<13} max |diff| {diff:.2e} of outputs up to {scale:.2f}{note}")
                bound = 1e-4 if key in ("ort-fp32", "ov-fp32") else 0.05
                if diff > bound * max(1.0, scale):
                    raise SystemExit(f"{name} {key}: output differs from the model by {diff:.3g}")
            samples = time_interleaved({(k,): r for k, r in runners.items()}, x, args.rounds, args.iters)
            results[name] = {k[0]: statistics.median(v) * 1e3 for k, v in samples.items()}
    print(f"\nmedian ms, batch 1, 224 px, {args.threads} threads, {args.rounds} x {args.iters} calls each")
    print(f"{'model':<20}" + "".join(f"{c:>16}" for c in COLUMNS))
    for name, med in results.items():
        print(f"{name:<20}" + "".join(f"{med[c]:>16.2f}" for c in COLUMNS))
    print(f"\n{'model':<20}" + "".join(f"{label:>18}" for label, _, _ in RATIOS) + f"{'best INT8/best fp32':>22}")
    for name, med in results.items():
        best_fp32 = min(med["ort-fp32"], med["ov-fp32"])
        best_int8 = min(med["ort-int8"], med["ov-int8-qdq"], med["ov-int8-native"], med["ov-int8-nncf"])
        print(f"{name:<20}" + "".join(f"{med[a] / med[b]:>18.3f}" for _, a, b in RATIOS)
              + f"{best_int8 / best_fp32:>22.3f}")


if __name__ == "__main__":
    main()
