"""Phone runtimes: ExecuTorch (``.pte``, XNNPACK delegate), LiteRT (``.tflite`` through litert-torch) and Core ML
(``.mlpackage`` through coremltools). Needs the ``mobile`` extra (``pip install 'mobilenets[mobile]'``).

Every file takes one image, batch 1 (a phone classifies one frame at a time), fp32 input at the model's
``input_size`` normalised as the model expects, NCHW unless stated (LiteRT's ``channels_last_io`` writes NHWC
input, the layout TensorFlow Lite apps feed). Batch norm is folded into the convs before export.

* ExecuTorch: ``torch.export`` -> ``to_edge_transform_and_lower`` with the XNNPACK partitioner. INT8: PT2E
  with XNNPACK's quantizer (symmetric, INT8 weights per output channel, INT8 activations per tensor), calibrated
  on real images; float input and output, the quantize/dequantize inside the file.
* LiteRT: ``litert_torch.convert``. INT8: PT2E with litert-torch's quantizer (same scheme); the file's input
  and output are then INT8 too, with their scale and zero point in the file (:func:`litert_predictor` applies
  them).
* Core ML: an ML program (iOS 17) in fp32 or fp16 compute precision. Core ML runs only on Apple systems:
  here the converted program is checked instead (:func:`coreml_program`), its ops, I/O names and shapes.

fp32 files are verified on export against PyTorch (max abs difference, default tolerance 1e-4, and finite
outputs): the same check as :func:`~mobilenets.deploy.onnx_export.verify_onnx`, run by ExecuTorch's Python
runtime and by ai-edge-litert's interpreter.
"""

from __future__ import annotations

import itertools
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Optional, Sequence, Union

import torch
from torch import nn

from ..checkpoint import atomic_write, check_output_path
from ._deps import require
from .onnx_export import DEFAULT_TOLERANCE, VerifyResult, _compare, _input_size, _model_metadata
from .predictor import Predictor
from .prepare import fold_batchnorm

__all__ = [
    "COREML_PRECISIONS",
    "CoreMLProgram",
    "coreml_program",
    "executorch_predictor",
    "export_coreml",
    "export_executorch",
    "export_tflite",
    "litert_predictor",
    "read_mobile_metadata",
    "remove_export",
    "verify_executorch",
    "verify_tflite",
]

PathLike = Union[str, os.PathLike]
COREML_PRECISIONS = ("float32", "float16")
# the ops of an ML program that compute (everything else Core ML reports is a constant)
_COREML_CONST_OPS = ("const",)


def _calibrate(prepared: torch.fx.GraphModule, calibration: Iterable[torch.Tensor], size: tuple) -> int:
    """Run every calibration batch through the observers one image at a time (the graph is exported at batch
    1); returns how many images were seen."""
    batches = iter(calibration)
    first = next(batches, None)
    if first is None:
        raise ValueError("calibration data is empty: pass at least one batch of images")
    seen = 0
    with torch.no_grad():
        for batch in itertools.chain([first], batches):
            if tuple(batch.shape[1:]) != size:
                raise ValueError(f"calibration batch of shape {tuple(batch.shape)}; expected (N, {', '.join(map(str, size))})")
            for image in batch.to(torch.float32).split(1):
                prepared(image)
                seen += 1
    return seen


def _exported(model: nn.Module, size: tuple, strict: bool = False) -> torch.export.ExportedProgram:
    """The batch-norm-folded model exported at batch 1 (``strict``: traced by TorchDynamo, which records each
    node's source function in ``source_fn_stack``)."""
    with torch.no_grad():
        return torch.export.export(fold_batchnorm(model).eval(), (torch.zeros((1, *size)),), strict=strict)


def _quantized_graph(
    model: nn.Module, size: tuple, quantizer, calibration: Iterable[torch.Tensor], strict: bool = False,
):
    """The model exported at batch 1, prepared for ``quantizer`` and calibrated; and torchao's PT2E module."""
    pt2e = require("torchao.quantization.pt2e.quantize_pt2e")
    prepared = pt2e.prepare_pt2e(_exported(model, size, strict).module(), quantizer)
    _calibrate(prepared, calibration, size)
    return prepared, pt2e


