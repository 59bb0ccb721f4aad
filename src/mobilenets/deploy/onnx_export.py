"""Export to ONNX and TorchScript, with a check that the exported file computes what PyTorch computes.

Exporter choice (torch 2.9+ made the ``torch.export``-based "dynamo" exporter the default):

* opset >= 18: the dynamo exporter. It emits opset 18 graphs natively, so lower targets would go through
  ONNX's version converter, which fails on this graph's ``ReduceMean`` (axes moved from input to attribute).
* opset 11-17: the TorchScript-based exporter (``dynamo=False``), still shipped though deprecated.

``HardSwish`` entered ONNX at opset 14 (``HardSigmoid`` has been there since opset 6): at opset >= 14 the
V3 activations are single native nodes, below that the exporter writes h-swish as ``x * HardSigmoid(x)``.
Batch norm is folded into the convs before export (:func:`~mobilenets.deploy.prepare.fold_batchnorm`), so the
graph holds no ``BatchNormalization`` node whichever exporter runs.

Both exporters write a mean over H and W (squeeze-and-excite's squeeze, the head's pooling) as ``ReduceMean``.
:func:`pool_spatial_means` turns it into ``GlobalAveragePool``, the same function, which ONNX Runtime's CPU
provider runs in its blocked channel layout (NCHWc) instead of converting the tensor out of that layout and
back around each squeeze-and-excite; ``export_onnx`` applies it unless ``optimize=False``.

Squeeze-and-excite's gate multiply, ``x * gate`` with the gate of shape (N, C, 1, 1), still leaves that layout:
ONNX Runtime keeps a ``Mul`` blocked only when both inputs have the same shape. :func:`expand_channel_gates`
repeats the gate over H and W with a nearest-neighbour ``Resize`` first, which ONNX Runtime also runs blocked.
That is an ONNX Runtime (CPU) matter, not a better graph in general, so it is opt-in:
``export_onnx(..., expand_gates=True)``, which the ``onnxruntime`` backend of ``make_predictor`` uses.

``export_onnx(..., dynamic_size=True)`` leaves height and width symbolic (segmentation models, whose logits
come at the input's size, and any other model: every model of the zoo runs at any size from its minimum).
A file that can take other sizes is verified at other sizes: :func:`verify_onnx` then also compares
:func:`other_sizes` of the export size (one smaller, one larger, odd and non-square) unless told which.
"""

from __future__ import annotations

import json
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence, Union

import torch
from torch import nn

from ..checkpoint import atomic_write
from ._deps import require
from .ort import onnxruntime_session
from .prepare import fold_batchnorm

__all__ = [
    "DEFAULT_OPSET",
    "MIN_OPSET",
    "MAX_OPSET",
    "ExportVerificationError",
    "VerifyResult",
    "expand_channel_gates",
    "export_onnx",
    "export_torchscript",
    "verify_onnx",
    "verify_torchscript",
    "onnx_op_types",
    "other_sizes",
    "pool_spatial_means",
    "read_onnx_metadata",
]

DEFAULT_OPSET = 18
MIN_OPSET = 11
MAX_OPSET = 23
_DYNAMO_MIN_OPSET = 18
_LEGACY_MAX_OPSET = 20
INPUT_NAME = "input"
OUTPUT_NAME = "logits"
DEFAULT_TOLERANCE = 1e-4
PathLike = Union[str, os.PathLike]


class ExportVerificationError(RuntimeError):
    """The exported file does not reproduce the PyTorch outputs within tolerance."""


@dataclass(frozen=True)
class VerifyResult:
    max_abs_diff: float
    tolerance: float
    batch_sizes: tuple[int, ...]
    top1_agreement: float  # of the argmax over classes: per image, or per pixel for (N, K, H, W) logits
    sizes: tuple[tuple[int, int], ...] = ()  # the (H, W) compared; () for a caller that does not say

    def __str__(self) -> str:
        # one size is the export's, which the caller prints beside this; several are a dynamic-size file's
        at = f" at {', '.join(f'{h}x{w}' for h, w in self.sizes)}" if len(self.sizes) > 1 else ""
        return (
            f"max |PyTorch - exported| = {self.max_abs_diff:.2e} (tolerance {self.tolerance:.0e}) "
            f"over batches {list(self.batch_sizes)}{at}, top-1 agreement {self.top1_agreement:.1%}"
        )


