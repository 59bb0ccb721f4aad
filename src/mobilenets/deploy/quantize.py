"""Post-training static INT8 quantization with ONNX Runtime.

Scheme (ONNX Runtime's recommended CPU setup, onnxruntime.ai/docs/performance/model-optimizations/quantization):
QDQ format, signed INT8 weights quantized per output channel (depthwise convs have one filter per channel,
whose ranges differ by orders of magnitude, so one per-tensor scale would wipe out the small ones;
Krishnamoorthi, "Quantizing deep convolutional networks for efficient inference", 2018, Sec. 3.1),
unsigned INT8 activations per tensor, ranges calibrated on real images. ONNX Runtime then fuses each
DequantizeLinear -> Conv -> QuantizeLinear triple into one integer ``QLinearConv``.

Before calibration, :func:`integer_friendly` rewrites the three float ops of MobileNetV3 that ONNX Runtime's CPU
provider has no integer kernel for (``HardSwish``, ``HardSigmoid``, and the squeeze-excite ``ReduceMean``) into
equivalent ops it has (``Add``, ``Clip``, ``Mul``, ``GlobalAveragePool``). Left as they were, each of them sits
between a DequantizeLinear and a QuantizeLinear in float, which made INT8 V3 slower than fp32.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING, Iterable, Iterator, Optional, Sequence, Union

import numpy as np
import torch

from ..checkpoint import atomic_write
from ._deps import require
from .onnx_export import DEFAULT_OPSET, export_onnx, pool_spatial_means
from .prepare import pad_expanded_channels

if TYPE_CHECKING:
    import onnx

__all__ = [
    "CALIBRATION_METHODS", "TensorCalibrationReader", "export_int8_onnx", "export_int8_source", "integer_friendly",
    "quantize_onnx",
]

PathLike = Union[str, os.PathLike]
CALIBRATION_METHODS = ("minmax", "percentile", "entropy")
# ops whose integer kernels ONNX Runtime's CPU provider has; the rest stay float between Q/DQ pairs
_DEFAULT_OP_TYPES = ("Conv", "Gemm", "MatMul", "Add", "Mul", "GlobalAveragePool", "Relu", "Clip")


def integer_friendly(model: "onnx.ModelProto") -> dict[str, int]:
    """Rewrite, in place, the float-only ops of ``model`` into ops with integer kernels; returns counts by op.

    * ``HardSigmoid(x; alpha, beta)`` (alpha > 0) becomes ``Mul(Clip(Add(x, beta/alpha), 0, 1/alpha), alpha)``:
      the same function, since ``clip(alpha*x + beta, 0, 1) = alpha * clip(x + beta/alpha, 0, 1/alpha)``.
      ONNX Runtime's quantizer folds the ``Clip`` into the range of the ``Add``'s output, so h-sigmoid becomes
      one ``QLinearAdd`` and one ``QLinearMul``.
    * ``HardSwish(x)`` becomes ``Mul(x, HardSigmoid(x))`` with that h-sigmoid (alpha 1/6, beta 1/2).
    * ``ReduceMean`` over both spatial axes of a 4-D tensor with ``keepdims=1`` (the squeeze of
      squeeze-and-excite) becomes ``GlobalAveragePool``, which has ``QLinearGlobalAveragePool``
      (:func:`~mobilenets.deploy.onnx_export.pool_spatial_means`; our own exports already have it).

    The ``Mul`` by alpha is then removed where it can be: the tensor it fed holds the value times 1/alpha
    instead, and every convolution or matrix product that consumes it, directly or through ops that commute
    with a positive scale (pooling, reshapes, ReLU, the squeeze-excite product), has its weights divided by
    that factor. In V3 every h-swish and h-sigmoid output ends in a conv, so none of those ``Mul`` nodes
    remains: one integer op fewer per activation. If any path from such a tensor reaches a graph output or an
    op that does not commute with scaling (a residual ``Add``, say), or a weight is shared, the ``Mul`` nodes
    all stay.

    In float the rewritten graph computes the same within rounding. Anything else is left untouched.
    """
    onnx = require("onnx")
    numpy_helper = onnx.numpy_helper
    helper = onnx.helper
    graph = model.graph
    counts: dict[str, int] = {}
    pooled = pool_spatial_means(model)
    if pooled:
        counts["ReduceMean"] = pooled
    initializers = {t.name: t for t in graph.initializer}
    taken = {n.name for n in graph.node} | set(initializers) | {o for n in graph.node for o in n.output}
    new_nodes: list = []
    new_inits: list = []
    scalers: list = []  # (the Mul-by-alpha node, the Clip before it, alpha) of each h-sigmoid

    def fresh(stem: str) -> str:
        name, k = stem, 0
        while name in taken:
            k += 1
            name = f"{stem}_{k}"
        taken.add(name)
        return name

    def const(stem: str, value: float) -> str:
        name = fresh(stem)
        new_inits.append(numpy_helper.from_array(np.array(value, dtype=np.float32), name))
        return name

    def hard_sigmoid(x: str, out: str, alpha: float, beta: float, stem: str) -> None:
        shifted, clipped = fresh(f"{stem}/shifted"), fresh(f"{stem}/clipped")
        new_nodes.extend([
            helper.make_node("Add", [x, const(f"{stem}/offset", beta / alpha)], [shifted], name=fresh(f"{stem}/Add")),
            helper.make_node(
                "Clip", [shifted, const(f"{stem}/zero", 0.0), const(f"{stem}/top", 1.0 / alpha)], [clipped],
                name=fresh(f"{stem}/Clip"),
            ),
            helper.make_node("Mul", [clipped, const(f"{stem}/alpha", alpha)], [out], name=fresh(f"{stem}/Mul")),
        ])
        scalers.append((new_nodes[-1], new_nodes[-2], alpha))

    for node in graph.node:
        stem = node.name or node.output[0]
        if node.op_type == "HardSigmoid":
            attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
            alpha, beta = float(attrs.get("alpha", 0.2)), float(attrs.get("beta", 0.5))
            if alpha <= 0:
                new_nodes.append(node)
                continue
            hard_sigmoid(node.input[0], node.output[0], alpha, beta, stem)
        elif node.op_type == "HardSwish":
            gate = fresh(f"{stem}/gate")
            hard_sigmoid(node.input[0], gate, 1.0 / 6.0, 0.5, stem)
            new_nodes.append(helper.make_node("Mul", [node.input[0], gate], [node.output[0]], name=fresh(f"{stem}/Mul")))
        else:
            new_nodes.append(node)
            continue
        counts[node.op_type] = counts.get(node.op_type, 0) + 1
    if counts:
        weights = _fold_scalers(new_nodes, scalers, initializers, {o.name for o in graph.output})
        if weights is not None:
            for node, clip, _ in scalers:
                clip.output[0] = node.output[0]
                new_nodes.remove(node)
            for name, factor in weights.items():
                scaled = numpy_helper.to_array(initializers[name]) / np.float32(factor)
                initializers[name].CopyFrom(numpy_helper.from_array(scaled.astype(np.float32), name))
        del graph.node[:]
        graph.node.extend(new_nodes)
        used_inits = {i for n in new_nodes for i in n.input}
        graph.initializer.extend(t for t in new_inits if t.name in used_inits)
    return counts


# ops through which a positive scale of the first input passes unchanged to the output
_SCALE_COMMUTES = {"GlobalAveragePool", "ReduceMean", "AveragePool", "MaxPool", "Flatten", "Reshape", "Transpose",
                   "Squeeze", "Unsqueeze", "Identity", "Dropout", "Relu"}


def _fold_scalers(nodes: list, scalers: list, initializers: dict, outputs: set) -> Optional[dict[str, float]]:
    """For :func:`integer_friendly`: whether the ``scalers`` (``(Mul(t, alpha) node, Clip node, alpha)``) can
    be dropped, leaving their input, which is ``1/alpha`` times their output, in its place. Walks ``nodes``
    (topologically sorted) tracking the factor by which each tensor would exceed its current value, and returns
    the weight initializers to divide, with their factors, or ``None`` where some factor cannot be absorbed."""
    alphas = {id(n): alpha for n, _, alpha in scalers}
    factor: dict[str, float] = {}
    weights: dict[str, float] = {}
    uses: dict[str, int] = {}
    for node in nodes:
        for name in node.input:
            uses[name] = uses.get(name, 0) + 1

    def f(name: str) -> float:
        return factor.get(name, 1.0)

    for node in nodes:
        op, ins = node.op_type, list(node.input)
        if id(node) in alphas:
            factor[node.output[0]] = f(ins[0]) / alphas[id(node)]
        elif op in ("Conv", "Gemm", "MatMul") and f(ins[0]) != 1.0:
            w = ins[1]
            if w not in initializers or uses.get(w, 0) != 1 or any(f(i) != 1.0 for i in ins[1:]):
                return None
            weights[w] = f(ins[0])
        elif op == "Mul":
            out = f(ins[0]) * f(ins[1])
            if out != 1.0:
                factor[node.output[0]] = out
        elif op in _SCALE_COMMUTES:
            if f(ins[0]) != 1.0:
                factor[node.output[0]] = f(ins[0])
        elif any(f(i) != 1.0 for i in ins):
            return None
    if any(f(name) != 1.0 for name in outputs):
        return None
    return weights


def _reader_base():
    return require("onnxruntime.quantization").CalibrationDataReader


class TensorCalibrationReader:
    """Feeds calibration batches (torch tensors or numpy arrays, NCHW float) to ONNX Runtime's calibrator."""

    def __init__(self, input_name: str, batches: Iterable[Union[torch.Tensor, np.ndarray]]) -> None:
        self.input_name = input_name
        self._batches = batches
        self._iter: Optional[Iterator] = None
        self.seen = 0

    def get_next(self) -> Optional[dict[str, np.ndarray]]:
        if self._iter is None:
            self._iter = iter(self._batches)
        batch = next(self._iter, None)
        if batch is None:
            return None
        if isinstance(batch, torch.Tensor):
            batch = batch.detach().to(torch.float32).cpu().numpy()
        self.seen += batch.shape[0]
        return {self.input_name: np.ascontiguousarray(batch, dtype=np.float32)}



