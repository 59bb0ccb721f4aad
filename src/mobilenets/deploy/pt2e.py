"""INT8 through PyTorch 2 export quantization (PT2E) and Inductor: the ``inductor-int8`` backend.

Scheme (torchao's ``X86InductorQuantizer`` default static config, as in PyTorch's tutorial "PyTorch 2 Export
Quantization with X86 Backend through Inductor"): INT8 weights symmetric per
output channel, UINT8 activations per tensor with min/max observers, calibrated on real images. The
converted graph is then compiled by Inductor with ``freezing`` on, which constant-folds the weights,
prepacks them for oneDNN and fuses each quantized conv with its activation (ReLU6 as hardtanh, and
h-swish: oneDNN has an integer conv + hardswish post-op, which ONNX Runtime's CPU kernels lack; on CPUs with
AVX512-VNNI/AMX those convs run on the integer units).

``torch.ao.quantization.quantize_pt2e`` was removed from PyTorch (2.14); the API lives in torchao now, part
of the ``export`` extra.
"""

from __future__ import annotations

import itertools
from typing import Iterable, Optional, Sequence

import torch
from torch import nn

from ._deps import require
from .predictor import Predictor
from .prepare import compile_frozen, fold_batchnorm

__all__ = ["quantize_pt2e", "inductor_int8_predictor"]


def _input_size(model: nn.Module, input_size: Optional[Sequence[int]]) -> tuple[int, ...]:
    if input_size is not None:
        return tuple(input_size)
    info = getattr(model, "info", None)
    if info is None:
        raise ValueError("input_size is needed for a model without .info (C, H, W)")
    return tuple(info.input_size)


def quantize_pt2e(
    model: nn.Module,
    calibration: Iterable[torch.Tensor],
    input_size: Optional[Sequence[int]] = None,
) -> torch.fx.GraphModule:
    """Post-training static INT8 quantization of ``model`` with torchao's PT2E flow and the x86 Inductor
    quantizer, calibrated on ``calibration`` (an iterable of NCHW float batches, preprocessed as for inference).

    Returns the converted graph (quantize/dequantize ops around float ops) with a symbolic batch dimension;
    it runs as is (slowly, in float) and becomes integer code once compiled (:func:`compile_frozen`).
    """
    pt2e = require("torchao.quantization.pt2e.quantize_pt2e")
    x86 = require("torchao.quantization.pt2e.quantizer.x86_inductor_quantizer")
    size = _input_size(model, input_size)
    batches = iter(calibration)
    first = next(batches, None)
    if first is None:
        raise ValueError("calibration data is empty: pass at least one batch of images")
    # our folding where it applies (ConvNormAct); prepare_pt2e folds any other conv + batch norm pair itself
    folded = fold_batchnorm(model)
    # batch 2 as the example: export specialises a size-1 dimension, and the batch must stay symbolic
    example = torch.zeros((2, *size))
    with torch.no_grad():
        exported = torch.export.export(folded, (example,), dynamic_shapes=({0: torch.export.Dim.AUTO},))
        quantizer = x86.X86InductorQuantizer()
        quantizer.set_global(x86.get_default_x86_inductor_quantization_config())
        prepared = pt2e.prepare_pt2e(exported.module(), quantizer)
        for batch in itertools.chain([first], batches):
            if tuple(batch.shape[1:]) != size:
                expected = ", ".join(map(str, size))
                raise ValueError(f"calibration batch of shape {tuple(batch.shape)}; expected (N, {expected})")
            prepared(batch.to(torch.float32))
        return pt2e.convert_pt2e(prepared)


def inductor_int8_predictor(
    model: nn.Module,
    calibration: Iterable[torch.Tensor],
    input_size: Optional[Sequence[int]] = None,
) -> Predictor:
    """A :class:`Predictor` ``f(batch) -> logits`` running ``model`` quantized by :func:`quantize_pt2e` and compiled by
    Inductor. Compilation happens on the first call of each batch shape (tens of seconds on a small CPU)."""
    converted = quantize_pt2e(model, calibration, input_size)
    compiled = compile_frozen(converted)

    def predict(x: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode():
            return compiled(x.to(torch.float32))

    return Predictor(predict, module=converted)
