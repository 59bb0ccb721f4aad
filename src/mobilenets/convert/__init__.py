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
from typing import Iterable, Mapping, Optional, Union

import torch

from ..checkpoint import CheckpointError, explain_file, file_format, load_state_dict_file, read_metadata, save
from ..keynames import state_dict_library
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
    A name that stands for several source models with the same tensors (timm: ``mobilenet_v3_large`` is
    ``mobilenetv3_large_100`` or ``tf_mobilenetv3_large_100``) is refused with the names that fit.
    """
    return _resolve(source, arch, width_mult)


def _resolve(
    source: str, arch: str, width_mult: Optional[float], declared: Optional[tuple[str, Path]] = None
) -> SourceSpec:
    if width_mult is not None and (isinstance(width_mult, bool) or not isinstance(width_mult, (int, float))):
        raise TypeError(f"width_mult must be a number, got {width_mult!r}")
    if width_mult is not None and not 0 < width_mult <= 4:
        raise ValueError(f"width_mult must be in (0, 4], got {width_mult!r}")
    if source == "timm":
        return _timm.resolve(arch, width_mult, declared)
    return _module(source).resolve(arch, width_mult)


def _check_library(source: str, keys: Iterable[str], label: str, path: Optional[Path]) -> None:
    """Refuse tensors named the way another library names them, saying which one."""
    library = state_dict_library(keys)
    if library is None or library == source:
        return
    if library == "mobilenets":
        if path is not None and file_format(path) == "safetensors" and _is_checkpoint(path):
            raise ConversionError(
                f"{label}: a mobilenets checkpoint already; nothing to convert: mobilenets.load rebuilds it"
            )
        raise ConversionError(
            (explain_file(path) if path is not None else None)
            or f"{label}: holds mobilenets tensors already; nothing to convert: load them with "
            "create_model(ARCH, pretrained=PATH)"
        )
    example = next((k for k in keys if k.endswith(".weight")), next(iter(keys)))
    raise ConversionError(
        f"{label}: looks like {library} weights (tensor names such as {example!r}), not {source} weights; "
        f"use --from {library}"
    )


def _is_checkpoint(path: Path) -> bool:
    try:
        read_metadata(path)
    except CheckpointError:
        return False
    return True


def _check_format(source: str, path: Path, label: str) -> None:
    """Refuse a file in another source's format, saying which source it looks like."""
    if not path.is_file():
        return  # the readers say what is missing
    kind = file_format(path)
    if source != "keras":
        if kind == "keras":
            raise ConversionError(
                f"{label}: looks like a Keras file (HDF5 or .keras), not a PyTorch one; use --from keras"
            )
        return
    if kind in ("pytorch", "safetensors"):
        try:
            tensors = load_state_dict_file(path)
        except CheckpointError:
            tensors = {}  # a suffix load_state_dict_file does not take, or no state dict: the format says enough
        _check_library(source, tensors, label, path)
        raise ConversionError(
            f"{label}: looks like a PyTorch file ({kind}), not a Keras one; use --from torchvision or --from timm"
        )


def convert_state_dict(
    source: str, state_dict_or_path: Source, arch: str, width_mult: Optional[float] = None
) -> MobileNet:
    """Convert the weights of a ``source`` model (a state dict, or a file) into an eval-mode mobilenets model.

    torchvision / timm: a state dict, or a .pth/.pt (read with ``weights_only=True``) or .safetensors file
    (timm: with the ``config.json`` timm keeps beside ``model.safetensors``, its model name is checked against
    ``arch``). Keras: a ``.weights.h5``, ``.keras`` or legacy ``.h5`` file. A file or state dict of another
    source is refused with the source it looks like. The model's ``info`` carries the source's preprocessing
    (mean/std) and ``info.extra["converted_from"]``.
    """
    module = _module(source)
    if isinstance(state_dict_or_path, Mapping):
        spec = _resolve(source, arch, width_mult)
        if source == "keras":
            raise TypeError("keras weights are read from a file: pass the path of a .weights.h5, .keras or .h5")
        label, file = "<state dict>", None
        _check_library(source, state_dict_or_path, label, None)
        queues = module.read(state_dict_or_path, label)
    elif isinstance(state_dict_or_path, (str, os.PathLike)):
        path = Path(state_dict_or_path)
        label, file = str(path), path.name
        _check_format(source, path, label)
        declared = _timm.declared_arch(path) if source == "timm" else None
        spec = _resolve(source, arch, width_mult, declared)
        if source == "keras":
            queues, alpha = module.read(path, label, spec, width_given=width_mult is not None)
            if width_mult is None and alpha is not None:
                spec = _resolve(source, arch, alpha)
        else:
            tensors = load_state_dict_file(path)
            _check_library(source, tensors, label, path)
            queues = module.read(tensors, label)
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
