"""What a detector is made of and how it is registered, on torch alone (the models themselves, in
:mod:`.models`, are torchvision's SSD and need torchvision): :class:`DetectionOptions`, the registered SSDLite
detectors :data:`DETECTION_MODELS` and the papers' complexity figures :data:`PAPER_FIGURES` (docs/detection.md).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Union

from ..models.base import ModelOptions, TaskOptions

__all__ = [
    "DetectionOptions", "DetectionSpec", "DETECTION_MODELS", "DetectionFigure", "PAPER_FIGURES", "SSDLITE_MEAN",
    "SSDLITE_STD", "EXTRA_CHANNELS", "EXTRA_MIN_CHANNELS", "ASPECT_RATIOS", "MIN_RATIO", "MAX_RATIO",
    "LOWEST_LAYER_SCALE",
]

# TensorFlow's SSDLite and torchvision's ssdlite320 feed images scaled to [-1, 1]: mean and std 0.5 on each
# channel, however many the model takes (a detector's info repeats them in_chans times)
SSDLITE_MEAN = 0.5
SSDLITE_STD = 0.5
# the extra layers' widths at width_mult 1 (V2 paper section 6.2; TensorFlow's and torchvision's SSDLite)
EXTRA_CHANNELS = (512, 256, 256, 128)
EXTRA_MIN_CHANNELS = 16
# torchvision's ssdlite320 default boxes: aspect ratios 2 and 3 (and their inverses) on every map, scales
# spaced linearly from 0.2 to 0.95 over the six maps
ASPECT_RATIOS = (2, 3)
MIN_RATIO, MAX_RATIO = 0.2, 0.95
# TensorFlow's SSD anchors (reduce_boxes_in_lowest_layer, the papers' models): the first map has three boxes,
# (scale 0.1, aspect ratio 1) and (MIN_RATIO, 2 and 1/2)
LOWEST_LAYER_SCALE = 0.1
def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


@dataclass(frozen=True)
class DetectionOptions(TaskOptions):
    """An SSDLite detector's options. ``backbone`` holds the backbone's :class:`ModelOptions` (built without a
    classifier, at output stride 32); the others belong to the detector.

    ``num_classes``: the classes with the background (index 0), 91 for COCO as torchvision counts.
    ``image_size``: the (H, W) every image is resized to (an int is square). ``score_thresh``, ``nms_thresh``,
    ``detections_per_img`` and ``topk_candidates``: post-processing, torchvision's ssdlite320 values (the model's
    attributes of the same names may be changed after building). ``reduce_boxes_in_lowest_layer``: TensorFlow's
    SSD anchors, as the papers' models have them, three default boxes on the first map instead of six (False:
    torchvision's ssdlite320, six on every map).
    """

    backbone: ModelOptions
    num_classes: int = 91
    image_size: Union[int, tuple[int, int]] = 320
    score_thresh: float = 0.001
    nms_thresh: float = 0.55
    detections_per_img: int = 300
    topk_candidates: int = 300
    reduce_boxes_in_lowest_layer: bool = True

    def __post_init__(self) -> None:
        def check(ok: bool, msg: str) -> None:
            if not ok:
                raise ValueError(msg)

        check(_is_int(self.num_classes) and self.num_classes >= 2,
              f"num_classes must be an integer >= 2 (background included), got {self.num_classes!r}")
        size = self.image_size
        if _is_int(size):
            size = (size, size)
        check(isinstance(size, (tuple, list)) and len(size) == 2 and all(_is_int(s) and s >= 1 for s in size),
              f"image_size must be an integer or (height, width) of integers >= 1, got {self.image_size!r}")
        object.__setattr__(self, "image_size", (int(size[0]), int(size[1])))
        check(self.backbone.output_stride == 32,
              f"output_stride must be 32 for detection (SSDLite's maps run from output stride 16 to 512), "
              f"got {self.backbone.output_stride!r}")
        for name in ("score_thresh", "nms_thresh"):
            value = getattr(self, name)
            check(_is_number(value) and 0.0 <= value <= 1.0, f"{name} must be a number in [0, 1], got {value!r}")
        check(isinstance(self.reduce_boxes_in_lowest_layer, bool),
              f"reduce_boxes_in_lowest_layer must be True or False, got {self.reduce_boxes_in_lowest_layer!r}")
        for name in ("detections_per_img", "topk_candidates"):
            value = getattr(self, name)
            check(_is_int(value) and value >= 1, f"{name} must be an integer >= 1, got {value!r}")

    @classmethod
    def build(cls, defaults: dict[str, Any], overrides: dict[str, Any], model_name: str) -> "DetectionOptions":
        """:meth:`TaskOptions.build`, with what ``reduced_tail=True`` brings on this model unless given
        (:attr:`DetectionSpec.reduced_tail_defaults`)."""
        spec = DETECTION_MODELS.get(model_name)
        if {**defaults, **overrides}.get("reduced_tail") is True and spec is not None:
            defaults = {**defaults, **spec.reduced_tail_defaults}
        return super().build(defaults, overrides, model_name)


@dataclass(frozen=True)
class DetectionSpec:
    """A registered detector: SSDLite with these defaults on the network of a classification entry."""

    backbone: str
    defaults: dict[str, Any]
    description: str
    # what reduced_tail=True brings with it unless given: the V3 paper's Table 6 dagger keeps the expansion of
    # the last stage's first block (672 on Large, 288 on Small; its counts need it), as torchvision's does
    reduced_tail_defaults: dict[str, Any] = dataclasses.field(default_factory=dict)


# TensorFlow's and torchvision's SSDLite batch norm (decay 0.97 is PyTorch's momentum 0.03)
_KEPT = {"reduced_tail_expansion": "kept"}
_SSDLITE = {"num_classes": 91, "image_size": 320, "bn_eps": 1e-3, "bn_momentum": 0.03}
DETECTION_MODELS: dict[str, DetectionSpec] = {
    "ssdlite_mobilenet_v1": DetectionSpec(
        "mobilenet_v1", _SSDLITE, "SSDLite on V1 (maps at Conv2d_11_pointwise and the last layer)"),
    "ssdlite_mobilenet_v2": DetectionSpec(
        "mobilenet_v2", _SSDLITE, "SSDLite on V2 (V2 paper section 6.2)"),
    "ssdlite_mobilenet_v3_large": DetectionSpec(
        "mobilenet_v3_large", _SSDLITE, "SSDLite on V3 Large (V3 paper section 6.2; reduced_tail=True: Table 6's dagger)",
        _KEPT),
    "ssdlite_mobilenet_v3_small": DetectionSpec(
        "mobilenet_v3_small", _SSDLITE, "SSDLite on V3 Small (V3 paper section 6.2; reduced_tail=True: Table 6's dagger)",
        _KEPT),
}


@dataclass(frozen=True)
class DetectionFigure:
    """A published detector complexity figure and the model that reproduces it at 320x320
    (``mobilenets profile ARCH --resolution 320x320 --option NAME=VALUE``; conventions in docs/detection.md)."""

    arch: str
    options: dict[str, Any]
    params_m: float
    macs_b: float
    source: str


_V2_T6 = "V2 paper (arXiv:1801.04381v4) Table 6: MNet V2 + SSDLite, COCO, 320x320"
_V3_T6 = "V3 paper (arXiv:1905.02244v5) Table 6: SSDLite, COCO, 320x320"
PAPER_FIGURES: tuple[DetectionFigure, ...] = (
    DetectionFigure("ssdlite_mobilenet_v2", {}, 4.3, 0.80, _V2_T6 + "; " + _V3_T6 + ", row V2"),
    DetectionFigure("ssdlite_mobilenet_v1", {}, 5.1, 1.3, _V3_T6 + ", row V1"),
    DetectionFigure("ssdlite_mobilenet_v3_large", {}, 4.97, 0.62, _V3_T6 + ", row V3"),
    DetectionFigure("ssdlite_mobilenet_v3_large", {"reduced_tail": True}, 3.22, 0.51, _V3_T6 + ", row V3 dagger"),
    DetectionFigure("ssdlite_mobilenet_v3_small", {"reduced_tail": True}, 1.77, 0.16,
                    _V3_T6 + ", row V3-Small dagger"),
)
"""Reproduced within 5% by ``mobilenets profile ARCH --resolution 320x320`` (tests/test_detection_models.py).
The V3 paper's row V3-Small (2.49M, 0.16B) is left out: 2.52M params but 0.21B MACs, while the same network
with the reduced tail counts 0.16B, the figure the paper prints for both rows (docs/detection.md)."""