def _input_size(model: nn.Module, input_size: Optional[Sequence[int]]) -> tuple[int, int, int]:
    if input_size is None:
        info = getattr(model, "info", None)
        if info is None:
            raise ValueError("input_size is required for models without .info (e.g. (3, 224, 224))")
        input_size = info.input_size
    size = tuple(int(v) for v in input_size)
    if len(size) != 3:
        raise ValueError(f"input_size must be (channels, height, width), got {tuple(input_size)}")
    return size  # type: ignore[return-value]


def _smallest_side(model: nn.Module) -> int:
    """The smallest height or width ``model`` takes: its ``info.min_input_size``, else 32 (five stride-2 stages)."""
    return int(getattr(getattr(model, "info", None), "min_input_size", None) or 32)


def _check_opset(opset: int) -> None:
    if not MIN_OPSET <= opset <= MAX_OPSET:
        raise ValueError(f"opset must be in [{MIN_OPSET}, {MAX_OPSET}], got {opset}")


def _model_metadata(model: nn.Module, input_size: tuple[int, int, int]) -> dict[str, str]:
    """Preprocessing facts stored in the ONNX file's metadata_props so a runtime needs nothing else."""
    info = getattr(model, "info", None)
    meta = {"input_size": json.dumps(list(input_size)), "producer": "mobilenets"}
    if info is not None:
        meta.update(
            arch=info.arch,
            mean=json.dumps(list(info.mean)),
            std=json.dumps(list(info.std)),
            num_classes=str(info.options.num_classes),
        )
        class_names = info.extra.get("class_names")
        if class_names:
            meta["class_names"] = json.dumps(list(class_names))
    return meta


def _save_checked(proto: "onnx.ModelProto", model: nn.Module, size: tuple[int, int, int], path: str) -> None:
    """Write ``proto`` to ``path`` with the model's metadata, after ONNX's checker has passed it."""
    onnx = require("onnx")
    for key, value in _model_metadata(model, size).items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.checker.check_model(proto)
    onnx.save(proto, path)


