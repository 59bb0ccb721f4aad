"""Inference backends behind one interface: ``make_predictor(model, backend)`` returns a callable that maps a
float NCHW batch (already normalised, as the model expects) to logits, whatever runs underneath.

Backends:

* ``eager``: batch norm folded, channels-last, ``torch.inference_mode`` (see :mod:`.prepare`).
* ``compile``: the same module through ``torch.compile`` (Inductor, with freezing: weights folded and
  prepacked for oneDNN, see :func:`.prepare.compile_frozen`).
* ``onnxruntime``: the model exported to ONNX and run by an ONNX Runtime CPU session.
* ``onnxruntime-int8``: that ONNX file quantized to INT8 (QDQ, per-channel weights) on calibration images.
* ``inductor-int8``: PT2E INT8 (torchao's x86 Inductor quantizer) on calibration images, compiled by Inductor.
* ``openvino``: the ONNX export run by OpenVINO's CPU plugin in fp32 (``pip install 'mobilenets[openvino]'``).
* ``openvino-int8``: the same quantization (QDQ, per-channel weights, the same padded export and calibration)
  run by OpenVINO, which reads the QuantizeLinear/DequantizeLinear pairs and runs the quantized ops in
  integer; h-swish and h-sigmoid stay OpenVINO's native ops, which it fuses into its integer convs (the
  integer rewrite ONNX Runtime needs, :func:`~mobilenets.deploy.quantize.integer_friendly`, slows OpenVINO
  down on V3: benchmarks/results/int8.md).
* ``executorch``, ``executorch-int8``: the model lowered to ExecuTorch's XNNPACK delegate (fp32, or PT2E INT8
  with XNNPACK's quantizer on calibration images), run by ExecuTorch's Python runtime
  (``pip install 'mobilenets[mobile]'``, :mod:`.mobile`).
* ``litert``, ``litert-int8``: the model converted by litert-torch (fp32, or PT2E INT8), run by ai-edge-litert's
  interpreter (XNNPACK delegate).

The phone backends run files fixed to batch 1, so they take a batch one image at a time.
"""

from __future__ import annotations

import functools
import os
import tempfile
from pathlib import Path
from typing import Iterable, Optional, Sequence, Union

import torch
from torch import nn

from ._deps import require
from .onnx_export import DEFAULT_OPSET, export_onnx, onnx_op_types
from .ort import onnxruntime_session
from .predictor import Predictor
from .mobile import executorch_predictor, export_executorch, export_tflite, litert_predictor
from .prepare import prepare_for_inference
from .pt2e import inductor_int8_predictor
from .quantize import export_int8_source, quantize_onnx

__all__ = ["BACKENDS", "INT8_BACKENDS", "MOBILE_BACKENDS", "Predictor", "mobile_predictor", "make_predictor", "onnxruntime_session", "onnxruntime_op_types",
           "onnxruntime_predictor", "openvino_predictor"]

BACKENDS = ("eager", "compile", "onnxruntime", "onnxruntime-int8", "inductor-int8", "openvino", "openvino-int8",
            "executorch", "executorch-int8", "litert", "litert-int8")
# the backends that quantize, so need calibration images and have their accuracy measured, not assumed
INT8_BACKENDS = ("onnxruntime-int8", "inductor-int8", "openvino-int8", "executorch-int8", "litert-int8")
# the backends that run a phone runtime's file (mobile.py)
MOBILE_BACKENDS = ("executorch", "executorch-int8", "litert", "litert-int8")
# the INT8 backends that run a quantized ONNX (QDQ) file
INT8_ONNX_BACKENDS = ("onnxruntime-int8", "openvino-int8")
PathLike = Union[str, os.PathLike]

