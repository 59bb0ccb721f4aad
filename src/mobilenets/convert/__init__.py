"""Pretrained weights from torchvision, timm and Keras, converted to mobilenets models with identical outputs.

    model = convert_state_dict("torchvision", torch.load("mobilenet_v3_small.pth", weights_only=True),
                               "mobilenet_v3_small")
    convert_file("keras", "mobilenet_v2.weights.h5", "mnv2.safetensors", "MobileNetV2", width_mult=0.35)

Each source module (``torchvision``, ``timm``, ``keras``) says in its docstring what it maps and which model
options it sets so that the converted model computes what the source computes (TensorFlow "same" padding,
BatchNorm epsilon, the source's width rounding, ReLU6 ...). The options are stored in the checkpoint, so
``mobilenets.load`` rebuilds the exact network. Input channels and the number of classes (0 for a file
without classifier) are read from the weights. Errors are :class:`ConversionError` (a ``ValueError``) or
:class:`~mobilenets.checkpoint.CheckpointError` with one line naming the file and the problem.
"""

from __future__ import annotations

import os
from pathlib import Path
from types import ModuleType
from typing import Mapping, Optional, Union

import torch

from ..checkpoint import load_state_dict_file, save
from ..models.base import MobileNet
from . import keras as _keras
from . import timm as _timm
from . import torchvision as _torchvision
from ._mapping import ConversionError
from .core import SourceSpec, build_converted

__all__ = ["SOURCES", "ConversionError", "SourceSpec", "convert_state_dict", "convert_file", "resolve"]

_MODULES: dict[str, ModuleType] = {"torchvision": _torchvision, "timm": _timm, "keras": _keras}
SOURCES: tuple[str, ...] = tuple(_MODULES)

PathLike = Union[str, os.PathLike]
Source = Union[Mapping[str, torch.Tensor], PathLike]


def _module(source: str) -> ModuleType:
    try:
        return _MODULES[source]
    except KeyError:
        raise ValueError(f"unknown source library {source!r}; accepted: {', '.join(SOURCES)}") from None


def resolve(source: str, arch: str, width_mult: Optional[float] = None) -> SourceSpec:
    """Which mobilenets architecture, width and options reproduce ``arch`` of ``source``.

    ``arch`` is our model name (``mobilenet_v2`` ...) or the source library's (timm ``mobilenetv3_small_050``,
    Keras ``MobileNetV3Small`` ...); ``width_mult`` defaults to 1.0 or to the width a timm name carries.
    """
    if width_mult is not None and (isinstance(width_mult, bool) or not isinstance(width_mult, (int, float))):
        raise TypeError(f"width_mult must be a number, got {width_mult!r}")
    if width_mult is not None and not 0 < width_mult <= 4:
        raise ValueError(f"width_mult must be in (0, 4], got {width_mult!r}")
    return _module(source).resolve(arch, width_mult)


def convert_state_dict(
    source: str, state_dict_or_path: Source, arch: str, width_mult: Optional[float] = None
) -> MobileNet:
    """Convert the weights of a ``source`` model (a state dict, or a file) into an eval-mode mobilenets model.

    torchvision / timm: a state dict, or a .pth/.pt (read with ``weights_only=True``) or .safetensors file.
    Keras: a ``.weights.h5``, ``.keras`` or legacy ``.h5`` file. The model's ``info`` carries the source's
    preprocessing (mean/std) and ``info.extra["converted_from"]``.
    """
    spec = resolve(source, arch, width_mult)
    module = _module(source)
    if isinstance(state_dict_or_path, Mapping):
        if source == "keras":
            raise TypeError("keras weights are read from a file: pass the path of a .weights.h5, .keras or .h5")
        label, file = "<state dict>", None
        queues = module.read(state_dict_or_path, label)
    elif isinstance(state_dict_or_path, (str, os.PathLike)):
        path = Path(state_dict_or_path)
        label, file = str(path), path.name
        if source == "keras":
            queues, alpha = module.read(path, label, spec, width_given=width_mult is not None)
            if width_mult is None and alpha is not None:
                spec = resolve(source, arch, alpha)
        else:
            queues = module.read(load_state_dict_file(path), label)
    else:
        raise TypeError(
            f"expected a state dict or a file path, got {type(state_dict_or_path).__name__}"
        )
    return build_converted(spec, queues, module.queue_for, label, file)


def convert_file(
    source: str, src_path: PathLike, dst_path: PathLike, arch: str, width_mult: Optional[float] = None
) -> MobileNet:
    """Convert ``src_path`` and write a mobilenets checkpoint (.safetensors) to ``dst_path``.

    The checkpoint records the options, the source's mean/std and
    ``converted_from={"library", "arch", "file", ...}``; ``mobilenets.load(dst_path)`` rebuilds the model.
    Returns the converted model.
    """
    dst = Path(dst_path)
    if dst.suffix != ".safetensors":
        raise ValueError(f"output path must end in .safetensors, got {str(dst)!r}")
    model = convert_state_dict(source, src_path, arch, width_mult)
    save(model, dst, **model.info.extra)
    return model
