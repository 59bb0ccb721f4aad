"""Self-describing checkpoints: safetensors tensors plus JSON metadata that rebuilds the model.

The metadata (safetensors' string-to-string header, key ``"mobilenets"``) holds one JSON object:
``format_version``, ``arch``, ``options`` (every :class:`ModelOptions` field), ``input_size``, ``mean``, ``std``,
``class_names`` (or null) and anything else passed to :func:`save` (e.g. ``training={...}``,
``converted_from={...}``). Files are written atomically (temporary file in the same folder, then rename),
so a crash never leaves a half-written checkpoint in place of a good one.

``.pth``/``.pt`` files are read with ``torch.load(weights_only=True)``: arbitrary objects are never unpickled.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence, Union

import torch
from torch import nn

from .keynames import state_dict_library
from .models.base import OUTPUT_STRIDES, MobileNet, MobileNetFeatures, ModelInfo, ModelOptions
from .registry import create_model, get_entry, list_models
from .segmentation.models import SegmentationModel

__all__ = [
    "CheckpointError",
    "FORMAT_VERSION",
    "TRAIN_STATE_FORMAT",
    "is_training_state",
    "save",
    "load",
    "read_metadata",
    "described_by",
    "load_state_dict_file",
    "load_weights_into",
    "atomic_write",
    "check_output_path",
    "explain_file",
    "file_format",
    "remap_legacy_keys",
]

# 2: blocks nested by stage, ``stages.{i}.{j}`` (issue #20); format 1 files (flat ``blocks.{k}``) still load,
# their keys remapped by :func:`remap_legacy_keys`
FORMAT_VERSION = 2
_READABLE_VERSIONS = (1, 2)
_KEY = "mobilenets"
PathLike = Union[str, os.PathLike]


class CheckpointError(ValueError):
    """A checkpoint that is missing, unreadable, or does not fit the model; the message names the file."""


def check_output_path(path: PathLike) -> None:
    """Raise a ValueError naming ``path`` when no file can be written there: it is a directory, or one of the
    folders above it is a file."""
    path = Path(path)
    if path.is_dir():
        raise ValueError(f"{path}: is a directory; give the path of the file to write")
    folder = next(parent for parent in path.absolute().parents if parent.exists())
    if not folder.is_dir():
        raise ValueError(f"{path}: {folder} is a file, not a folder")


def _umask() -> int:
    # the only portable read of the umask sets it; it is put back at once
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def atomic_write(path: PathLike, write: Any) -> None:
    """Call ``write(tmp_path)`` then rename over ``path``; the old file stays intact if ``write`` fails.

    An output path that cannot be a file (a directory, a folder that is a file, no permission) raises a
    ValueError naming ``path``; an OSError of ``write`` names ``path`` too, never the temporary file.
    """
    path = Path(path)
    check_output_path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as exc:
        raise ValueError(f"{path}: cannot write there ({exc.strerror or type(exc).__name__})") from None
    os.close(fd)
    try:
        write(tmp)
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        # mkstemp makes the file 0600; the result gets the mode open() would give it (0644 under umask 022)
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except OSError as exc:
        if os.path.exists(tmp):
            os.remove(tmp)
        if exc.filename == tmp or exc.filename2 == tmp:
            # OSError(errno, ...) builds the matching subclass (PermissionError, ...)
            raise OSError(exc.errno, exc.strerror, str(path)) from None
        raise
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


def _check_class_names(class_names: Any, num_classes: int) -> None:
    """What :func:`save` writes and :func:`load` accepts: one name per class (any number without a
    classifier)."""
    if not isinstance(class_names, list) or not all(isinstance(c, str) for c in class_names):
        raise ValueError(f"class_names must be a list of strings, got {class_names!r:.80}")
    if num_classes and len(class_names) != num_classes:
        raise ValueError(f"class_names has {len(class_names)} entries but the model has {num_classes} classes")


def _is_detector(model: Any) -> bool:
    """A registered detector (an SSDLite: torchvision's SSD, so recognised by its description, which keeps this
    module free of torchvision)."""
    info = getattr(model, "info", None)
    arch = getattr(info, "arch", None)
    return isinstance(model, nn.Module) and arch in list_models(task="detection")


def save(model: MobileNet, path: PathLike, **metadata: Any) -> Path:
    """Write ``model`` to ``path`` (.safetensors) with everything :func:`load` needs to rebuild it.

    ``input_size``, ``mean``, ``std`` and ``class_names`` override what the model carries; any other keyword
    must be JSON-serialisable and is stored as is (``training={...}`` for a training record, say).
    """
    from safetensors.torch import save_file

    if not isinstance(model, (MobileNet, SegmentationModel)) and not _is_detector(model):
        raise TypeError(f"save() takes a mobilenets model, got {type(model).__name__}")
    path = Path(path)
    if path.suffix != ".safetensors":
        raise ValueError(f"checkpoint path must end in .safetensors, got {str(path)!r}")
    info = model.info
    class_names = metadata.pop("class_names", info.extra.get("class_names"))
    if class_names is not None:
        class_names = [str(c) for c in class_names]
        _check_class_names(class_names, model.num_classes)
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


_HEADER = ("format_version", "arch", "options", "input_size", "mean", "std")


def described_by(info: ModelInfo, meta: Mapping[str, Any]) -> ModelInfo:
    """``info`` fed as a checkpoint's metadata ``meta`` says (input size, mean, std), with its other entries
    (class names, training record, source of the weights ...) in ``extra``."""
    return info.updated(input_size=meta.get("input_size"), mean=meta.get("mean"), std=meta.get("std"),
                        extra={k: v for k, v in meta.items() if k not in _HEADER})


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
        other = explain_file(path)
        raise CheckpointError(other or f"{path}: not a readable safetensors file ({_short(exc)})") from None
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
    if version not in _READABLE_VERSIONS:
        raise CheckpointError(
            f"{path}: checkpoint format {version!r} is not supported (this mobilenets reads formats "
            f"{', '.join(map(str, _READABLE_VERSIONS))})"
        )
    return meta


# the tag of a training state file (last.pt/best.pt), defined here, below the trainer that writes it, so that
# reading a file can say what it is without importing train
TRAIN_STATE_FORMAT = "mobilenets-train-state"


def is_training_state(obj: Any) -> bool:
    return isinstance(obj, Mapping) and obj.get("format") == TRAIN_STATE_FORMAT
_ZIP_MAGIC = b"PK\x03\x04"
_HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"


def file_format(path: Path) -> str:
    """"pytorch" (``torch.save``: a zip holding data.pkl, or a bare pickle), "keras" (HDF5, or a .keras zip),
    "safetensors" or "unknown", from the file's first bytes."""
    with open(path, "rb") as fh:
        head = fh.read(16)
    if head.startswith(_HDF5_MAGIC):
        return "keras"
    if head.startswith(_ZIP_MAGIC):
        import zipfile

        try:
            with zipfile.ZipFile(path) as archive:
                names = archive.namelist()
        except (zipfile.BadZipFile, OSError):
            return "unknown"
        if "model.weights.h5" in names:
            return "keras"
        return "pytorch" if any(n.endswith("data.pkl") for n in names) else "unknown"
    if len(head) >= 2 and head[0] == 0x80 and 2 <= head[1] <= 5:  # pickle protocol 2-5 header
        return "pytorch"
    if len(head) >= 9 and head[8:9] == b"{" and int.from_bytes(head[:8], "little") < path.stat().st_size:
        return "safetensors"
    return "unknown"