def onnxruntime_op_types(path: PathLike) -> dict[str, int]:
    """Count of every node type in the graph ONNX Runtime runs for the file at ``path``: after its extended
    optimizations, which fuse each DequantizeLinear-op-QuantizeLinear group of an INT8 file into its integer
    op (``QLinearConv``, ``QLinearMul``, ...), but before the hardware-specific layout passes."""
    with tempfile.TemporaryDirectory(prefix="mobilenets-ort-") as tmp:
        optimized = Path(tmp) / "optimized.onnx"
        onnxruntime_session(path, threads=1, optimization="extended", optimized_model=optimized)
        return onnx_op_types(optimized)


def onnxruntime_predictor(path: PathLike, threads: Optional[int] = None, spinning: bool = False) -> Predictor:
    """A :class:`Predictor` running the ONNX file at ``path`` on ONNX Runtime."""
    session = onnxruntime_session(path, threads, spinning=spinning)
    input_name = session.get_inputs()[0].name

    def predict(x: torch.Tensor) -> torch.Tensor:
        array = x.detach().to(torch.float32).contiguous().cpu().numpy()
        return torch.from_numpy(session.run(None, {input_name: array})[0])

    return Predictor(predict, path=Path(path), session=session)


OPENVINO_PRECISIONS = ("f32", "bf16", "f16", "default")


@functools.cache
def _openvino_core():
    """One ``ov.Core`` for the process, so one CPU plugin, created once and kept. Each plugin instance installs
    its own alternate signal stack on the thread that creates it and, when destroyed, puts back the one it
    replaced even if that one's plugin is gone and its memory unmapped (OpenVINO's ``SigAltStackSetup``). A Core
    per predictor, with predictors freed in any order but the reverse of their creation, left the thread's
    alternate stack dangling: the next signal with a handler (Ctrl-C; Python installs every handler with
    SA_ONSTACK) then died of SIGSEGV."""
    return require("openvino").Core()


def openvino_predictor(path: PathLike, threads: Optional[int] = None, precision: str = "f32") -> Predictor:
    """A :class:`Predictor` running the model file at ``path`` (ONNX, or OpenVINO's own ``.xml``) on OpenVINO's
    CPU plugin: ``threads`` inference threads (None: OpenVINO's default, every core), one stream, latency hint.
    Float ops run in ``precision`` (``INFERENCE_PRECISION_HINT``), fp32 by default: on a CPU with bf16 support
    OpenVINO's own default (``"default"``) runs an fp32 model in bf16, which changes its outputs. An INT8 (QDQ)
    file runs its quantized ops in integer either way."""
    if precision not in OPENVINO_PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(OPENVINO_PRECISIONS)}, got {precision!r}")
    require("openvino")  # names the extra when it is missing, even once a Core is cached
    if not Path(path).is_file():
        raise FileNotFoundError(f"model file not found: {path}")
    config: dict = {"NUM_STREAMS": 1, "PERFORMANCE_HINT": "LATENCY"}
    if precision != "default":
        config["INFERENCE_PRECISION_HINT"] = precision
    if threads is not None:
        config["INFERENCE_NUM_THREADS"] = threads
    compiled = _openvino_core().compile_model(str(path), "CPU", config)
    request = compiled.create_infer_request()

    def predict(x: torch.Tensor) -> torch.Tensor:
        request.infer({0: x.detach().to(torch.float32).contiguous().cpu().numpy()})
        return torch.from_numpy(request.get_output_tensor(0).data.copy())

    return Predictor(predict, path=Path(path), compiled=compiled)