def quantize_onnx(
    fp32_path: PathLike,
    output: PathLike,
    calibration: Iterable[Union[torch.Tensor, np.ndarray]],
    method: str = "minmax",
    per_channel: bool = True,
    op_types: Optional[Sequence[str]] = _DEFAULT_OP_TYPES,
    integer_activations: bool = True,
    float_nodes: Sequence[str] = (),
) -> Path:
    """Quantize the ONNX file ``fp32_path`` to INT8 (QDQ) calibrated on ``calibration`` and write ``output``.

    ``calibration`` is an iterable of input batches, preprocessed as for inference. The file's batch
    dimension must accept the calibration batch size (export with ``dynamic_batch=True``).
    ``integer_activations`` first rewrites h-swish, h-sigmoid and the squeeze-excite mean with
    :func:`integer_friendly`, so they run in INT8 too; ``False`` quantizes the graph as exported.
    ``float_nodes``: names of nodes of the file to leave in float (ONNX Runtime's ``nodes_to_exclude``), e.g.
    the stem conv; an unknown name is an error.
    """
    quant = require("onnxruntime.quantization")
    onnx = require("onnx")
    if method not in CALIBRATION_METHODS:
        raise ValueError(f"method must be one of {', '.join(CALIBRATION_METHODS)}, got {method!r}")
    fp32_path = Path(fp32_path)
    if not fp32_path.is_file():
        raise FileNotFoundError(f"ONNX file not found: {fp32_path}")
    graph = onnx.load(str(fp32_path), load_external_data=False).graph
    input_name = graph.input[0].name
    unknown = sorted(set(float_nodes) - {n.name for n in graph.node})
    if unknown:
        raise ValueError(f"float_nodes not in {fp32_path.name}: {', '.join(unknown)} (nodes are named as in the file)")

    class Reader(TensorCalibrationReader, quant.CalibrationDataReader):
        pass

    batches = iter(calibration)
    first = next(batches, None)
    if first is None:
        raise ValueError("calibration data is empty: pass at least one batch of images")
    reader = Reader(input_name, itertools.chain([first], batches))
    calibrate_method = {
        "minmax": quant.CalibrationMethod.MinMax,
        "percentile": quant.CalibrationMethod.Percentile,
        "entropy": quant.CalibrationMethod.Entropy,
    }[method]
    output = Path(output)

    def write(tmp: str) -> None:
        source = str(fp32_path)
        if integer_activations:
            proto = onnx.load(source)
            if integer_friendly(proto):
                source = tmp + ".fp32.onnx"
                onnx.save(proto, source)
        try:
            with _without_preprocess_advice():
                quant.quantize_static(
                    source,
                    tmp,
                    reader,
                    quant_format=quant.QuantFormat.QDQ,
                    op_types_to_quantize=list(op_types) if op_types is not None else None,
                    per_channel=per_channel,
                    activation_type=quant.QuantType.QUInt8,
                    weight_type=quant.QuantType.QInt8,
                    calibrate_method=calibrate_method,
                    nodes_to_exclude=list(float_nodes),
                )
        finally:
            if source != str(fp32_path):
                os.unlink(source)

    atomic_write(output, write)
    return output


