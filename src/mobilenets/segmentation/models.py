"""Segmentation models: a :class:`~mobilenets.models.base.MobileNetFeatures` backbone and a head of
:mod:`.heads`, logits upsampled (bilinear) to the input's size.

Options are one frozen dataclass, :class:`SegmentationOptions`: the head's own (``num_classes``,
``head_channels``, ``aspp`` ...) and the backbone's :class:`~mobilenets.ModelOptions` (``width_mult``,
``output_stride``, ``reduced_tail``, ``bn_eps`` ...) side by side, validated when built; an unknown name raises
listing the accepted ones. The registry (:mod:`mobilenets.registry`) registers the models of :data:`SEGMENTATION_MODELS`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Optional

import torch
import torch.nn.functional as F
from torch import nn

from ..models.base import DescribedTask, MobileNet, MobileNetFeatures, ModelInfo, ModelOptions, TaskOptions
from .heads import LRASPP_POOLING, DeepLabHead, FCNHead, LRASPPHead

__all__ = [
    "SegmentationOptions", "SegmentationModel", "SegmentationSpec", "build_segmentation", "HEADS", "HEAD_INPUTS",
    "SEGMENTATION_MODELS", "SegmentationFigure", "PAPER_FIGURES",
]

HEADS = ("lraspp", "deeplabv3")
HEAD_INPUTS = ("final_conv", "last_stage")
LOW_LEVELS = ("stage", "first_block")
SEGMENTATION_STRIDES = (8, 16)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


@dataclass(frozen=True)
class SegmentationOptions(TaskOptions):
    """A segmentation model's options. ``backbone`` holds the backbone's :class:`ModelOptions` (built without a
    classifier); the others belong to the head.

    ``head_channels``: the head's width, the V3 paper's F for LR-ASPP (128) and ASPP's 256; None takes that
    default. ``aspp`` (DeepLab heads): the three atrous 3x3 branches (rates 6, 12, 18 at output stride 16, twice
    that at 8, or ``atrous_rates``); False is R-ASPP, the 1x1 branch and image pooling only. ``head_conv``: the
    3x3 conv torchvision's DeepLabHead has after ASPP. ``head_input``: the map the DeepLab head reads,
    ``"final_conv"`` (torchvision) or ``"last_stage"`` (the V2 paper: the 320-channel map, before the 1x1 conv
    to 1280). ``pooling`` (LR-ASPP): ``"global"`` or ``"paper"`` (:class:`~.heads.PaperPool`). ``aux_head``: an
    FCN head on the output-stride-8 map, for training and for torchvision's weights. ``low_level``: that map (LR-ASPP's
    low-level branch, the aux head's input) is the output of the stage at stride 8 (``"stage"``) or of its first
    block (``"first_block"``, torchvision's). ``dropout``: before the
    DeepLab classifier (LR-ASPP has none: it must be 0).
    """

    FIXED = ("head", "backbone")  # the head comes with the registered name

    head: str
    backbone: ModelOptions
    num_classes: int = 21
    head_channels: Optional[int] = None
    aspp: bool = True
    atrous_rates: Optional[tuple[int, ...]] = None
    head_conv: bool = False
    head_input: str = "final_conv"
    pooling: str = "global"
    aux_head: bool = False
    low_level: str = "stage"
    dropout: float = 0.0

    def __post_init__(self) -> None:
        def check(ok: bool, msg: str) -> None:
            if not ok:
                raise ValueError(msg)

        deeplab = self.head == "deeplabv3"
        check(self.head in HEADS, f"head must be one of {', '.join(map(repr, HEADS))}, got {self.head!r}")
        check(_is_int(self.num_classes) and self.num_classes >= 1,
              f"num_classes must be an integer >= 1 (background included), got {self.num_classes!r}")
        check(self.head_channels is None or (_is_int(self.head_channels) and self.head_channels >= 1),
              f"head_channels must be an integer >= 1 or None (the head's default), got {self.head_channels!r}")
        for name in ("aspp", "head_conv", "aux_head"):
            check(isinstance(getattr(self, name), bool), f"{name} must be True or False, got {getattr(self, name)!r}")
        check(self.backbone.output_stride in SEGMENTATION_STRIDES,
              f"output_stride must be 8 or 16 for segmentation, got {self.backbone.output_stride!r}")
        check(self.head_input in HEAD_INPUTS,
              f"head_input must be one of {', '.join(map(repr, HEAD_INPUTS))}, got {self.head_input!r}")
        check(self.low_level in LOW_LEVELS,
              f"low_level must be one of {', '.join(map(repr, LOW_LEVELS))}, got {self.low_level!r}")
        check(self.pooling in LRASPP_POOLING,
              f"pooling must be one of {', '.join(map(repr, LRASPP_POOLING))}, got {self.pooling!r}")
        check(isinstance(self.dropout, (int, float)) and not isinstance(self.dropout, bool)
              and 0.0 <= self.dropout < 1.0, f"dropout must be in [0, 1), got {self.dropout!r}")
        if self.atrous_rates is not None:
            rates = self.atrous_rates
            check(isinstance(rates, (tuple, list)) and len(rates) > 0 and all(_is_int(r) and r >= 1 for r in rates),
                  f"atrous_rates must be a non-empty sequence of integers >= 1, got {rates!r}")
            check(self.aspp, "atrous_rates needs aspp=True (aspp=False has no atrous branch)")
            object.__setattr__(self, "atrous_rates", tuple(rates))
        # options of the other head are refused rather than ignored
        if not deeplab:
            for name, default in (("aspp", True), ("atrous_rates", None), ("head_conv", False),
                                  ("head_input", "final_conv"), ("dropout", 0.0)):
                check(getattr(self, name) == default, f"option {name}={getattr(self, name)!r} applies to the "
                      "DeepLabv3 heads (deeplabv3_*), not to LR-ASPP")
            check(not self.aux_head, "aux_head applies to the DeepLabv3 heads (deeplabv3_*), not to LR-ASPP")
        else:
            check(self.pooling == "global", f"pooling={self.pooling!r} applies to LR-ASPP (lraspp_*), not to "
                  "DeepLabv3, whose image pooling is global")

    @property
    def rates(self) -> tuple[int, ...]:
        """The atrous rates the ASPP uses: none without ASPP, DeepLab's (6, 12, 18) at output stride 16 and
        (12, 24, 36) at 8 unless ``atrous_rates`` says otherwise."""
        if not self.aspp:
            return ()
        if self.atrous_rates is not None:
            return self.atrous_rates
        return (6, 12, 18) if self.backbone.output_stride == 16 else (12, 24, 36)


class SegmentationModel(DescribedTask, nn.Module):
    """``backbone`` (:class:`MobileNetFeatures`) -> ``head`` -> bilinear upsampling to the input's size.

    ``forward`` returns logits (N, num_classes, H, W); with ``aux_head``, :meth:`forward_with_aux` returns the
    auxiliary logits too (also at input size), for a training loss."""

    def __init__(self, info: ModelInfo, backbone: MobileNetFeatures, head: nn.Module,
                 aux_head: Optional[nn.Module] = None) -> None:
        super().__init__()
        self.info = info
        self.backbone = backbone
        self.head = head
        if aux_head is not None:
            self.aux_head = aux_head

    def _logits(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        maps = self.backbone(x)
        if self.options.head == "lraspp":
            return self.head(maps[0], maps[-1]), maps
        return self.head(maps[-1]), maps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out, _ = self._logits(x)
        return F.interpolate(out, size=x.shape[-2:], mode="bilinear", align_corners=False)

    def forward_with_aux(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if not hasattr(self, "aux_head"):
            raise RuntimeError(f"{self.arch} was built without aux_head; create it with aux_head=True")
        out, maps = self._logits(x)
        aux = self.aux_head(maps[0])
        size = x.shape[-2:]
        return (F.interpolate(out, size=size, mode="bilinear", align_corners=False),
                F.interpolate(aux, size=size, mode="bilinear", align_corners=False))


def _low_level_index(model: MobileNet) -> int:
    """The first map at output stride 8 or coarser: LR-ASPP's low-level branch and the aux head's input."""
    reductions = model.feature_info.reduction()
    return next(i for i, r in enumerate(reductions) if r >= 8)


def build_segmentation(
    arch: str, opts: SegmentationOptions, build_backbone: Callable[[str, ModelOptions], MobileNet]
) -> SegmentationModel:
    """Build ``opts.head`` on the backbone ``build_backbone`` makes (any classification builder of the registry:
    the registry passes the entry of ``mobilenet_v2``, ``mobilenet_v3_large`` ...)."""
    net = build_backbone(arch, opts.backbone)
    low = _low_level_index(net)
    last = len(net.feature_info) - 1
    num_classes = opts.num_classes
    first_block = (low,) if opts.low_level == "first_block" else ()
    aux = None
    if opts.head == "lraspp":
        features = MobileNetFeatures(net, (low, last), first_block_of=first_block)
        low_chs, high_chs = features.feature_info.channels()
        head: nn.Module = LRASPPHead(low_chs, high_chs, num_classes, opts.head_channels or 128, opts.pooling)
    else:
        final = opts.head_input == "final_conv"
        features = MobileNetFeatures(net, (low, last), final_conv=final, first_block_of=first_block)
        low_chs, high_chs = features.feature_info.channels()
        head = DeepLabHead(high_chs, num_classes, opts.head_channels or 256, opts.rates, opts.dropout, opts.head_conv)
        aux = FCNHead(low_chs, num_classes) if opts.aux_head else None
    info = ModelInfo(arch=arch, options=opts, input_size=(opts.backbone.in_chans, 512, 512),  # type: ignore[arg-type]
                     min_input_size=net.info.min_input_size)
    return SegmentationModel(info, features, head, aux)


@dataclass(frozen=True)
class SegmentationSpec:
    """A registered segmentation model: its head and defaults on the network of a classification entry."""

    backbone: str
    defaults: dict[str, Any]
    description: str


_LRASPP = {"head": "lraspp", "num_classes": 21, "output_stride": 16}
SEGMENTATION_MODELS: dict[str, SegmentationSpec] = {
    "lraspp_mobilenet_v3_large": SegmentationSpec(
        "mobilenet_v3_large", _LRASPP, "LR-ASPP on V3 Large (V3 paper section 6.3; reduced_tail=True is RF2)"),
    "lraspp_mobilenet_v3_small": SegmentationSpec(
        "mobilenet_v3_small", _LRASPP, "LR-ASPP on V3 Small (V3 paper section 6.3)"),
    "lraspp_mobilenet_v2": SegmentationSpec("mobilenet_v2", _LRASPP, "LR-ASPP on V2"),
    # the V2 paper's Mobile DeepLabv3 (section 6.3): the head on the 320-channel map, no 3x3 conv after ASPP
    "deeplabv3_mobilenet_v2": SegmentationSpec(
        "mobilenet_v2",
        {"head": "deeplabv3", "num_classes": 21, "output_stride": 16, "head_input": "last_stage", "dropout": 0.1},
        "Mobile DeepLabv3 (V2 paper section 6.3); aspp=False is the paper's 'no ASPP' row",
    ),
    # torchvision's deeplabv3_mobilenet_v3_large: on the 960-channel map, a 3x3 conv after ASPP, dropout 0.5
    "deeplabv3_mobilenet_v3_large": SegmentationSpec(
        "mobilenet_v3_large",
        {"head": "deeplabv3", "num_classes": 21, "output_stride": 16, "head_conv": True, "dropout": 0.5},
        "DeepLabv3 on V3 Large (torchvision's layout)",
    ),
}


@dataclass(frozen=True)
class SegmentationFigure:
    """A published segmentation complexity figure and the model and input that reproduce it
    (``mobilenets profile ARCH --option NAME=VALUE ... --resolution HxW``; conventions in docs/segmentation.md)."""

    arch: str
    options: dict[str, Any]
    resolution: tuple[int, int]
    params_m: float
    macs_b: float
    source: str


# The papers' models are TensorFlow DeepLab's, whose 512x512 and 1024x2048 images are evaluated as 513x513 and
# 1025x2049 crops; the figures are counted there.
PAPER_FIGURES: tuple[SegmentationFigure, ...] = (
    SegmentationFigure("lraspp_mobilenet_v3_large", {"reduced_tail": True, "num_classes": 19}, (1025, 2049),
                       1.51, 9.74, "V3 paper (arXiv:1905.02244v5) Table 7 row 8: V3, RF2, LR-ASPP, F=128"),
    SegmentationFigure("deeplabv3_mobilenet_v2", {"aspp": False, "num_classes": 21}, (513, 513),
                       2.11, 2.75, "V2 paper (arXiv:1801.04381v4) Table 7: MNet V2*, OS 16, no ASPP"),
)