def mobile_predictor(
    model: nn.Module,
    backend: str,
    workdir: PathLike,
    threads: Optional[int] = None,
    input_size: Optional[Sequence[int]] = None,
    calibration: Optional[Iterable[torch.Tensor]] = None,
    name: str = "model",
) -> Predictor:
    """A :class:`Predictor` for one of :data:`MOBILE_BACKENDS`: ``model`` exported to ``workdir/NAME.pte`` or
    ``.tflite`` (INT8 on ``calibration``), then run. ``threads``: the LiteRT interpreter's, or ExecuTorch's
    one thread pool for the process (:func:`~.mobile.executorch_predictor`)."""
    if backend not in MOBILE_BACKENDS:
        raise ValueError(f"unknown phone backend {backend!r}; accepted: {', '.join(MOBILE_BACKENDS)}")
    int8 = backend.endswith("-int8")
    suffix = ".int8" if int8 else ""
    if backend.startswith("executorch"):
        path = export_executorch(model, Path(workdir) / f"{name}{suffix}.pte", input_size, int8, calibration)
        return executorch_predictor(path, threads)
    path = export_tflite(model, Path(workdir) / f"{name}{suffix}.tflite", input_size, int8, calibration)
    return litert_predictor(path, threads)


def make_predictor(
    model: nn.Module,
    backend: str = "eager",
    threads: Optional[int] = None,
    input_size: Optional[Sequence[int]] = None,
    calibration: Optional[Iterable[torch.Tensor]] = None,
    workdir: Optional[PathLike] = None,
    channels_last: bool = True,
    opset: Optional[int] = None,
) -> Predictor:
    """Return a callable ``f(batch) -> logits`` running ``model`` on ``backend`` (one of :data:`BACKENDS`).

    ``threads`` sets ONNX Runtime's intra-op threads and OpenVINO's inference threads; PyTorch backends use the
    process-wide ``torch.set_num_threads`` (set it before calling). The ONNX backends export with a symbolic batch
    dimension at ``input_size`` (default ``model.info.input_size``): other spatial sizes are refused by the
    session. The INT8 backends (:data:`INT8_BACKENDS`) need ``calibration``, an iterable of input batches
    drawn from the data the model will see. ``opset`` picks the ONNX opset (and so the exporter, see :mod:`.onnx_export`).
    ONNX files go to ``workdir`` (default: a temporary folder kept alive by the predictor). The ``onnxruntime``
    backend's file repeats squeeze-excite gates for ONNX Runtime's blocked layout (``export_onnx(...,
    expand_gates=True)``); ``openvino`` runs the plain export. ``onnxruntime-int8`` runs
    :func:`~mobilenets.deploy.quantize.export_int8_onnx`'s file, ``openvino-int8`` the same quantization without
    the integer rewrite of h-swish and h-sigmoid.
    """
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; accepted: {', '.join(BACKENDS)}")
    model = model.eval()
    if backend in INT8_BACKENDS and calibration is None:
        raise ValueError(f"backend {backend!r} needs calibration batches (calibration=...)")
    if backend in ("eager", "compile"):
        return prepare_for_inference(model, channels_last=channels_last, compile=backend == "compile")
    if backend == "inductor-int8":
        return inductor_int8_predictor(model, calibration, input_size)

    tmp = None
    if workdir is None:
        tmp = tempfile.TemporaryDirectory(prefix="mobilenets-ort-")
        workdir = tmp.name
    arch = getattr(getattr(model, "info", None), "arch", "model")
    if backend in MOBILE_BACKENDS:
        return mobile_predictor(model, backend, workdir, threads, input_size, calibration, arch).with_workdir(tmp)
    require("openvino" if backend.startswith("openvino") else "onnxruntime")
    if backend in INT8_ONNX_BACKENDS:
        # export_int8_onnx's two steps; only ONNX Runtime needs h-swish and h-sigmoid rewritten into integer ops
        source = export_int8_source(model, Path(workdir) / f"{arch}.onnx", input_size=input_size, opset=opset)
        path = quantize_onnx(source, Path(workdir) / f"{arch}.int8.onnx", calibration,
                             integer_activations=backend == "onnxruntime-int8")
    else:
        path = export_onnx(model, Path(workdir) / f"{arch}.onnx", input_size=input_size, dynamic_batch=True,
                           opset=opset or DEFAULT_OPSET, expand_gates=backend == "onnxruntime")
    predict = openvino_predictor(path, threads) if backend.startswith("openvino") else onnxruntime_predictor(path, threads)
    return predict.with_workdir(tmp)