class _Int8Hardswish(nn.Module):
    """h-swish as ``x * (relu6(x + 3) * 1/6)``: an ADD with ReLU6 fused and two MULs, which LiteRT quantizes
    and XNNPACK runs in INT8. A single ``nn.Hardswish`` becomes TFLite's INT8 HARD_SWISH, which the XNNPACK
    delegate does not take (it has only an fp32 one): each ran on the interpreter's reference kernel and cut
    the delegated graph into pieces, so V3-Large's INT8 file ran slower than its fp32 one (docs/notes.md).
    The constants are (1, 1, 1, 1) tensors, not scalars: litert-torch's layout pass keeps an op with a 0-d
    operand in NCHW and wraps it in a transpose pair."""

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("three", torch.full((1, 1, 1, 1), 3.0), persistent=False)
        self.register_buffer("sixth", torch.full((1, 1, 1, 1), 1.0 / 6.0), persistent=False)

    def gate(self, x: torch.Tensor) -> torch.Tensor:
        return nn.functional.relu6(x + self.three) * self.sixth

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gate(x)


class _Int8Hardsigmoid(_Int8Hardswish):
    """The squeeze-excite gate ``relu6(x + 3) * 1/6``, quantized with its block (PT2E leaves a lone
    ``nn.Hardsigmoid`` in fp32, between a dequantize and a quantize)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.gate(x)


def _with_int8_gates(model: nn.Module) -> nn.Module:
    """A batch-norm-folded copy of ``model`` with every ``nn.Hardswish`` and ``nn.Hardsigmoid`` written as
    the elementwise ops above (the same function: the outputs agree to rounding)."""
    model = fold_batchnorm(model)
    for parent in list(model.modules()):
        for name, child in parent.named_children():
            if type(child) is nn.Hardswish:
                setattr(parent, name, _Int8Hardswish())
            elif type(child) is nn.Hardsigmoid:
                setattr(parent, name, _Int8Hardsigmoid())
    return model


# ---------------------------------------------------------------- metadata

# the name of the TFLite metadata entry that holds ours (TFLite's own, e.g. "min_runtime_version", sit beside it)
TFLITE_METADATA_NAME = "mobilenets"


def _mobile_metadata(model: nn.Module, size: tuple, layout: str) -> dict[str, str]:
    """The ONNX export's metadata (arch, mean, std, input_size, class names) and the input layout."""
    return {**_model_metadata(model, size), "layout": layout}


def _sidecar(path: Path) -> Path:
    return path.with_name(path.name + ".json")


def remove_export(path: PathLike) -> None:
    """Delete an exported file that failed its check, with the ``NAME.pte.json`` sidecar an ExecuTorch program
    has (an orphan sidecar would describe a program that is not there)."""
    path = Path(path)
    path.unlink(missing_ok=True)
    if path.suffix == ".pte":
        _sidecar(path).unlink(missing_ok=True)


def _write_sidecar(path: Path, meta: dict[str, str]) -> None:
    """ExecuTorch programs hold no free-form metadata: it goes beside the ``.pte``, as ``NAME.pte.json``."""
    atomic_write(_sidecar(path), lambda tmp: Path(tmp).write_text(json.dumps(meta, indent=1) + "\n"))


def _add_tflite_metadata(path: PathLike, meta: dict[str, str]) -> None:
    """Rewrite the flatbuffer at ``path`` with ``meta`` as JSON in a TFLite metadata entry."""
    flatbuffers = require("flatbuffers")
    schema = require("ai_edge_litert.schema_py_generated")
    model = schema.ModelT.InitFromPackedBuf(Path(path).read_bytes(), 0)
    buffer = schema.BufferT()
    buffer.data = list(json.dumps(meta).encode())
    model.buffers.append(buffer)
    entry = schema.MetadataT()
    entry.name, entry.buffer = TFLITE_METADATA_NAME, len(model.buffers) - 1
    model.metadata = [m for m in (model.metadata or []) if m.name != TFLITE_METADATA_NAME.encode()] + [entry]
    builder = flatbuffers.Builder(1024)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    Path(path).write_bytes(builder.Output())


def read_mobile_metadata(path: PathLike) -> dict[str, str]:
    """The metadata an exported phone file carries: arch, mean, std, input_size, num_classes, class_names
    (when the checkpoint names them), layout. Read from the ``.tflite``'s metadata entry, the
    ``.mlpackage``'s user-defined metadata, or the ``.pte``'s sidecar ``NAME.pte.json``."""
    path = Path(path)
    if path.suffix == ".pte":
        if not _sidecar(path).is_file():
            raise FileNotFoundError(f"{_sidecar(path)} not found: mobilenets writes it beside {path.name}")
        return json.loads(_sidecar(path).read_text())
    if path.suffix == ".tflite":
        schema = require("ai_edge_litert.schema_py_generated")
        model = schema.Model.GetRootAs(path.read_bytes(), 0)
        for i in range(model.MetadataLength()):
            if model.Metadata(i).Name() == TFLITE_METADATA_NAME.encode():
                return json.loads(model.Buffers(model.Metadata(i).Buffer()).DataAsNumpy().tobytes())
        raise ValueError(f"{path} has no {TFLITE_METADATA_NAME!r} metadata: not exported by mobilenets")
    if path.suffix == ".mlpackage":
        ct = require("coremltools")
        return dict(ct.utils.load_spec(str(path)).description.metadata.userDefined)
    raise ValueError(f"{path}: expected a .pte, .tflite or .mlpackage file")


