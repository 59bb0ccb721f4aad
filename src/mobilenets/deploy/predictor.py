"""What every inference backend returns: a :class:`Predictor`."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any, Callable, Optional

import torch
from torch import nn

__all__ = ["Predictor"]


class Predictor:
    """``predictor(batch) -> logits`` for a float NCHW batch, normalised as the model expects, whatever runs
    underneath. ``path`` is the file it runs (None for the PyTorch backends), ``module`` the PyTorch module it
    runs (None for the file backends); ``session`` (ONNX Runtime) and ``compiled`` (OpenVINO) are the runtime's
    own objects, for inspection. :meth:`close` frees them and the temporary folder of exported files the
    predictor owns; a closed predictor refuses to run. Also a context manager."""

    def __init__(
        self,
        run: Callable[[torch.Tensor], torch.Tensor],
        *,
        path: Optional[Path] = None,
        module: Optional[nn.Module] = None,
        session: Any = None,
        compiled: Any = None,
        workdir: Optional[tempfile.TemporaryDirectory] = None,
    ) -> None:
        self._run: Optional[Callable[[torch.Tensor], torch.Tensor]] = run
        self.path = None if path is None else Path(path)
        self.module, self.session, self.compiled = module, session, compiled
        self._workdir = workdir  # the folder lives as long as the predictor

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if self._run is None:
            raise RuntimeError("this predictor was closed; make a new one")
        return self._run(x)

    def with_workdir(self, workdir: Optional[tempfile.TemporaryDirectory]) -> "Predictor":
        """Hand this predictor the temporary folder its files are in (removed by :meth:`close`)."""
        self._workdir = workdir
        return self

    def close(self) -> None:
        self._run = self.module = self.session = self.compiled = None
        if self._workdir is not None:
            self._workdir.cleanup()
            self._workdir = None

    def __enter__(self) -> "Predictor":
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.close()
