"""Deployment: batch-norm folding, ONNX/TorchScript export with verification, INT8 quantization, fast
inference backends and benchmarks. ONNX pieces need the ``export`` extra (``pip install 'mobilenets[export]'``),
the phone formats (ExecuTorch, LiteRT, Core ML) the ``mobile`` extra.
"""

from .onnx_export import (
    DEFAULT_OPSET,
    ExportVerificationError,
    VerifyResult,
    expand_channel_gates,
    export_onnx,
    export_torchscript,
    onnx_op_types,
    pool_spatial_means,
    read_onnx_metadata,
    verify_onnx,
    verify_torchscript,
)
from .mobile import export_coreml, export_executorch, export_tflite, read_mobile_metadata
from .prepare import count_batchnorm, fold_batchnorm, pad_expanded_channels, prepare_for_inference
from .quantize import quantize_onnx
from .runtime import (
    BACKENDS,
    Predictor,
    make_predictor,
    onnxruntime_op_types,
    onnxruntime_predictor,
    onnxruntime_session,
    openvino_predictor,
)

__all__ = [
    "BACKENDS",
    "DEFAULT_OPSET",
    "ExportVerificationError",
    "Predictor",
    "VerifyResult",
    "count_batchnorm",
    "expand_channel_gates",
    "export_coreml",
    "export_executorch",
    "export_onnx",
    "export_tflite",
    "export_torchscript",
    "fold_batchnorm",
    "make_predictor",
    "onnx_op_types",
    "onnxruntime_op_types",
    "onnxruntime_predictor",
    "onnxruntime_session",
    "openvino_predictor",
    "pad_expanded_channels",
    "pool_spatial_means",
    "prepare_for_inference",
    "quantize_onnx",
    "read_mobile_metadata",
    "read_onnx_metadata",
    "verify_onnx",
    "verify_torchscript",
]