def export_onnx(
    model: nn.Module,
    path: PathLike,
    input_size: Optional[Sequence[int]] = None,
    opset: int = DEFAULT_OPSET,
    dynamic_batch: bool = False,
    batch_size: int = 1,
    optimize: bool = True,
    expand_gates: bool = False,
    dynamic_size: bool = False,
) -> Path:
    """Write ``model`` (batch norm folded, eval mode) as an ONNX file at ``path``, atomically.

    ``dynamic_batch`` leaves the batch dimension symbolic; otherwise the graph is fixed to ``batch_size``.
    Spatial size is fixed to ``input_size`` (default: the model's ``info.input_size``), or with
    ``dynamic_size`` symbolic (``height``, ``width``; traced at ``input_size``, from the model's
    ``info.min_input_size`` up); a model whose logits have the input's size (segmentation) then has symbolic
    output height and width too. ``optimize`` applies the function-preserving rewrite
    :func:`pool_spatial_means`; ``False`` keeps the exporter's graph as it is. ``expand_gates`` also applies
    :func:`expand_channel_gates`, for ONNX Runtime's CPU provider; it repeats each gate to the map's H and W,
    so it refuses ``dynamic_size``.
    """
    onnx = require("onnx")
    _check_opset(opset)
    if expand_gates and dynamic_size:
        raise ValueError("expand_gates repeats each squeeze-excite gate to its map's height and width, which "
                         "dynamic_size leaves open: use one or the other")
    size = _input_size(model, input_size)
    folded = fold_batchnorm(model)
    # torch.export specialises dimensions of size 1, so trace a dynamic batch with 2 samples
    example = torch.randn((2 if dynamic_batch else batch_size, *size))
    spatial_axes: dict[int, str] = {}
    if dynamic_size:
        with torch.no_grad():
            out_shape = folded(example).shape
        spatial_axes = {2: "height", 3: "width"}
        # the output's H and W are the input's only where the model says so by its shape at the traced size
        out_spatial = {a: n for a, n in spatial_axes.items() if len(out_shape) == 4 and out_shape[a] == size[a - 1]}
    path = Path(path)

    def write(tmp: str) -> None:
        kwargs: dict = dict(
            input_names=[INPUT_NAME], output_names=[OUTPUT_NAME], opset_version=opset, verbose=False
        )
        with warnings.catch_warnings():
            # the legacy exporter warns that it is deprecated on every call; the choice is documented above
            warnings.simplefilter("ignore", category=DeprecationWarning)
            warnings.simplefilter("ignore", category=FutureWarning)
            if opset >= _DYNAMO_MIN_OPSET:
                dims = {0: torch.export.Dim("batch")} if dynamic_batch else {}
                dims.update({a: torch.export.Dim(n, min=_smallest_side(model)) for a, n in spatial_axes.items()})
                if dims:
                    kwargs["dynamic_shapes"] = (dims,)
                torch.onnx.export(folded, (example,), tmp, dynamo=True, external_data=False, **kwargs)
            else:
                inputs = {0: "batch"} if dynamic_batch else {}
                outputs = dict(inputs)
                if spatial_axes:
                    inputs.update(spatial_axes)
                    outputs.update(out_spatial)
                if inputs:
                    kwargs["dynamic_axes"] = {INPUT_NAME: inputs, OUTPUT_NAME: outputs}
                try:
                    torch.onnx.export(folded, (example,), tmp, dynamo=False, do_constant_folding=True, **kwargs)
                except torch.onnx.errors.SymbolicValueError as exc:
                    if not spatial_axes:
                        raise
                    # an op whose ONNX form needs a constant computed from H or W (the paper's LR-ASPP pool
                    # window): the tracer sees a shape-dependent value there
                    raise ValueError(
                        f"the TorchScript-based exporter (opset {opset}) cannot leave height and width symbolic "
                        f"for this model ({str(exc).splitlines()[0][:200]}); use opset >= {_DYNAMO_MIN_OPSET} or a "
                        "fixed size"
                    ) from None
        proto = onnx.load(tmp)
        if optimize:
            pool_spatial_means(proto)
        if expand_gates:
            expand_channel_gates(proto)
        _save_checked(proto, model, size, tmp)

    atomic_write(path, write)
    return path


def _inferred_value_infos(model: "onnx.ModelProto") -> dict:
    """Every tensor's ``ValueInfoProto`` after ONNX's shape inference (graph inputs, intermediate values and
    outputs), by name."""
    onnx = require("onnx")
    inferred = onnx.shape_inference.infer_shapes(model).graph
    return {v.name: v for v in (*inferred.input, *inferred.value_info, *inferred.output)}


def _dims(info: Optional["onnx.ValueInfoProto"]) -> Optional[list]:
    """Each dimension's size, or its symbol's name, or None where neither is known; None without a shape."""
    if info is None or not info.type.tensor_type.HasField("shape"):
        return None
    shape = info.type.tensor_type.shape.dim
    return [d.dim_value if d.HasField("dim_value") else (d.dim_param or None) for d in shape]