def explain_file(path: Path) -> Optional[str]:
    """What a file that is not a safetensors checkpoint is and what to do with it (None: unrecognised)."""
    kind = file_format(path)
    if kind == "keras":
        return (
            f"{path}: a Keras weights file (HDF5), not a mobilenets checkpoint; convert it: "
            f"`mobilenets convert --from keras --arch NAME {path} OUT.safetensors`"
        )
    if kind != "pytorch":
        return None
    try:
        obj = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception:
        return (
            f"{path}: a PyTorch pickle holding Python objects (not weights-only readable), not a mobilenets "
            "checkpoint; save its model's state_dict() and convert that (`mobilenets convert`)"
        )
    if is_training_state(obj):
        return (
            f"{path}: a mobilenets training state (last.pt/best.pt: weights, optimizer, epoch), not a model "
            f"checkpoint; `mobilenets evaluate {path}` and `mobilenets predict {path} IMAGE` take it as it is, "
            f"mobilenets.load and `mobilenets export` take the run's {path.parent / 'best.safetensors'}"
        )
    library = state_dict_library(_unwrap(obj)) if isinstance(obj, Mapping) else None
    if library == "mobilenets":
        return (
            f"{path}: a PyTorch file of mobilenets tensors (torch.save), not a mobilenets checkpoint, which "
            f"carries the architecture too; load it with create_model(ARCH, pretrained={str(path)!r}), then "
            "mobilenets.save it"
        )
    source = library or "torchvision|timm"
    return (
        f"{path}: a PyTorch file{f' of {library} weights' if library else ''}, not a mobilenets checkpoint; "
        f"convert it: `mobilenets convert --from {source} --arch NAME {path} OUT.safetensors`"
    )


def _unwrap(obj: Mapping) -> Mapping:
    """The state dict inside common training-script layouts (``{"state_dict": ...}`` ...), else ``obj``."""
    for key in ("state_dict", "model", "model_state_dict", "state_dict_ema"):
        if key in obj and isinstance(obj[key], Mapping):
            return obj[key]
    return obj


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
        if isinstance(obj, Mapping):
            obj = _unwrap(obj)
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


