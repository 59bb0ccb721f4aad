"""Model registry: names, default options and the papers' published figures for each model."""

from __future__ import annotations

import difflib
import fnmatch
from dataclasses import dataclass, field
from typing import Any, Callable, Optional, Sequence, Union

from .models.base import FEATURE_LOCATIONS, MobileNet, MobileNetFeatures, ModelOptions
from .models.mobilenet_v1 import build_mobilenet_v1
from .models.mobilenet_v2 import build_mobilenet_v2
from .models.mobilenet_v3 import MOBILENET_V3_LARGE, MOBILENET_V3_SMALL, build_mobilenet_v3, minimal
from .models.mobilenet_v4 import (
    MOBILENET_V4_CONV_LARGE,
    MOBILENET_V4_CONV_MEDIUM,
    MOBILENET_V4_CONV_SMALL,
    MOBILENET_V4_HYBRID_LARGE,
    MOBILENET_V4_HYBRID_MEDIUM,
    build_mobilenet_v4,
)
from .detection.options import DETECTION_MODELS, DetectionOptions
from .segmentation.models import SEGMENTATION_MODELS, SegmentationOptions, build_segmentation

__all__ = ["ModelEntry", "PaperFigure", "create_model", "feature_location_of", "list_models", "get_entry"]


@dataclass(frozen=True)
class PaperFigure:
    """A published complexity figure: width, resolution, classes, mult-adds and params in millions."""

    width_mult: float
    resolution: int
    num_classes: int
    macs_m: float
    params_m: Optional[float]
    top1: Optional[float]
    source: str


@dataclass(frozen=True)
class ModelEntry:
    name: str
    build: Callable[[str, ModelOptions], MobileNet]
    defaults: dict[str, Any] = field(default_factory=dict)
    paper: tuple[PaperFigure, ...] = ()
    description: str = ""
    # the options dataclass: its build(defaults, overrides, name) validates, its names() are the accepted ones
    options_type: Any = ModelOptions
    task: str = "classification"


_V1 = "V1 paper (arXiv:1704.04861) Tables 6-7"
_V2 = "V2 paper Table 3 / TF-slim mobilenet_v2 README (1001 classes)"
_V3 = "V3 paper (arXiv:1905.02244v5) Table 3"
_V3M = "TF-slim mobilenet_v3 README (minimalistic)"
_V4 = "V4 paper (arXiv:2404.10518v2) ImageNet-1K results table"