def pool_spatial_means(model: "onnx.ModelProto") -> int:
    """Rewrite, in place, every ``ReduceMean`` over both spatial axes of a 4-D tensor with ``keepdims=1`` into
    ``GlobalAveragePool`` (the same function); returns how many were rewritten. Means over other axes, or that
    drop the reduced axes, are left alone.

    ONNX Runtime's CPU provider runs ``GlobalAveragePool`` in its blocked NCHWc layout and has an integer
    kernel for it (``QLinearGlobalAveragePool``); it has neither for ``ReduceMean``.
    """
    onnx = require("onnx")
    helper = onnx.helper
    graph = model.graph
    initializers = {t.name: t for t in graph.initializer}
    infos = _inferred_value_infos(model)

    def spatial(node) -> bool:
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        if attrs.get("keepdims", 1) != 1 or len(_dims(infos.get(node.input[0])) or ()) != 4:
            return False
        if "axes" in attrs:  # opset < 18
            axes = list(attrs["axes"])
        elif len(node.input) > 1 and node.input[1] in initializers:
            axes = onnx.numpy_helper.to_array(initializers[node.input[1]]).ravel().tolist()
        else:
            return False
        return sorted(a % 4 for a in axes) == [2, 3]

    rewritten, dropped = 0, set()
    for i, node in enumerate(graph.node):
        if node.op_type == "ReduceMean" and node.domain in ("", "ai.onnx") and spatial(node):
            dropped.update(node.input[1:])
            pool = helper.make_node("GlobalAveragePool", [node.input[0]], [node.output[0]], name=node.name)
            graph.node[i].CopyFrom(pool)
            rewritten += 1
    used = {name for n in graph.node for name in n.input}
    for name in dropped - used:
        if name in initializers:
            graph.initializer.remove(initializers[name])
    return rewritten


def expand_channel_gates(model: "onnx.ModelProto") -> int:
    """Rewrite, in place, every ``Mul`` of a 4-D tensor ``x`` (N, C, H, W) by a gate of shape (N, C, 1, 1)
    (squeeze-and-excite) into ``Mul(x, Resize(gate))``, the gate repeated to (N, C, H, W) by a nearest-neighbour
    ``Resize`` with integer scales: the same function. Returns how many were rewritten; needs H and W known.

    ONNX Runtime's CPU provider runs convolutions, pooling, ``Resize`` and same-shape ``Mul`` in its blocked
    channel layout (NCHWc), but a broadcasting ``Mul`` in plain NCHW, so each gate multiply converts the
    feature map out of the blocked layout and back (two ``Reorder`` nodes over the whole tensor). Repeating the
    gate costs one write of the tensor instead. The repeated gate's shape is recorded as ``x``'s
    (``value_info``): ONNX's shape inference loses a symbolic batch through ``Resize``, and ONNX Runtime only
    keeps the ``Mul`` blocked when it can prove that both shapes are equal.
    """
    onnx = require("onnx")
    import numpy as np  # onnx's own dependency

    helper, numpy_helper = onnx.helper, onnx.numpy_helper
    graph = model.graph
    infos = _inferred_value_infos(model)

    def is_gate(gate: Optional[list], x: Optional[list]) -> bool:
        """(N, C, 1, 1) against (N, C, H, W): the same batch (size or symbol), C, H and W known, H * W > 1."""
        return (gate is not None and x is not None and len(gate) == len(x) == 4 and gate[0] is not None
                and gate[0] == x[0] and gate[2:] == [1, 1] and all(isinstance(d, int) for d in x[1:])
                and gate[1] == x[1] and x[2] * x[3] > 1)

    nodes, rewritten = [], 0
    for node in graph.node:
        is_binary_mul = node.op_type == "Mul" and len(node.input) == 2
        shapes = [_dims(infos.get(name)) for name in node.input] if is_binary_mul else []
        gate_at = next((i for i in range(len(shapes)) if is_gate(shapes[i], shapes[1 - i])), None)
        if gate_at is not None:
            x, gate = node.input[1 - gate_at], node.input[gate_at]
            height, width = shapes[1 - gate_at][2:]
            prefix = f"{node.name or node.output[0]}_gate"
            roi = numpy_helper.from_array(np.zeros(0, np.float32), f"{prefix}_roi")
            scales = numpy_helper.from_array(np.array([1, 1, height, width], np.float32), f"{prefix}_scales")
            graph.initializer.extend([roi, scales])
            repeated = f"{prefix}_repeated"
            nodes.append(helper.make_node(
                "Resize", [gate, roi.name, scales.name], [repeated], name=f"{prefix}_repeat", mode="nearest",
                coordinate_transformation_mode="asymmetric", nearest_mode="floor",
            ))
            info = graph.value_info.add()
            info.CopyFrom(infos[x])
            info.name = repeated
            node.input[gate_at] = repeated
            rewritten += 1
        nodes.append(node)
    del graph.node[:]
    graph.node.extend(nodes)
    return rewritten