def export_int8_onnx(
    model: torch.nn.Module,
    fp32_path: PathLike,
    output: PathLike,
    calibration: Iterable[Union[torch.Tensor, np.ndarray]],
    input_size: Optional[Sequence[int]] = None,
    opset: Optional[int] = None,
) -> Path:
    """Our INT8 file of ``model``: :func:`export_int8_source` to ``fp32_path`` (kept), then
    :func:`quantize_onnx` to ``output``."""
    return quantize_onnx(export_int8_source(model, fp32_path, input_size, opset), output, calibration)


def export_int8_source(
    model: torch.nn.Module, fp32_path: PathLike, input_size: Optional[Sequence[int]] = None,
    opset: Optional[int] = None,
) -> Path:
    """The float file our INT8 files are quantized from: ``model`` with its expanded widths padded for ONNX
    Runtime's integer depthwise kernels (:func:`~mobilenets.deploy.prepare.pad_expanded_channels`, the same
    function), exported to ``fp32_path`` with a symbolic batch (the calibrator feeds whole batches)."""
    return export_onnx(pad_expanded_channels(model), fp32_path, input_size=input_size, dynamic_batch=True,
                       opset=opset or DEFAULT_OPSET)


class _PreprocessAdvice(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return "pre-processing before quantization" not in record.getMessage()


@contextlib.contextmanager
def _without_preprocess_advice() -> Iterator[None]:
    """ONNX Runtime logs, on the root logger, advice to run its ``quant_pre_process`` (shape inference and graph
    optimisation) on any file without its marker. Our exports already have batch norm folded and every shape
    known but the batch, so the advice is dropped for this call, and every other record passes."""
    root = logging.getLogger()
    advice = _PreprocessAdvice()
    root.addFilter(advice)
    try:
        yield
    finally:
        root.removeFilter(advice)