# ---------------------------------------------------------------- ExecuTorch


def export_executorch(
    model: nn.Module,
    path: PathLike,
    input_size: Optional[Sequence[int]] = None,
    int8: bool = False,
    calibration: Optional[Iterable[torch.Tensor]] = None,
) -> Path:
    """Write ``model`` as an ExecuTorch program (``.pte``) lowered to the XNNPACK delegate, atomically.
    ``int8=True`` quantizes it first (PT2E, XNNPACK's quantizer) on ``calibration`` batches."""
    require("executorch.exir")
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
    from executorch.exir import to_edge_transform_and_lower

    size = _input_size(model, input_size)
    if int8:
        if calibration is None:
            raise ValueError("int8=True needs calibration batches (calibration=...)")
        from executorch.backends.xnnpack.quantizer.xnnpack_quantizer import (
            XNNPACKQuantizer, get_symmetric_quantization_config,
        )

        quantizer = XNNPACKQuantizer().set_global(get_symmetric_quantization_config(is_per_channel=True))
        prepared, pt2e = _quantized_graph(model, size, quantizer, calibration)
        with torch.no_grad():
            program = torch.export.export(pt2e.convert_pt2e(prepared), (torch.zeros((1, *size)),))
    else:
        program = _exported(model, size)
    lowered = to_edge_transform_and_lower(program, partitioner=[XnnpackPartitioner()]).to_executorch()
    path = Path(path)
    _write_sidecar(path, _mobile_metadata(model, size, "NCHW"))  # first: a .pte never lacks its sidecar
    atomic_write(path, lambda tmp: Path(tmp).write_bytes(lowered.buffer))
    return path


def _per_image(run_one):
    """``f(batch)`` from ``run_one(image of batch 1) -> (1, K)``: the files are fixed to batch 1."""

    def run(x: torch.Tensor) -> torch.Tensor:
        x = x.detach().to(torch.float32).contiguous().cpu()
        return torch.cat([run_one(image) for image in x.split(1)])

    return run


def executorch_predictor(path: PathLike, threads: Optional[int] = None) -> Predictor:
    """A :class:`Predictor` running the ``.pte`` file at ``path`` with ExecuTorch's Python runtime (the
    portable runtime and the XNNPACK delegate), one image at a time. ``threads`` resizes ExecuTorch's thread
    pool, which is one per process: it applies to every ExecuTorch predictor (None: leave it, one thread per
    core by default)."""
    runtime = require("executorch.runtime")
    if not Path(path).is_file():
        raise FileNotFoundError(f"ExecuTorch program not found: {path}")
    # the program is fixed to one input shape and ExecuTorch's own error for another is an opaque code
    expected = (1, *json.loads(read_mobile_metadata(path)["input_size"]))
    if threads is not None:
        require("executorch.extension.pybindings.portable_lib")._unsafe_reset_threadpool(threads)
    method = runtime.Runtime.get().load_program(Path(path)).load_method("forward")

    def run_one(image: torch.Tensor) -> torch.Tensor:
        if tuple(image.shape) != expected:
            raise ValueError(f"{path} takes input of shape {expected} (NCHW), got {tuple(image.shape)}")
        return method.execute([image])[0].clone()

    predict = _per_image(run_one)
    return Predictor(predict, path=Path(path), session=method)


def verify_executorch(
    model: nn.Module, path: PathLike, input_size: Optional[Sequence[int]] = None,
    tolerance: float = DEFAULT_TOLERANCE, seed: int = 0,
) -> VerifyResult:
    """Run random images through the ``.pte`` file and through ``model``; raise ExportVerificationError when
    the largest absolute output difference exceeds ``tolerance`` or either side is not finite."""
    run = executorch_predictor(path)
    return _compare(model, run, _input_size(model, input_size), (1, 3), tolerance, seed, f"ExecuTorch file {path}")


# ---------------------------------------------------------------- LiteRT


