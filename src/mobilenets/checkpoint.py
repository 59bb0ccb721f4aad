"""Self-describing checkpoints: safetensors tensors plus JSON metadata that rebuilds the model.

The metadata (safetensors' string-to-string header, key ``"mobilenets"``) holds one JSON object:
``format_version``, ``arch``, ``options`` (every :class:`ModelOptions` field), ``input_size``, ``mean``, ``std``,
``class_names`` (or null) and anything else passed to :func:`save` (e.g. ``training={...}``,
``converted_from={...}``). Files are written atomically (temporary file in the same folder, then rename),
so a crash never leaves a half-written checkpoint in place of a good one.

``.pth``/``.pt`` files are read with ``torch.load(weights_only=True)``: arbitrary objects are never unpickled.
"""

from __future__ import annotations

import dataclasses
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Mapping, Optional, Union

import torch
from torch import nn

from .models.base import MobileNet, ModelOptions
from .registry import create_model

__all__ = [
    "CheckpointError",
    "FORMAT_VERSION",
    "save",
    "load",
    "read_metadata",
    "load_state_dict_file",
    "load_weights_into",
    "atomic_write",
]

FORMAT_VERSION = 1
_KEY = "mobilenets"
PathLike = Union[str, os.PathLike]


class CheckpointError(ValueError):
    """A checkpoint that is missing, unreadable, or does not fit the model; the message names the file."""


