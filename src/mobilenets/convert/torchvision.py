"""torchvision ``mobilenet_v2``, ``mobilenet_v3_large``, ``mobilenet_v3_small`` state dicts, and its segmentation
and detection models on V3 Large.

Mapping (in forward order, see ``_mapping``): ``features.0`` stem conv + BN -> ``stem``; each
``features.i`` InvertedResidual's expand / depthwise / [SE fc1, fc2] / project convs and BNs -> the
(i-1)-th block in forward order (``stages.s.j``, stages grouping blocks by resolution): ``conv_pw`` /
``conv_dw`` / ``se.conv_reduce``, ``se.conv_expand`` / ``conv_pwl``; the last
``features`` conv -> ``final_conv``; V3 ``classifier.0`` -> ``head_fc``; the last Linear -> ``classifier``.

Options set to reproduce torchvision exactly:

- V2: none (torchvision's V2 rounds widths and keeps the 1280 head below alpha 1 as we do).
- V3: ``bn_eps=1e-3``, ``bn_momentum=0.01`` (torchvision's V3 BatchNorm), ``expand_width="scaled"``
  (expanded widths ``make_divisible(exp * alpha)``), ``last_conv_width="from_blocks"`` (6x the last block)
  and ``head_width="scaled"`` (the 1280/1024 head scales with alpha below 1 too);
  ``strided_block_dilation="new"``: at ``output_stride=16`` the converted model is torchvision's
  ``dilated=True`` backbone (its block that stops striding takes the dilation already).

Segmentation (``lraspp_mobilenet_v3_large``, ``deeplabv3_mobilenet_v3_large``): ``backbone.N`` is the dilated
V3 Large above at output stride 16 (all of ``features``); ``classifier`` -> ``head`` (LR-ASPP: ``cbr``, ``scale``,
``low_classifier``, ``high_classifier``; DeepLabv3: ASPP's 1x1, atrous and pooling branches, ``project``, the
3x3 conv, the classifier) and ``aux_classifier`` (when the file has it) -> ``aux_head``. torchvision's ASPP
uses rates 12, 24, 36 at output stride 16, set as ``atrous_rates``, and reads the output-stride-8 map after the
first block of its stage (``low_level="first_block"``: ``features.4``, 40 channels).

Detection (``ssdlite320_mobilenet_v3_large`` -> ``ssdlite_mobilenet_v3_large``): ``backbone.features`` (torchvision
splits V3 Large at C4's expansion; the layers keep their order) -> ``backbone.body``, ``backbone.extra`` ->
``backbone.extras``, ``head`` -> ``head`` (torchvision's ``SSDLiteHead`` itself). Options: ``reduced_tail=True``
with ``reduced_tail_expansion="kept"`` (torchvision's reduced tail), ``reduce_boxes_in_lowest_layer=False`` (six
default boxes on every map); its batch norm (eps 1e-3, momentum 0.03) is the detectors' default. Width 1 only:
torchvision's extra layers do not scale with ``width_mult``. Preprocessing: mean and std 0.5 (inputs in [-1, 1]).

Preprocessing of the classification and segmentation models: ImageNet mean/std, as torchvision's weights.
"""

from __future__ import annotations

from typing import Any, Mapping, Optional

import torch
from torch import nn

from ..keynames import torchvision_order as forward_order
from ._mapping import Queues, torch_layers
from .core import INCEPTION_MEAN, INCEPTION_STD, SourceSpec

__all__ = ["ARCHS", "resolve", "read"]

LIBRARY = "torchvision"
_V3 = dict(
    bn_eps=1e-3, bn_momentum=0.01, expand_width="scaled", last_conv_width="from_blocks", head_width="scaled",
    strided_block_dilation="new",
)
ARCHS: dict[str, dict[str, Any]] = {
    "mobilenet_v2": {},
    "mobilenet_v3_large": _V3,
    "mobilenet_v3_small": _V3,
    "lraspp_mobilenet_v3_large": {**_V3, "output_stride": 16, "low_level": "first_block"},
    "deeplabv3_mobilenet_v3_large": {**_V3, "output_stride": 16, "atrous_rates": (12, 24, 36), "low_level": "first_block"},
    "ssdlite320_mobilenet_v3_large": {
        "reduced_tail": True, "reduced_tail_expansion": "kept", "reduce_boxes_in_lowest_layer": False,
    },
}
# torchvision's detectors under our names
_DETECTORS = {"ssdlite320_mobilenet_v3_large": "ssdlite_mobilenet_v3_large"}


def resolve(arch: str, width_mult: Optional[float]) -> SourceSpec:
    if arch not in ARCHS:
        raise ValueError(
            f"torchvision has no MobileNet called {arch!r}; supported: {', '.join(ARCHS)} (torchvision's names, "
            "which are also ours)"
        )
    width = 1.0 if width_mult is None else float(width_mult)
    if arch in _DETECTORS:
        if width != 1.0:
            raise ValueError(f"{arch}: width_mult must be 1 (torchvision's extra layers do not scale), got {width:g}")
        return SourceSpec(LIBRARY, arch, _DETECTORS[arch], width, ARCHS[arch], INCEPTION_MEAN, INCEPTION_STD)
    return SourceSpec(LIBRARY, arch, arch, width, ARCHS[arch])


def read(state_dict: Mapping[str, torch.Tensor], label: str) -> Queues:
    return {"all": torch_layers(state_dict, label, forward_order)}


def queue_for(module: nn.Module, queues: Queues) -> str:
    return "all"