_REGISTRY: dict[str, ModelEntry] = {
    e.name: e
    for e in (
        ModelEntry(
            "mobilenet_v1",
            build_mobilenet_v1,
            {"dropout": 0.001},
            (
                PaperFigure(1.0, 224, 1001, 569, 4.2, 70.6, _V1),
                PaperFigure(0.75, 224, 1001, 325, 2.6, 68.4, _V1),
                PaperFigure(0.5, 224, 1001, 149, 1.3, 63.7, _V1),
                PaperFigure(0.25, 224, 1001, 41, 0.5, 50.6, _V1),
                PaperFigure(1.0, 192, 1001, 418, 4.2, 69.1, _V1),
                PaperFigure(1.0, 160, 1001, 290, 4.2, 67.2, _V1),
                PaperFigure(1.0, 128, 1001, 186, 4.2, 64.4, _V1),
            ),
            "depthwise separable convolutions, ReLU",
        ),
        ModelEntry(
            "mobilenet_v2",
            build_mobilenet_v2,
            {"dropout": 0.2},
            (
                PaperFigure(1.0, 224, 1001, 300, 3.4, 72.0, _V2),
                PaperFigure(1.4, 224, 1001, 582, 6.06, 75.0, _V2),
                PaperFigure(0.35, 224, 1001, 59, 1.66, 60.3, _V2),
            ),
            "inverted residuals with linear bottlenecks, ReLU6",
        ),
        ModelEntry(
            "mobilenet_v3_large",
            lambda arch, opts: build_mobilenet_v3(arch, opts, MOBILENET_V3_LARGE),
            {"dropout": 0.2},
            (
                PaperFigure(1.0, 224, 1000, 219, 5.4, 75.2, _V3),
                PaperFigure(0.75, 224, 1000, 155, 4.0, 73.3, _V3),
            ),
            "V2 blocks + squeeze-excite + h-swish, Large",
        ),
        ModelEntry(
            "mobilenet_v3_small",
            lambda arch, opts: build_mobilenet_v3(arch, opts, MOBILENET_V3_SMALL),
            {"dropout": 0.2},
            (
                PaperFigure(1.0, 224, 1000, 56, 2.5, 67.4, _V3),
                PaperFigure(0.75, 224, 1000, 44, 2.0, 65.4, _V3),
            ),
            "V2 blocks + squeeze-excite + h-swish, Small",
        ),
        ModelEntry(
            "mobilenet_v3_large_minimal",
            lambda arch, opts: build_mobilenet_v3(arch, opts, minimal(MOBILENET_V3_LARGE)),
            {"dropout": 0.2},
            (PaperFigure(1.0, 224, 1001, 209, 3.9, 72.3, _V3M),),
            "V3 Large without SE, h-swish or 5x5 kernels",
        ),
        ModelEntry(
            "mobilenet_v3_small_minimal",
            lambda arch, opts: build_mobilenet_v3(arch, opts, minimal(MOBILENET_V3_SMALL)),
            {"dropout": 0.2},
            (PaperFigure(1.0, 224, 1001, 65, 2.0, 61.9, _V3M),),
            "V3 Small without SE, h-swish or 5x5 kernels",
        ),
        ModelEntry(
            "mobilenet_v4_conv_small",
            lambda arch, opts: build_mobilenet_v4(arch, opts, MOBILENET_V4_CONV_SMALL),
            {"dropout": 0.2},
            (PaperFigure(1.0, 224, 1000, 200, 3.8, 73.8, _V4),),
            "universal inverted bottlenecks (IB, ConvNext, ExtraDW), ReLU, Small",
        ),
        ModelEntry(
            "mobilenet_v4_conv_medium",
            lambda arch, opts: build_mobilenet_v4(arch, opts, MOBILENET_V4_CONV_MEDIUM),
            {"dropout": 0.2},
            (PaperFigure(1.0, 256, 1000, 1000, 9.2, 79.9, _V4),),
            "fused IB + universal inverted bottlenecks (incl. FFN), ReLU, Medium",
        ),
        ModelEntry(
            "mobilenet_v4_conv_large",
            lambda arch, opts: build_mobilenet_v4(arch, opts, MOBILENET_V4_CONV_LARGE),
            {"dropout": 0.2},
            (PaperFigure(1.0, 384, 1000, 5900, 31.0, 82.9, _V4),),
            "fused IB + universal inverted bottlenecks, ReLU, Large",
        ),
        ModelEntry(
            "mobilenet_v4_hybrid_medium",
            lambda arch, opts: build_mobilenet_v4(arch, opts, MOBILENET_V4_HYBRID_MEDIUM),
            {"dropout": 0.2},
            (PaperFigure(1.0, 256, 1000, 1200, 10.5, 80.7, _V4),),
            "Conv-M's blocks + Mobile MQA attention, layer scale, ReLU, Medium",
        ),
        ModelEntry(
            "mobilenet_v4_hybrid_large",
            lambda arch, opts: build_mobilenet_v4(arch, opts, MOBILENET_V4_HYBRID_LARGE),
            {"dropout": 0.2},
            (PaperFigure(1.0, 384, 1000, 7200, 35.9, 83.4, _V4),),
            "Conv-L's blocks + Mobile MQA attention, layer scale, GELU, Large",
        ),
    )
}


