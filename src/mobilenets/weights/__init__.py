"""Published pretrained weights: ``create_model(name, pretrained=True)`` and ``pretrained="SOURCE[:TAG]"``.

    model = mobilenets.create_model("mobilenet_v3_large", pretrained=True)             # torchvision's DEFAULT
    model = mobilenets.create_model("mobilenet_v3_large", pretrained="timm:ra4_e3600_r224_in1k")
    model = mobilenets.create_model("mobilenet_v2", width_mult=0.35, pretrained="keras:160")
    model = mobilenets.create_model("mobilenet_v3_small", pretrained=True, num_classes=10)  # new head
    model = mobilenets.create_model("lraspp_mobilenet_v3_large", pretrained=True)      # COCO with VOC's classes

The table of weights is :data:`mobilenets.weights.table.TABLE`; :func:`list_weights` lists it, :func:`find` picks a
row, :func:`download` fetches and converts one (cached under ``$MOBILENETS_HOME``, default ``~/.cache/mobilenets``).
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any, Optional, Sequence, Union

from ..checkpoint import atomic_write, described_by, load_weights_into, read_metadata
from ..models.base import MobileNetFeatures
from ..registry import create_model, get_entry
from . import table as _table
from .fetch import WeightsError, converted_path, fetch_converted, fetch_source, mobilenets_home, source_path
from .imagenet_classes import IMAGENET_CLASSES
from .table import SOURCES, TASK_METRICS, Preprocessing, PretrainedWeights
from .voc_classes import VOC_CLASSES

__all__ = [
    "IMAGENET_CLASSES",
    "Preprocessing",
    "PretrainedWeights",
    "SOURCES",
    "TASK_METRICS",
    "VOC_CLASSES",
    "WeightsError",
    "converted_path",
    "create_pretrained",
    "download",
    "fetch_source",
    "find",
    "is_weights_tag",
    "list_weights",
    "mobilenets_home",
    "source_path",
]

# options that change no weight and no computation the weights depend on: the caller may set them freely
_FREE_OPTIONS = ("dropout", "drop_path_rate", "bn_momentum", "output_stride", "small_input")


def is_weights_tag(pretrained: Any) -> bool:
    """True for ``True`` and for ``"SOURCE"`` / ``"SOURCE:TAG"`` strings (a path is anything else)."""
    if pretrained is True:
        return True
    return isinstance(pretrained, str) and pretrained.partition(":")[0] in SOURCES


def list_weights(model: Optional[str] = None) -> list[PretrainedWeights]:
    """The table's rows, for one model or all; within a (model, width) the default comes first."""
    rows = list(_table.TABLE)
    if model is not None:
        get_entry(model)  # an unknown name raises with the registered ones
        rows = [r for r in rows if r.model == model]
    return rows


def _tags(rows: Sequence[PretrainedWeights]) -> str:
    by_width: dict[float, list[str]] = {}
    for r in rows:
        by_width.setdefault(r.width_mult, []).append(r.tag)
    return "; ".join(f"width_mult={w:g}: {', '.join(tags)}" for w, tags in by_width.items())


def find(model: str, width_mult: float = 1.0, pretrained: Union[bool, str] = True) -> PretrainedWeights:
    """The row for ``model`` at ``width_mult``: its default (``True``), a source's default (``"keras"``) or a tag
    (``"timm:lamb_in1k"``). Unknown ones raise a ValueError listing that model's tags."""
    if not is_weights_tag(pretrained):
        raise ValueError(
            f"pretrained must be True, a path or 'SOURCE[:TAG]' with SOURCE one of {', '.join(SOURCES)}; "
            f"got {pretrained!r}"
        )
    rows = list_weights(model)
    if not rows:
        with_weights = sorted({r.model for r in _table.TABLE})
        raise ValueError(f"no published weights for {model}; models with weights: {', '.join(with_weights)}")
    at_width = [r for r in rows if abs(r.width_mult - float(width_mult)) < 1e-9]
    if pretrained is True:
        if not at_width:
            raise ValueError(f"no published weights for {model} at width_mult={width_mult:g}; tags: {_tags(rows)}")
        return at_width[0]
    source, _, name = str(pretrained).partition(":")
    candidates = [r for r in at_width if r.source == source and (not name or r.tag == pretrained)]
    if not candidates:
        raise ValueError(
            f"no weights {pretrained!r} for {model} at width_mult={width_mult:g}; tags of {model}: {_tags(rows)}"
        )
    return candidates[0]