_LEGACY_BLOCK = re.compile(r"^blocks\.(\d+)\.(.+)$")
# the classification head, which a feature extractor (features_only=True) does not use
_HEAD_MODULES = ("head_fc", "classifier")


def remap_legacy_keys(model: nn.Module, tensors: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Tensor names of mobilenets before format 2, ``blocks.{k}.*`` (one flat list), renamed to the model's
    ``stages.{i}.{j}.*``; other names and files of the current layout are returned as they are. A block index
    the model does not have keeps its old name, so the mismatch report lists it."""
    names = model.block_names() if isinstance(model, MobileNet) else []
    if not names or any(key.startswith("stages.") for key in tensors):
        return dict(tensors)
    out = {}
    for key, value in tensors.items():
        match = _LEGACY_BLOCK.match(key)
        if match and int(match[1]) < len(names):
            key = f"{names[int(match[1])]}.{match[2]}"
        out[key] = value
    return out


def load_weights_into(model: nn.Module, path: PathLike, backbone_only: bool = False) -> nn.Module:
    """Copy the tensors of ``path`` into ``model``; every tensor must match by name and shape.

    ``backbone_only`` (for feature extractors): the file's classification head (``head_fc``, ``classifier``) is
    left out and the model's head keeps its initial weights; every other tensor must match.
    """
    path = Path(path)
    tensors = remap_legacy_keys(model, load_state_dict_file(path))
    target: nn.Module = model
    if backbone_only:
        tensors = {k: v for k, v in tensors.items() if k.split(".")[0] not in _HEAD_MODULES}
        target = _Backbone(model)
    problem = _describe_mismatch(path, target, tensors)
    if problem:
        raise CheckpointError(problem + _holds(path))
    target.load_state_dict(tensors, strict=True)
    return model


class _Backbone(nn.Module):
    """A view of a model without its classification head, to load a checkpoint's backbone strictly."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.info = getattr(model, "info", None)
        for name, child in model.named_children():
            if name not in _HEAD_MODULES:
                self.add_module(name, child)


def _option_names(arch: str) -> list[str]:
    """The options ``arch`` takes (a segmentation model's differ); an unknown ``arch`` is refused when the model
    is rebuilt."""
    try:
        return get_entry(arch).options_type.names()
    except ValueError:
        return ModelOptions.names()


def load(
    path: PathLike,
    map_location: Union[str, torch.device] = "cpu",
    *,
    features_only: bool = False,
    out_indices: Optional[Sequence[int]] = None,
    feature_location: Optional[str] = None,
    output_stride: Optional[int] = None,
) -> Union[MobileNet, MobileNetFeatures]:
    """Rebuild a model from a mobilenets checkpoint alone: architecture, options, weights and metadata.

    ``features_only``, ``out_indices`` and ``feature_location`` return the backbone as
    ``create_model(..., features_only=True)`` does; ``output_stride`` (8, 16 or 32) overrides the stored one,
    which changes no weight. ``mobilenets.load`` (:mod:`mobilenets.api`) takes Hugging Face Hub repositories
    too.
    """
    path = Path(path)
    meta = read_metadata(path)
    try:
        arch = meta["arch"]
        options = dict(meta["options"])
    except KeyError as exc:
        raise CheckpointError(f"{path}: metadata lacks {exc}") from None
    known = set(_option_names(arch))
    unknown = sorted(set(options) - known)
    if unknown:
        raise CheckpointError(
            f"{path}: written by a newer mobilenets (unknown model options {', '.join(unknown)}); upgrade mobilenets"
        )
    if output_stride is not None:
        if output_stride not in OUTPUT_STRIDES or isinstance(output_stride, bool):
            raise ValueError(
                f"output_stride must be one of {', '.join(map(str, OUTPUT_STRIDES))}, got {output_stride!r}"
            )
        options["output_stride"] = output_stride
    if not features_only and (out_indices is not None or feature_location is not None):
        raise ValueError("out_indices and feature_location apply to feature extractors: pass features_only=True")
    try:
        model = create_model(arch, **options)
    except (ValueError, TypeError) as exc:
        raise CheckpointError(f"{path}: cannot rebuild the model ({exc})") from None
    class_names = meta.get("class_names")
    if class_names is not None:
        try:
            _check_class_names(class_names, model.num_classes)
        except ValueError as exc:
            raise CheckpointError(f"{path}: metadata does not fit the model: {exc}") from None
    load_weights_into(model, path)
    model.info = described_by(model.info, meta)
    model.eval()
    if features_only and not isinstance(model, MobileNet):
        raise ValueError(f"{path}: features_only applies to classification checkpoints; this one holds {arch}")
    if features_only:
        return MobileNetFeatures(model, out_indices, feature_location or "bottleneck").eval().to(map_location)
    return model.to(map_location)