def export_tflite(
    model: nn.Module,
    path: PathLike,
    input_size: Optional[Sequence[int]] = None,
    int8: bool = False,
    calibration: Optional[Iterable[torch.Tensor]] = None,
    channels_last_io: bool = False,
) -> Path:
    """Write ``model`` as a LiteRT flatbuffer (``.tflite``) through litert-torch, atomically. Input NCHW
    (litert-torch adds the transpose to TensorFlow's NHWC inside the file), or NHWC with ``channels_last_io``.
    ``int8=True`` quantizes it (PT2E, litert-torch's quantizer) on ``calibration`` batches (NCHW); the file's
    input and output are then INT8."""
    litert_torch = require("litert_torch")
    size = _input_size(model, input_size)
    example = torch.zeros((1, *size))
    if int8:
        if calibration is None:
            raise ValueError("int8=True needs calibration batches (calibration=...)")
        from litert_torch.quantize.pt2e_quantizer import PT2EQuantizer, get_symmetric_quantization_config
        from litert_torch.quantize.quant_config import QuantConfig

        quantizer = PT2EQuantizer().set_global(
            get_symmetric_quantization_config(is_per_channel=True, is_dynamic=False)
        )
        # strict: litert-torch's quantizer finds adds and muls through source_fn_stack, which only a Dynamo
        # trace records; without it the residual adds and the squeeze-excite stayed fp32 between Q/DQ pairs
        prepared, pt2e = _quantized_graph(_with_int8_gates(model), size, quantizer, calibration, strict=True)
        source: nn.Module = pt2e.convert_pt2e(prepared, fold_quantize=False)
        options: dict = {"quant_config": QuantConfig(pt2e_quantizer=quantizer)}
    else:
        source, options = fold_batchnorm(model).eval(), {}
    if channels_last_io:
        source = litert_torch.to_channel_last_io(source, args=[0]).eval()
        example = example.permute(0, 2, 3, 1).contiguous()
    with torch.no_grad():
        converted = litert_torch.convert(source, (example,), **options)
    path = Path(path)
    meta = _mobile_metadata(model, size, "NHWC" if channels_last_io else "NCHW")

    def write(tmp: str) -> None:
        converted.export(tmp)
        _add_tflite_metadata(tmp, meta)

    atomic_write(path, write)
    return path


def litert_predictor(path: PathLike, threads: Optional[int] = None, channels_last_io: bool = False) -> Predictor:
    """A :class:`Predictor` running the ``.tflite`` file at ``path`` on ai-edge-litert's interpreter (its
    XNNPACK delegate, ``threads`` threads; None: the interpreter's default), one image at a time. Takes NCHW
    batches whatever the file's layout (``channels_last_io``: the file wants NHWC); quantizes the input and
    dequantizes the output of an INT8 file with the scale and zero point stored in it."""
    interpreter_module = require("ai_edge_litert.interpreter")
    if not Path(path).is_file():
        raise FileNotFoundError(f"LiteRT file not found: {path}")
    interpreter = interpreter_module.Interpreter(model_path=str(path), num_threads=threads)
    interpreter.allocate_tensors()
    inp, out = interpreter.get_input_details()[0], interpreter.get_output_details()[0]
    expected = tuple(int(d) for d in inp["shape"])
    layout = "NHWC" if channels_last_io else "NCHW"
    import numpy as np  # ai-edge-litert's own dependency

    def run_one(image: torch.Tensor) -> torch.Tensor:
        array = image.permute(0, 2, 3, 1).numpy() if channels_last_io else image.numpy()
        if tuple(array.shape) != expected:
            raise ValueError(f"{path} takes input of shape {expected} ({layout}), got {tuple(array.shape)} "
                             f"(channels_last_io={channels_last_io})")
        if inp["dtype"] != np.float32:
            scale, zero = inp["quantization"]
            info = np.iinfo(inp["dtype"])
            array = np.clip(np.round(array / scale) + zero, info.min, info.max)
        interpreter.set_tensor(inp["index"], np.ascontiguousarray(array, dtype=inp["dtype"]))
        interpreter.invoke()
        result = interpreter.get_tensor(out["index"])
        if out["dtype"] != np.float32:
            scale, zero = out["quantization"]
            result = (result.astype(np.float32) - zero) * scale
        return torch.from_numpy(np.array(result, dtype=np.float32))

    return Predictor(_per_image(run_one), path=Path(path), session=interpreter)