def export_torchscript(
    model: nn.Module, path: PathLike, input_size: Optional[Sequence[int]] = None, batch_size: int = 1
) -> Path:
    """Trace the batch-norm-folded model and save it as TorchScript, atomically. The traced graph accepts any
    batch size (the model has no shape-dependent control flow on the batch dimension)."""
    size = _input_size(model, input_size)
    folded = fold_batchnorm(model)
    example = torch.randn((batch_size, *size))
    with torch.no_grad(), warnings.catch_warnings():
        # TorchScript is deprecated in favour of torch.export (FutureWarning on every call) but is still what
        # many C++ and mobile deployments load; the input-shape check is constant-folded away by tracing
        warnings.simplefilter("ignore", category=FutureWarning)
        warnings.simplefilter("ignore", category=DeprecationWarning)
        warnings.simplefilter("ignore", category=torch.jit.TracerWarning)
        traced = torch.jit.trace(folded, example, check_trace=False)
    path = Path(path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", category=FutureWarning)
        atomic_write(path, lambda tmp: torch.jit.save(traced, tmp))
    return path


def onnx_op_types(path: PathLike) -> dict[str, int]:
    """Count of every node type in the main graph of an ONNX file."""
    onnx = require("onnx")
    counts: dict[str, int] = {}
    for node in onnx.load(str(path)).graph.node:
        counts[node.op_type] = counts.get(node.op_type, 0) + 1
    return counts


def read_onnx_metadata(path: PathLike) -> dict[str, str]:
    onnx = require("onnx")
    return {p.key: p.value for p in onnx.load(str(path), load_external_data=False).metadata_props}


def _sample_inputs(
    size: tuple[int, int, int], batch_sizes: Sequence[int], seed: int, extra_sizes: Sequence[tuple[int, int]] = ()
) -> list[torch.Tensor]:
    """Random batches of each of ``batch_sizes`` at ``size``, then at each of ``extra_sizes`` (H, W)."""
    gen = torch.Generator().manual_seed(seed)
    spatial = [tuple(size[1:]), *(tuple(hw) for hw in extra_sizes)]
    return [torch.randn((b, size[0], *hw), generator=gen) for hw in spatial for b in batch_sizes]


def other_sizes(size: Sequence[int], smallest: int = 32) -> tuple[tuple[int, int], tuple[int, int]]:
    """Two (H, W) besides ``size``'s (its last two entries) to verify a file with symbolic height and width
    at: one about half as tall and a quarter wider, one a quarter taller and about half as wide, both
    non-square, with odd sides (the sizes where padding and the rounding of output-stride arithmetic differ
    from the export size's), none under ``smallest``."""
    height, width = (int(v) for v in size[-2:])
    return ((max(smallest, height // 2) | 1, (width + width // 4) | 1),
            ((height + height // 4) | 1, max(smallest, width // 2) | 1))


def _non_finite_weights(model: nn.Module) -> str:
    """"; the weights hold N non-finite values (first in NAME)" or "" when every weight is finite."""
    bad = [(name, int((~torch.isfinite(t)).sum())) for name, t in model.state_dict().items() if t.is_floating_point()]
    bad = [(name, n) for name, n in bad if n]
    if not bad:
        return ""
    return f"; the weights hold {sum(n for _, n in bad)} NaN/infinite values (first in {bad[0][0]})"


def _compare(
    reference: nn.Module,
    run: "callable",
    size: tuple[int, int, int],
    batch_sizes: Sequence[int],
    tolerance: float,
    seed: int,
    what: str,
    extra_sizes: Sequence[tuple[int, int]] = (),
) -> VerifyResult:
    reference = reference.eval()
    worst = 0.0
    agree = total = 0
    with torch.no_grad():
        for x in _sample_inputs(size, batch_sizes, seed, extra_sizes):
            expected = reference(x)
            got = run(x)
            if got.shape != expected.shape:
                raise ExportVerificationError(f"{what}: output shape {tuple(got.shape)} != PyTorch {tuple(expected.shape)}")
            # NaN or inf on both sides would compare as a difference of 0 (max() skips NaN): a model that
            # computes nothing finite is not verified
            for side, out in (("the PyTorch model's", expected), ("the exported file's", got)):
                bad = int((~torch.isfinite(out)).sum())
                if bad:
                    raise ExportVerificationError(
                        f"{what} not verified: {bad} of {side} {out.numel()} outputs on random inputs are NaN "
                        f"or infinite{_non_finite_weights(reference)}"
                    )
            worst = max(worst, (got - expected).abs().max().item())
            if expected.ndim in (2, 4):  # classes of images, or of pixels (segmentation)
                same = got.argmax(1) == expected.argmax(1)
                agree += same.sum().item()
                total += same.numel()
    sizes = (tuple(size[1:]), *(tuple(hw) for hw in extra_sizes))
    result = VerifyResult(worst, tolerance, tuple(batch_sizes), agree / total if total else 1.0, sizes)
    if not worst <= tolerance:  # also catches NaN
        raise ExportVerificationError(f"{what} does not match PyTorch: {result}")
    return result


def verify_onnx(
    model: nn.Module,
    path: PathLike,
    input_size: Optional[Sequence[int]] = None,
    batch_sizes: Optional[Sequence[int]] = None,
    tolerance: float = DEFAULT_TOLERANCE,
    seed: int = 0,
    label: Optional[str] = None,
    sizes: Optional[Sequence[tuple[int, int]]] = None,
) -> VerifyResult:
    """Run random inputs through ONNX Runtime and through ``model``; raise ExportVerificationError when the
    largest absolute output difference exceeds ``tolerance``, or when either side's outputs are not finite.

    ``batch_sizes`` defaults to the file's batch size, or 1 and 3 when the batch dimension is symbolic.
    ``input_size`` is the size compared; a file whose height and width are symbolic (``dynamic_size``) is also
    compared at ``sizes`` ((H, W) pairs, default :func:`other_sizes` of ``input_size``); a file of fixed size
    refuses ``sizes``. ``label`` names the file in errors (default ``"ONNX file PATH"``; an intermediate file is
    better named by what the user asked for).
    """
    size = _input_size(model, input_size)
    session = onnxruntime_session(path, optimization="all")
    shape = session.get_inputs()[0].shape
    if batch_sizes is None:
        batch_sizes = (shape[0],) if isinstance(shape[0], int) else (1, 3)
    fixed = [d for d in shape[2:] if isinstance(d, int)]
    if fixed and sizes:
        raise ValueError(f"{path} takes inputs of {shape[2]}x{shape[3]} only (export with dynamic_size=True to "
                         f"verify other sizes), got sizes {list(sizes)}")
    if fixed:
        sizes = ()
    elif sizes is None:
        sizes = other_sizes(size, _smallest_side(model))

    def run(x: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(session.run(None, {session.get_inputs()[0].name: x.numpy()})[0])

    return _compare(model, run, size, batch_sizes, tolerance, seed, label or f"ONNX file {path}", tuple(sizes))


def verify_torchscript(
    model: nn.Module,
    path: PathLike,
    input_size: Optional[Sequence[int]] = None,
    batch_sizes: Sequence[int] = (1, 3),
    tolerance: float = DEFAULT_TOLERANCE,
    seed: int = 0,
) -> VerifyResult:
    """Reload the TorchScript file and compare it with ``model`` like :func:`verify_onnx`."""
    size = _input_size(model, input_size)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", category=FutureWarning)
        loaded = torch.jit.load(str(path), map_location="cpu").eval()
    return _compare(model, loaded, size, batch_sizes, tolerance, seed, f"TorchScript file {path}")


# -- detectors ------------------------------------------------------------------------------------------------
# A detector (SSDLite) is exported up to its raw head outputs, "cls_logits" (N, A, classes) and
# "bbox_regression" (N, A, 4), on the preprocessed image (resized to the model's image_size, normalised). Box
# decoding, score threshold and NMS are not in the graph: the model's decode() runs them with torchvision's ops
# on the file's outputs (docs/detection.md).
DETECTOR_OUTPUTS = ("cls_logits", "bbox_regression")


class _RawHeads(nn.Module):
    def __init__(self, detector: nn.Module) -> None:
        super().__init__()
        self.detector = detector

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.detector.forward_raw(x)


def is_detector(model: nn.Module) -> bool:
    """A model whose export is its raw head outputs (it has ``forward_raw``, as SSDLite has)."""
    return callable(getattr(model, "forward_raw", None))


def export_detector_onnx(model: nn.Module, path: PathLike, opset: int = DEFAULT_OPSET,
                         dynamic_batch: bool = False) -> Path:
    """Write a detector's raw head outputs (:data:`DETECTOR_OUTPUTS`) for an input of the model's
    ``info.input_size`` as an ONNX file at ``path``, atomically, with the model's metadata."""
    onnx = require("onnx")
    _check_opset(opset)
    if not is_detector(model):
        raise ValueError(f"{type(model).__name__} has no forward_raw: export_detector_onnx takes a detector")
    size = _input_size(model, None)
    wrapped = _RawHeads(fold_batchnorm(model)).eval()
    example = torch.randn((2 if dynamic_batch else 1, *size))
    path = Path(path)

    def write(tmp: str) -> None:
        kwargs: dict = dict(input_names=[INPUT_NAME], output_names=list(DETECTOR_OUTPUTS), opset_version=opset)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", category=DeprecationWarning)
            warnings.simplefilter("ignore", category=FutureWarning)
            if opset >= _DYNAMO_MIN_OPSET:
                if dynamic_batch:
                    kwargs["dynamic_shapes"] = ({0: torch.export.Dim("batch")},)
                torch.onnx.export(wrapped, (example,), tmp, dynamo=True, external_data=False, **kwargs)
            else:
                if dynamic_batch:
                    kwargs["dynamic_axes"] = {n: {0: "batch"} for n in (INPUT_NAME, *DETECTOR_OUTPUTS)}
                torch.onnx.export(wrapped, (example,), tmp, dynamo=False, do_constant_folding=True, **kwargs)
        _save_checked(onnx.load(tmp), model, size, tmp)

    atomic_write(path, write)
    return path


def verify_detector_onnx(model: nn.Module, path: PathLike, batch_sizes: Sequence[int] = (1,),
                         tolerance: float = DEFAULT_TOLERANCE, seed: int = 0) -> VerifyResult:
    """Run ``path`` in ONNX Runtime and the model's ``forward_raw`` in PyTorch on the same random inputs in
    [-1, 1]; raise :class:`ExportVerificationError` when a raw output differs by more than ``tolerance``.
    ``top1_agreement`` is that of the best class per default box."""
    size = _input_size(model, None)
    session = onnxruntime_session(str(path))
    generator = torch.Generator().manual_seed(seed)
    worst, agree, total = 0.0, 0, 0
    model = model.eval()
    for n in batch_sizes:
        x = torch.rand((n, *size), generator=generator) * 2 - 1
        with torch.no_grad():
            expected = [t.numpy() for t in model.forward_raw(x)]
        got = session.run(list(DETECTOR_OUTPUTS), {INPUT_NAME: x.numpy()})
        for e, g in zip(expected, got):
            if e.shape != g.shape:
                raise ExportVerificationError(f"{path}: output of shape {g.shape}, PyTorch's is {e.shape}")
            worst = max(worst, float(abs(e - g).max()))
        agree += int((expected[0].argmax(-1) == got[0].argmax(-1)).sum())
        total += expected[0].shape[0] * expected[0].shape[1]
    result = VerifyResult(worst, tolerance, tuple(batch_sizes), agree / total, (tuple(size[1:]),))
    if worst > tolerance:
        raise ExportVerificationError(f"{path}: {result}")
    return result
