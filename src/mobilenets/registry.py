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

__all__ = ["ModelEntry", "PaperFigure", "create_model", "list_models", "get_entry"]


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


def list_models(pattern: str = "*") -> list[str]:
    """Registered model names, sorted; ``pattern`` is a shell-style wildcard (``"mobilenet_v3*"``)."""
    return sorted(n for n in _REGISTRY if fnmatch.fnmatch(n, pattern))


def get_entry(name: str) -> ModelEntry:
    try:
        return _REGISTRY[name]
    except KeyError:
        match = difflib.get_close_matches(str(name), list(_REGISTRY), n=1)
        hint = f" (did you mean {match[0]!r}?)" if match else ""
        raise ValueError(f"unknown model {name!r}{hint}; available: {', '.join(list_models())}") from None


# pretrained="SOURCE[:TAG]" names published weights (mobilenets.weights.SOURCES), any other string is a path
_WEIGHT_SOURCES = ("torchvision", "timm", "keras")


def create_model(
    name: str,
    pretrained: Union[None, bool, str] = None,
    features_only: bool = False,
    out_indices: Optional[Sequence[int]] = None,
    feature_location: Optional[str] = None,
    **options: Any,
) -> Union[MobileNet, MobileNetFeatures]:
    """Build a registered model. ``options`` are those of :class:`ModelOptions`; an unknown one raises.

    ``pretrained`` is a path to a checkpoint (.safetensors, or .pth/.pt loaded with ``weights_only=True``)
    whose tensors must match the architecture exactly; ``True`` takes the model's default published weights and
    ``"torchvision"``, ``"timm:ra4_e3600_r224_in1k"``, ``"keras:160"`` ... a source (its default) or a tag
    (:mod:`mobilenets.weights`: downloaded, converted and cached once).

    ``features_only=True`` returns a :class:`MobileNetFeatures` backbone whose ``forward`` gives the maps of
    ``feature_info``: ``out_indices`` picks them (all five by default), ``feature_location`` takes stage outputs
    (``"bottleneck"``, the default) or the input of each stage's last projection conv (``"expansion"``). With
    ``pretrained`` the checkpoint's classification head (``head_fc``, ``classifier``) is not loaded, its
    backbone tensors must match.
    """
    entry = get_entry(name)
    if not isinstance(features_only, bool):
        raise ValueError(f"features_only must be True or False, got {features_only!r}")
    if not features_only and (out_indices is not None or feature_location is not None):
        raise ValueError("out_indices and feature_location apply to feature extractors: pass features_only=True")
    location = "bottleneck" if feature_location is None else feature_location
    if location not in FEATURE_LOCATIONS:
        raise ValueError(
            f"feature_location must be one of {', '.join(map(repr, FEATURE_LOCATIONS))}, got {feature_location!r}"
        )
    if pretrained is True or (isinstance(pretrained, str) and pretrained.partition(":")[0] in _WEIGHT_SOURCES):
        from .weights import create_pretrained

        return create_pretrained(name, pretrained, options, features_only, out_indices, location)
    if pretrained is False:
        pretrained = None
    opts = ModelOptions.build(entry.defaults, options, name)
    model = entry.build(name, opts)
    if pretrained is not None:
        from .checkpoint import load_weights_into

        load_weights_into(model, pretrained, backbone_only=features_only)
    return MobileNetFeatures(model, out_indices, location) if features_only else model