def download(
    model: str, pretrained: Union[bool, str] = True, width_mult: float = 1.0, output: Optional[Path] = None,
    progress: bool = True,
) -> Path:
    """Fetch and convert one row of the table once; returns the cached checkpoint, or ``output`` (a copy)."""
    entry = find(model, width_mult, pretrained)
    path = fetch_converted(entry, progress)
    if output is None:
        return path
    output = Path(output)
    if output.suffix != ".safetensors":
        raise ValueError(f"output path must end in .safetensors, got {str(output)!r}")
    atomic_write(output, lambda tmp: shutil.copyfile(path, tmp))
    return output


def _merge_options(entry: PretrainedWeights, stored: dict[str, Any], given: dict[str, Any]) -> dict[str, Any]:
    """The stored options (those that reproduce the source), with the caller's weight-free ones on top; an
    option the weights fix and the caller sets otherwise is refused."""
    merged = dict(stored)
    for key, value in given.items():
        if key in ("num_classes", "width_mult") or key in _FREE_OPTIONS:
            if key in _FREE_OPTIONS:
                merged[key] = value
            continue
        if key not in stored:
            merged[key] = value  # an unknown option: create_model names it and the accepted ones
        elif value != stored[key]:
            raise ValueError(
                f"{entry.tag} weights of {entry.model} need {key}={stored[key]!r} (what reproduces "
                f"{entry.source} {entry.source_arch}), got {key}={value!r}; options you may change: "
                f"num_classes, {', '.join(_FREE_OPTIONS)}"
            )
    return merged


def create_pretrained(
    name: str,
    pretrained: Union[bool, str],
    options: dict[str, Any],
    features_only: bool = False,
    out_indices: Optional[Sequence[int]] = None,
    feature_location: Optional[str] = None,
) -> Any:
    """What ``create_model(name, pretrained=True | "SOURCE[:TAG]", **options)`` returns.

    The model is built with the options that reproduce the source (TensorFlow padding, BatchNorm epsilon ...),
    carries the source's preprocessing (``default_cfg``), the row's class names and the table's row in
    ``info.extra``. For a classifier, ``num_classes`` other than the weights' replaces the classifier (new,
    untrained; no class names); a segmentation model has no such reset and refuses another ``num_classes``.
    """
    entry = find(name, options.get("width_mult", 1.0), pretrained)
    if entry.task != "classification" and options.get("num_classes", len(entry.class_names)) != len(entry.class_names):
        raise ValueError(
            f"{entry.tag} weights of {name} have {len(entry.class_names)} classes ({entry.dataset}), got "
            f"num_classes={options['num_classes']!r}; a segmentation head cannot be replaced: leave num_classes out"
        )
    path = fetch_converted(entry)
    meta = read_metadata(path)
    merged = _merge_options(entry, meta["options"], options)
    model = create_model(meta["arch"], **merged)
    load_weights_into(model, path)
    num_classes = options.get("num_classes", model.num_classes)
    if num_classes != model.num_classes:
        model.reset_classifier(num_classes)
        # the row's class names belong to the classifier just replaced
        meta = {k: v for k, v in meta.items() if k != "class_names"}
    model.info = described_by(model.info, meta)
    if features_only:
        return MobileNetFeatures(model, out_indices, feature_location or "bottleneck")
    return model