def verify_tflite(
    model: nn.Module, path: PathLike, input_size: Optional[Sequence[int]] = None,
    tolerance: float = DEFAULT_TOLERANCE, seed: int = 0, channels_last_io: bool = False,
) -> VerifyResult:
    """:func:`verify_executorch` for a LiteRT file, run by ai-edge-litert's interpreter."""
    run = litert_predictor(path, threads=1, channels_last_io=channels_last_io)
    return _compare(model, run, _input_size(model, input_size), (1, 3), tolerance, seed, f"LiteRT file {path}")


# ---------------------------------------------------------------- Core ML


@dataclass(frozen=True)
class CoreMLProgram:
    """What a converted Core ML program holds: its inputs and outputs (name -> shape), the count of each
    computing op, and the compute precision of its float tensors."""

    inputs: dict[str, tuple[int, ...]]
    outputs: dict[str, tuple[int, ...]]
    ops: dict[str, int]
    precision: str

    def __str__(self) -> str:
        ops = ", ".join(f"{k} {v}" for k, v in sorted(self.ops.items()))
        return f"inputs {self.inputs}, outputs {self.outputs}, {self.precision}; ops: {ops}"


def _coreml_convert(model: nn.Module, size: tuple, precision: str):
    ct = require("coremltools")
    program = _exported(model, size).run_decompositions({})
    compute = {"float32": ct.precision.FLOAT32, "float16": ct.precision.FLOAT16}[precision]
    # skip_model_load: Core ML's compiler and runtime exist only on Apple systems; converting needs neither
    return ct.convert(
        program, convert_to="mlprogram", minimum_deployment_target=ct.target.iOS17,
        compute_precision=compute, skip_model_load=True,
        inputs=[ct.TensorType(name="image", shape=(1, *size))], outputs=[ct.TensorType(name="logits")],
    )


def export_coreml(
    model: nn.Module, path: PathLike, input_size: Optional[Sequence[int]] = None, precision: str = "float32",
) -> Path:
    """Write ``model`` as a Core ML ML program (an ``.mlpackage`` folder, iOS 17 and later) in ``precision``
    (``"float32"`` or ``"float16"`` compute), replacing ``path`` only once the new package is complete.
    Input ``image`` (1, C, H, W), output ``logits`` (1, classes)."""
    if precision not in COREML_PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(COREML_PRECISIONS)}, got {precision!r}")
    path = Path(path)
    if path.suffix != ".mlpackage":
        raise ValueError(f"{path}: a Core ML ML program is an .mlpackage folder; name it NAME.mlpackage")
    if path.exists() and not (path / "Manifest.json").is_file():
        raise ValueError(f"{path} exists and is not an .mlpackage: refusing to replace it")
    check_output_path(path.parent / f".{path.name}.check")  # the folder can be written, before the work
    size = _input_size(model, input_size)
    converted = _coreml_convert(model, size, precision)
    converted.user_defined_metadata.update(_mobile_metadata(model, size, "NCHW"))
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=f".{path.name}.", dir=path.parent) as tmp:
        staged = Path(tmp) / path.name
        converted.save(str(staged))
        old = Path(tmp) / "old"
        if path.exists():
            os.replace(path, old)  # a folder cannot be renamed over a non-empty one; the old one goes last
        os.replace(staged, path)
    return path


def coreml_program(path: PathLike) -> CoreMLProgram:
    """Read the ML program of the ``.mlpackage`` at ``path`` without running it (Core ML runs only on Apple
    systems): its inputs, outputs, ops and precision."""
    ct = require("coremltools")
    spec = ct.utils.load_spec(str(path))
    if not spec.HasField("mlProgram"):
        raise ValueError(f"{path} is not an ML program (its model type is {spec.WhichOneof('Type')})")

    def shapes(features) -> dict[str, tuple[int, ...]]:
        return {f.name: tuple(int(d) for d in f.type.multiArrayType.shape) for f in features}

    ops: dict[str, int] = {}
    precisions = set()
    for function in spec.mlProgram.functions.values():
        for block in function.block_specializations.values():
            for op in block.operations:
                if op.type not in _COREML_CONST_OPS:
                    ops[op.type] = ops.get(op.type, 0) + 1
                    for output in op.outputs:
                        dtype = output.type.tensorType.dataType
                        if dtype in (ct.proto.MIL_pb2.FLOAT16, ct.proto.MIL_pb2.FLOAT32):
                            precisions.add("float16" if dtype == ct.proto.MIL_pb2.FLOAT16 else "float32")
    precision = "/".join(sorted(precisions)) or "none"
    return CoreMLProgram(shapes(spec.description.input), shapes(spec.description.output), ops, precision)
