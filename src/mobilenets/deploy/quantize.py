"""Post-training static INT8 quantization with ONNX Runtime.

Scheme (ONNX Runtime's recommended CPU setup, onnxruntime.ai/docs/performance/model-optimizations/quantization):
QDQ format, signed INT8 weights quantized per output channel (depthwise convs have one filter per channel,
whose ranges differ by orders of magnitude, so one per-tensor scale would wipe out the small ones;
Krishnamoorthi, "Quantizing deep convolutional networks for efficient inference", 2018, Sec. 3.1),
unsigned INT8 activations per tensor, ranges calibrated on real images. ONNX Runtime then fuses each
DequantizeLinear -> Conv -> QuantizeLinear triple into one integer ``QLinearConv``.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import os
from pathlib import Path
from typing import Iterable, Iterator, Optional, Sequence, Union

import numpy as np
import torch

from ..checkpoint import atomic_write
from ._deps import require

__all__ = ["CALIBRATION_METHODS", "TensorCalibrationReader", "quantize_onnx"]

PathLike = Union[str, os.PathLike]
CALIBRATION_METHODS = ("minmax", "percentile", "entropy")
# ops whose integer kernels ONNX Runtime's CPU provider has; the rest stay float between Q/DQ pairs
_DEFAULT_OP_TYPES = ("Conv", "Gemm", "MatMul", "Add", "Mul", "GlobalAveragePool", "Relu", "Clip")


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
) -> Path:
    """Quantize the ONNX file ``fp32_path`` to INT8 (QDQ) calibrated on ``calibration`` and write ``output``.

    ``calibration`` is an iterable of input batches, preprocessed as for inference. The file's batch
    dimension must accept the calibration batch size (export with ``dynamic_batch=True``).
    """
    quant = require("onnxruntime.quantization")
    onnx = require("onnx")
    if method not in CALIBRATION_METHODS:
        raise ValueError(f"method must be one of {', '.join(CALIBRATION_METHODS)}, got {method!r}")
    fp32_path = Path(fp32_path)
    if not fp32_path.is_file():
        raise FileNotFoundError(f"ONNX file not found: {fp32_path}")
    input_name = onnx.load(str(fp32_path), load_external_data=False).graph.input[0].name

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
        with _without_preprocess_advice():
            quant.quantize_static(
                str(fp32_path),
                tmp,
                reader,
                quant_format=quant.QuantFormat.QDQ,
                op_types_to_quantize=list(op_types) if op_types is not None else None,
                per_channel=per_channel,
                activation_type=quant.QuantType.QUInt8,
                weight_type=quant.QuantType.QInt8,
                calibrate_method=calibrate_method,
            )

    atomic_write(output, write)
    return output


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
