"""Segmentation heads: LR-ASPP (V3 paper section 6.3, Figure 10), ASPP / R-ASPP (DeepLabv3 as the V2 paper's
section 6.3 uses it) and the FCN auxiliary head torchvision trains DeepLabv3 with.

Each head registers its layers in torchvision's order (``LRASPPHead``, ``ASPP``, ``DeepLabHead``, ``FCNHead``)
so that torchvision's weights map layer by layer (:mod:`mobilenets.convert.torchvision`). Head batch norms use
PyTorch's defaults (eps 1e-5, momentum 0.1) whatever the backbone uses, as torchvision's and DeepLab's heads do.
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..layers import ConvNormAct

__all__ = ["LRASPPHead", "PaperPool", "ASPP", "DeepLabHead", "FCNHead", "LRASPP_POOLING"]

LRASPP_POOLING = ("global", "paper")


def _upsample(x: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    return F.interpolate(x, size=tuple(size), mode="bilinear", align_corners=False)


class PaperPool(nn.AvgPool2d):
    """The V3 paper's LR-ASPP pooling (Figure 10): a 49x49 average pool with stride (16, 20), which at
    1024x2048 and output stride 16 leaves a 1x4 map of gates. On maps smaller than 49 px the kernel is the
    map's side (global along that axis), so any input size runs."""

    def __init__(self, kernel: int = 49, stride: tuple[int, int] = (16, 20)) -> None:
        super().__init__(kernel, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        kernel = (min(self.kernel_size, h), min(self.kernel_size, w))
        return F.avg_pool2d(x, kernel, self.stride)


class LRASPPHead(nn.Module):
    """Lite R-ASPP: the high-level map (output stride 16) through a 1x1 conv + BN + ReLU, gated by a sigmoid of a
    1x1 conv on pooled features, upsampled to the low-level map (output stride 8); each map gets a 1x1 classifier
    and the two are summed. ``pooling="global"`` (torchvision, the default) pools to 1x1; ``"paper"`` uses
    :class:`PaperPool` and the gates vary across the image."""

    def __init__(self, low_chs: int, high_chs: int, num_classes: int, inter_chs: int = 128, pooling: str = "global"):
        super().__init__()
        if pooling not in LRASPP_POOLING:
            raise ValueError(f"pooling must be one of {', '.join(map(repr, LRASPP_POOLING))}, got {pooling!r}")
        self.pooling = pooling
        self.cbr = ConvNormAct(high_chs, inter_chs, 1, act_layer=nn.ReLU)
        pool = nn.AdaptiveAvgPool2d(1) if pooling == "global" else PaperPool()
        self.scale = nn.Sequential(pool, nn.Conv2d(high_chs, inter_chs, 1, bias=False), nn.Sigmoid())
        self.low_classifier = nn.Conv2d(low_chs, num_classes, 1)
        self.high_classifier = nn.Conv2d(inter_chs, num_classes, 1)

    def forward(self, low: torch.Tensor, high: torch.Tensor) -> torch.Tensor:
        x = self.cbr(high)
        gate = self.scale(high)
        # a global gate (1x1) broadcasts, as torchvision's does; resizing it would add a Resize to every export
        if self.pooling != "global" and gate.shape[-2:] != x.shape[-2:]:
            gate = _upsample(gate, x.shape[-2:])
        x = _upsample(x * gate, low.shape[-2:])
        return self.low_classifier(low) + self.high_classifier(x)


class _ImagePooling(nn.Module):
    """ASPP's image-level branch: global average, 1x1 conv + BN + ReLU, broadcast back to the map's size."""

    def __init__(self, in_chs: int, out_chs: int) -> None:
        super().__init__()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.conv = ConvNormAct(in_chs, out_chs, 1, act_layer=nn.ReLU)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _upsample(self.conv(self.pool(x)), x.shape[-2:])


class ASPP(nn.Module):
    """Atrous spatial pyramid pooling: a 1x1 branch, one 3x3 branch per atrous rate, image pooling, concatenated
    and projected by a 1x1 conv (+ BN, ReLU, dropout). Without rates it is R-ASPP (V3 paper section 6.3) and the
    V2 paper's "no ASPP" Mobile DeepLabv3: the 1x1 branch and image pooling only."""

    def __init__(self, in_chs: int, out_chs: int, atrous_rates: Sequence[int], dropout: float) -> None:
        super().__init__()
        branches: list[nn.Module] = [ConvNormAct(in_chs, out_chs, 1, act_layer=nn.ReLU)]
        for rate in atrous_rates:
            branches.append(ConvNormAct(in_chs, out_chs, 3, dilation=rate, act_layer=nn.ReLU))
        branches.append(_ImagePooling(in_chs, out_chs))
        self.atrous_rates = tuple(atrous_rates)
        self.branches = nn.ModuleList(branches)
        self.project = ConvNormAct(len(branches) * out_chs, out_chs, 1, act_layer=nn.ReLU)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.project(torch.cat([branch(x) for branch in self.branches], dim=1)))


class DeepLabHead(nn.Module):
    """DeepLabv3's head: :class:`ASPP`, an optional 3x3 conv + BN + ReLU (``head_conv``: torchvision's head has
    it, DeepLab's and the V2 paper's do not) and a 1x1 classifier with bias."""

    def __init__(
        self, in_chs: int, num_classes: int, channels: int, atrous_rates: Sequence[int], dropout: float,
        head_conv: bool,
    ) -> None:
        super().__init__()
        self.aspp = ASPP(in_chs, channels, atrous_rates, dropout)
        self.conv = ConvNormAct(channels, channels, 3, act_layer=nn.ReLU) if head_conv else nn.Identity()
        self.classifier = nn.Conv2d(channels, num_classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.conv(self.aspp(x)))


class FCNHead(nn.Module):
    """The auxiliary classifier torchvision trains DeepLabv3 with (on the output-stride-8 map): a 3x3 conv to a
    quarter of the channels + BN + ReLU, dropout 0.1, a 1x1 classifier."""

    def __init__(self, in_chs: int, num_classes: int) -> None:
        super().__init__()
        self.conv = ConvNormAct(in_chs, in_chs // 4, 3, act_layer=nn.ReLU)
        self.dropout = nn.Dropout(0.1)
        self.classifier = nn.Conv2d(in_chs // 4, num_classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.dropout(self.conv(x)))