def _build_detector(arch: str, opts: DetectionOptions, backbone: Callable[[str, ModelOptions], MobileNet]) -> Any:
    # SSDLite is torchvision's SSD: its module needs torchvision (the train extra), so the core imports it only
    # when a detector is built
    try:
        from .detection.models import build_ssdlite
    except ModuleNotFoundError as exc:
        if exc.name != "torchvision":
            raise
        raise ImportError(f"{arch} needs torchvision: pip install 'mobilenets[train]'") from None
    return build_ssdlite(arch, opts, backbone)


# segmentation models (issue #23) and detectors (issue #24): a head on the network a classification entry builds
for _task, _specs, _build, _options_type in (
    ("segmentation", SEGMENTATION_MODELS, build_segmentation, SegmentationOptions),
    ("detection", DETECTION_MODELS, _build_detector, DetectionOptions),
):
    for _name, _spec in _specs.items():
        _REGISTRY[_name] = ModelEntry(
            _name,
            lambda arch, opts, backbone=_REGISTRY[_spec.backbone].build, build=_build: build(arch, opts, backbone),
            _spec.defaults,
            description=_spec.description,
            options_type=_options_type,
            task=_task,
        )

TASKS = ("classification", "segmentation", "detection")


def list_models(pattern: str = "*", task: Optional[str] = "classification") -> list[str]:
    """Registered model names, sorted; ``pattern`` is a shell-style wildcard (``"mobilenet_v3*"``); ``task``
    is ``"classification"`` (the default), ``"segmentation"``, ``"detection"`` or None for every model."""
    if task is not None and task not in TASKS:
        raise ValueError(f"task must be one of {', '.join(map(repr, TASKS))} or None, got {task!r}")
    return sorted(
        n for n, e in _REGISTRY.items() if fnmatch.fnmatch(n, pattern) and (task is None or e.task == task)
    )


def get_entry(name: str) -> ModelEntry:
    try:
        return _REGISTRY[name]
    except KeyError:
        match = difflib.get_close_matches(str(name), list(_REGISTRY), n=1)
        hint = f" (did you mean {match[0]!r}?)" if match else ""
        raise ValueError(f"unknown model {name!r}{hint}; available: {', '.join(name for task in TASKS for name in list_models(task=task))}") from None


def feature_location_of(
    features_only: bool, out_indices: Optional[Sequence[int]], feature_location: Optional[str]
) -> str:
    """The feature location asked for (``"bottleneck"`` unless given), after checking the three feature
    arguments of :func:`create_model` fit together."""
    if not isinstance(features_only, bool):
        raise ValueError(f"features_only must be True or False, got {features_only!r}")
    if not features_only and (out_indices is not None or feature_location is not None):
        raise ValueError("out_indices and feature_location apply to feature extractors: pass features_only=True")
    location = "bottleneck" if feature_location is None else feature_location
    if location not in FEATURE_LOCATIONS:
        raise ValueError(
            f"feature_location must be one of {', '.join(map(repr, FEATURE_LOCATIONS))}, got {feature_location!r}"
        )
    return location


def check_features_only(name: str, features_only: bool) -> None:
    """Refuse ``features_only`` for a model that is not a classification network (a segmentation model)."""
    task = get_entry(name).task
    if features_only and task != "classification":
        raise ValueError(f"features_only applies to classification models; {name} is a {task} model")


def create_model(
    name: str,
    features_only: bool = False,
    out_indices: Optional[Sequence[int]] = None,
    feature_location: Optional[str] = None,
    **options: Any,
) -> Union[MobileNet, MobileNetFeatures]:
    """Build a registered model with initial weights. ``options`` are those of :class:`ModelOptions`; an unknown
    one raises. The feature arguments are those of :func:`mobilenets.create_model`, which adds ``pretrained``
    (weights live in the layers above this one: :mod:`mobilenets.api`)."""
    entry = get_entry(name)
    location = feature_location_of(features_only, out_indices, feature_location)
    check_features_only(name, features_only)
    model = entry.build(name, entry.options_type.build(entry.defaults, options, name))
    return MobileNetFeatures(model, out_indices, location) if features_only else model
