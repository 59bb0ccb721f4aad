"""The one place an ONNX Runtime session is made: verification, predictors and benchmarks all run the
same session options."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Optional, Union

from ._deps import require

__all__ = ["onnxruntime_session"]

PathLike = Union[str, os.PathLike]

_OPTIMIZATION_LEVELS = ("disable", "basic", "extended", "all")


def onnxruntime_session(
    path: PathLike, threads: Optional[int] = None, optimization: str = "all", spinning: bool = False,
    optimized_model: Optional[PathLike] = None,
):
    """An ONNX Runtime CPU session with ``threads`` intra-op threads (None: ONNX Runtime's default, one per
    physical core) and one inter-op thread (MobileNets are a chain of ops: nothing to run in parallel).

    ``spinning=False`` makes idle worker threads sleep instead of busy-waiting for the next op. ONNX Runtime
    spins by default, which saves microseconds on a dedicated machine but burns the cores that PyTorch or
    other sessions in the same process (or other users of a shared CPU) need. ``optimized_model``: where to
    save the graph as ONNX Runtime runs it, after its optimizations and fusions.
    """
    ort = require("onnxruntime")
    if optimization not in _OPTIMIZATION_LEVELS:
        raise ValueError(f"optimization must be one of {', '.join(_OPTIMIZATION_LEVELS)}, got {optimization!r}")
    if not Path(path).is_file():
        raise FileNotFoundError(f"ONNX file not found: {path}")
    options = ort.SessionOptions()
    options.graph_optimization_level = {
        "disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
        "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
        "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
        "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
    }[optimization]
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.inter_op_num_threads = 1
    if threads is not None:
        options.intra_op_num_threads = threads
    options.add_session_config_entry("session.intra_op.allow_spinning", "1" if spinning else "0")
    if optimized_model is not None:
        options.optimized_model_filepath = str(optimized_model)
    return ort.InferenceSession(str(path), sess_options=options, providers=["CPUExecutionProvider"])