def atomic_write(path: PathLike, write: Any) -> None:
    """Call ``write(tmp_path)`` then rename over ``path``; the old file stays intact if ``write`` fails."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def _jsonable(key: str, value: Any) -> Any:
    try:
        json.dumps(value)
    except TypeError as exc:
        raise ValueError(f"metadata {key!r} is not JSON-serialisable: {exc}") from None
    return value


def save(model: MobileNet, path: PathLike, **metadata: Any) -> Path:
    """Write ``model`` to ``path`` (.safetensors) with everything :func:`load` needs to rebuild it.

    ``input_size``, ``mean``, ``std`` and ``class_names`` override what the model carries; any other keyword
    must be JSON-serialisable and is stored as is (``training={...}`` for a training record, say).
    """
    from safetensors.torch import save_file

    if not isinstance(model, MobileNet):
        raise TypeError(f"save() takes a mobilenets model, got {type(model).__name__}")
    path = Path(path)
    if path.suffix != ".safetensors":
        raise ValueError(f"checkpoint path must end in .safetensors, got {str(path)!r}")
    info = model.info
    class_names = metadata.pop("class_names", info.extra.get("class_names"))
    if class_names is not None:
        class_names = [str(c) for c in class_names]
        if model.num_classes and len(class_names) != model.num_classes:
            raise ValueError(
                f"class_names has {len(class_names)} entries but the model has {model.num_classes} classes"
            )
    header = {
        "format_version": FORMAT_VERSION,
        "arch": info.arch,
        "options": info.options.to_dict(),
        "input_size": list(metadata.pop("input_size", info.input_size)),
        "mean": list(metadata.pop("mean", info.mean)),
        "std": list(metadata.pop("std", info.std)),
        "class_names": class_names,
    }
    reserved = {"format_version", "arch", "options"}
    for key, value in metadata.items():
        if key in reserved:
            raise ValueError(f"metadata key {key!r} is reserved; it is taken from the model")
        header[key] = _jsonable(key, value)
    # safetensors refuses shared or non-contiguous storage: clone into plain tensors
    tensors = {k: v.detach().cpu().contiguous().clone() for k, v in model.state_dict().items()}
    atomic_write(path, lambda tmp: save_file(tensors, tmp, metadata={_KEY: json.dumps(header)}))
    return path


def _check_exists(path: Path) -> None:
    if not path.exists():
        raise CheckpointError(f"{path}: no such file")
    if path.is_dir():
        raise CheckpointError(f"{path}: is a directory, not a checkpoint file")


def read_metadata(path: PathLike) -> dict[str, Any]:
    """The JSON metadata of a mobilenets .safetensors checkpoint, without loading tensors."""
    from safetensors import safe_open

    path = Path(path)
    _check_exists(path)
    try:
        with safe_open(str(path), framework="pt") as fh:
            raw = (fh.metadata() or {}).get(_KEY)
    except Exception as exc:  # safetensors raises its own error types for corrupt headers
        raise CheckpointError(f"{path}: not a readable safetensors file ({_short(exc)})") from None
    if raw is None:
        raise CheckpointError(
            f"{path}: a safetensors file without mobilenets metadata; use create_model(arch, pretrained=path) "
            "or `mobilenets convert` for weights from other libraries"
        )
    try:
        meta = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"{path}: corrupt mobilenets metadata ({exc})") from None
    version = meta.get("format_version")
    if version != FORMAT_VERSION:
        raise CheckpointError(f"{path}: checkpoint format {version!r} is not supported (expected {FORMAT_VERSION})")
    return meta


def _short(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:200] if text else type(exc).__name__


def load_state_dict_file(path: PathLike) -> dict[str, torch.Tensor]:
    """Tensors of a .safetensors file, or of a .pth/.pt file loaded with ``weights_only=True``.

    A .pth holding ``{"state_dict": ...}`` or ``{"model": ...}`` (common training-script layouts) is unwrapped.
    """
    path = Path(path)
    _check_exists(path)
    suffix = path.suffix.lower()
    if suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            return load_file(str(path))
        except Exception as exc:
            raise CheckpointError(f"{path}: not a readable safetensors file ({_short(exc)})") from None
    if suffix in (".pth", ".pt", ".bin", ".ckpt"):
        try:
            obj = torch.load(str(path), map_location="cpu", weights_only=True)
        except Exception as exc:
            raise CheckpointError(
                f"{path}: cannot be read as a weights-only PyTorch file ({_short(exc)})"
            ) from None
        for key in ("state_dict", "model", "model_state_dict", "state_dict_ema"):
            if isinstance(obj, Mapping) and key in obj and isinstance(obj[key], Mapping):
                obj = obj[key]
                break
        if not isinstance(obj, Mapping) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
            raise CheckpointError(f"{path}: does not hold a state dict of tensors")
        return dict(obj)
    raise CheckpointError(f"{path}: unsupported file type {suffix!r}; accepted: .safetensors, .pth, .pt, .bin, .ckpt")


def _describe_mismatch(path: Path, model: nn.Module, tensors: Mapping[str, torch.Tensor]) -> Optional[str]:
    expected = model.state_dict()
    missing = [k for k in expected if k not in tensors]
    unexpected = [k for k in tensors if k not in expected]
    mismatched = [
        f"{k} {tuple(tensors[k].shape)} vs model {tuple(expected[k].shape)}"
        for k in expected
        if k in tensors and tensors[k].shape != expected[k].shape
    ]
    if not (missing or unexpected or mismatched):
        return None

    def head(items: list[str]) -> str:
        return ", ".join(items[:5]) + (f" (+{len(items) - 5} more)" if len(items) > 5 else "")

    parts = []
    if missing:
        parts.append(f"missing {len(missing)}: " + head([f"{k} {tuple(expected[k].shape)}" for k in missing]))
    if unexpected:
        parts.append(f"unexpected {len(unexpected)}: " + head([f"{k} {tuple(tensors[k].shape)}" for k in unexpected]))
    if mismatched:
        parts.append(f"shape mismatch {len(mismatched)}: " + head(mismatched))
    arch = getattr(getattr(model, "info", None), "arch", type(model).__name__)
    return f"{path}: tensors do not fit {arch}; " + "; ".join(parts)


def _holds(path: Path) -> str:
    """What a mobilenets checkpoint says it holds, to explain a mismatch ("" for foreign files)."""
    if path.suffix != ".safetensors":
        return ""
    try:
        meta = read_metadata(path)
    except CheckpointError:
        return ""
    opts = meta.get("options", {})
    return (
        f" (the file holds {meta.get('arch')} width_mult={opts.get('width_mult')} "
        f"num_classes={opts.get('num_classes')} in_chans={opts.get('in_chans')})"
    )


def load_weights_into(model: nn.Module, path: PathLike) -> nn.Module:
    """Copy the tensors of ``path`` into ``model``; every tensor must match by name and shape."""
    path = Path(path)
    tensors = load_state_dict_file(path)
    problem = _describe_mismatch(path, model, tensors)
    if problem:
        raise CheckpointError(problem + _holds(path))
    model.load_state_dict(tensors, strict=True)
    return model


def load(path: PathLike, map_location: Union[str, torch.device] = "cpu") -> MobileNet:
    """Rebuild a model from a mobilenets checkpoint alone: architecture, options, weights and metadata."""
    path = Path(path)
    meta = read_metadata(path)
    try:
        arch = meta["arch"]
        options = dict(meta["options"])
    except KeyError as exc:
        raise CheckpointError(f"{path}: metadata lacks {exc}") from None
    known = {f.name for f in dataclasses.fields(ModelOptions)}
    unknown = sorted(set(options) - known)
    if unknown:
        raise CheckpointError(
            f"{path}: written by a newer mobilenets (unknown model options {', '.join(unknown)}); upgrade mobilenets"
        )
    try:
        model = create_model(arch, **options)
    except (ValueError, TypeError) as exc:
        raise CheckpointError(f"{path}: cannot rebuild the model ({exc})") from None
    load_weights_into(model, path)
    info = model.info
    info.input_size = tuple(meta.get("input_size", info.input_size))
    info.mean = tuple(meta.get("mean", info.mean))
    info.std = tuple(meta.get("std", info.std))
    skip = {"format_version", "arch", "options", "input_size", "mean", "std"}
    info.extra.update({k: v for k, v in meta.items() if k not in skip})
    model.eval()
    return model.to(map_location)
