"""MobileNetV4: Conv-S, Conv-M, Conv-L, Hybrid-M and Hybrid-L (Qin et al., 2024, arXiv:2404.10518).

The V4 paper builds its networks from the Universal Inverted Bottleneck (UIB: IB, ConvNext, ExtraDW and FFN
instances, :class:`~mobilenets.layers.UniversalInvertedBottleneck`) and, early on, the fused inverted
bottleneck (:class:`~mobilenets.layers.FusedInvertedBottleneck`). The tables below follow the paper's
architecture tables of the appendix (input, block, DW K1, DW K2, expanded dim, output dim, stride) and the
released reference, TensorFlow Model Garden's ``official/vision/modeling/backbones/mobilenet.py``, with which
timm's ``mobilenetv4_*`` agree; our tensors match timm's one for one (tests/test_convert.py). The hybrid
models add Mobile MQA attention blocks (:class:`~mobilenets.layers.MobileMultiQueryAttention`) to the last two
stages and a layer scale (started at 1e-5) on every UIB and attention block; Hybrid-L uses GELU.

Where the paper's Conv-S table names its first two stages "FusedIB", the reference builds each as two
plain conv + BN + ReLU layers (a kxk strided conv, then a 1x1 conv *with* ReLU and no residual); the table
below does the same, as plain ``conv`` rows.

The head, all sizes: a 1x1 conv to 960 channels (the last row), global pooling, a 1x1 conv to 1280 without
bias, batch norm and the activation (ReLU; GELU in Hybrid-L), dropout and the classifier.

Width policy (alpha), as in V3: row outputs and the 960-channel last conv ``make_divisible(c * alpha)``; the
expanded width ``make_divisible(in * ratio)`` where ``ratio = expanded / in`` of the table (so it follows the
scaled input); the stem ``make_divisible(stem * alpha)``; the pooled 1280 head kept for alpha <= 1 and scaled
for alpha > 1. ``stem_width="fixed"`` and ``head_width="fixed"`` reproduce timm's narrower models
(``mobilenetv4_conv_small_050``, ``mobilenetv4_hybrid_medium_075``: the table's stem below alpha 1, the 1280 head
always). ``expand_width``, ``last_conv_width`` and
``channel_rounding`` are V1-V3 options and are refused here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Optional

from torch import nn

from ..layers import (
    ConvNormAct,
    FusedInvertedBottleneck,
    MobileMultiQueryAttention,
    UniversalInvertedBottleneck,
    make_divisible,
)
from .base import MobileNet, ModelInfo, ModelOptions, SmallInputStrides, stage_feature_info

__all__ = [
    "V4Row", "V4Spec", "MOBILENET_V4_CONV_SMALL", "MOBILENET_V4_CONV_MEDIUM", "MOBILENET_V4_CONV_LARGE",
    "MOBILENET_V4_HYBRID_MEDIUM", "MOBILENET_V4_HYBRID_LARGE", "build_mobilenet_v4",
]

Block = Literal["conv", "fused_ib", "uib", "mqa"]


@dataclass(frozen=True)
class V4Row:
    """One row of a V4 architecture table.

    ``block``: ``"conv"`` (conv + BN + ReLU with kernel ``dw_k2``), ``"fused_ib"`` (kernel ``dw_k2``), ``"uib"``
    (starting depthwise kernel ``dw_k1``, middle depthwise kernel ``dw_k2``, 0 for none) or ``"mqa"`` (Mobile
    MQA with ``heads`` heads of ``key_dim`` (= value dim), keys and values downsampled by ``kv_stride`` with a
    ``dw_k2`` depthwise conv). ``expanded`` is the expanded width (unused by ``conv`` and ``mqa`` rows),
    ``out`` the output width, ``stride`` the row's stride.
    """

    in_chs: int
    block: Block
    dw_k1: int
    dw_k2: int
    expanded: int
    out: int
    stride: int
    heads: int = 0
    key_dim: int = 0
    kv_stride: int = 1

    def __post_init__(self) -> None:
        if self.block == "uib" and self.stride > 1 and not (self.dw_k1 or self.dw_k2):
            raise ValueError(f"{self}: an FFN row (no depthwise conv) cannot have a stride")
        if self.block == "mqa" and (self.stride != 1 or self.in_chs != self.out or not self.heads):
            raise ValueError(f"{self}: an attention row keeps the size and width, and needs heads")


@dataclass(frozen=True)
class V4Spec:
    stem: int  # conv2d 3x3 / s2 + batch norm + the activation
    rows: tuple[V4Row, ...]
    head: int  # the 1x1 conv after pooling (batch norm, activation)
    resolution: int  # the paper's evaluation resolution
    act: str = "relu"
    layer_scale: Optional[float] = None  # on every UIB and attention block (the hybrids)


def _uib(in_chs: int, k1: int, k2: int, expanded: int, out: int, stride: int = 1, repeat: int = 1) -> tuple[V4Row, ...]:
    """``repeat`` UIB rows; the first may stride and change width, the rest take its output."""
    first = V4Row(in_chs, "uib", k1, k2, expanded, out, stride)
    rest = V4Row(out, "uib", k1, k2, expanded * out // in_chs, out, 1)
    return (first,) + (rest,) * (repeat - 1)


R = V4Row
# MNv4-Conv-S (V4 paper, appendix table "MNv4-Conv-S"), 224x224 input; stem conv2d 3x3 / s2, 32.
MOBILENET_V4_CONV_SMALL = V4Spec(
    stem=32,
    rows=(
        R(32, "conv", 0, 3, 0, 32, 2),  # 112 -> 56; the paper's FusedIB, built as conv 3x3 + conv 1x1
        R(32, "conv", 0, 1, 0, 32, 1),
        R(32, "conv", 0, 3, 0, 96, 2),  # -> 28
        R(96, "conv", 0, 1, 0, 64, 1),
        *_uib(64, 5, 5, 192, 96, 2),  # ExtraDW -> 14
        *_uib(96, 0, 3, 192, 96, repeat=4),  # IB
        *_uib(96, 3, 0, 384, 96),  # ConvNext
        *_uib(96, 3, 3, 576, 128, 2),  # ExtraDW -> 7
        *_uib(128, 5, 5, 512, 128),  # ExtraDW
        *_uib(128, 0, 5, 512, 128),  # IB
        *_uib(128, 0, 5, 384, 128),  # IB
        *_uib(128, 0, 3, 512, 128, repeat=2),  # IB
        R(128, "conv", 0, 1, 0, 960, 1),  # conv 1x1, the last before pooling
    ),
    head=1280,
    resolution=224,
)

# MNv4-Conv-M (V4 paper, appendix table "MNv4-Conv-M"), evaluated at 256x256; stem conv2d 3x3 / s2, 32.
MOBILENET_V4_CONV_MEDIUM = V4Spec(
    stem=32,
    rows=(
        R(32, "fused_ib", 0, 3, 128, 48, 2),  # 128 -> 64
        *_uib(48, 3, 5, 192, 80, 2),  # ExtraDW -> 32
        *_uib(80, 3, 3, 160, 80),  # ExtraDW
        *_uib(80, 3, 5, 480, 160, 2),  # ExtraDW -> 16
        *_uib(160, 3, 3, 640, 160, repeat=2),  # ExtraDW
        *_uib(160, 3, 5, 640, 160),  # ExtraDW
        *_uib(160, 3, 3, 640, 160),  # ExtraDW
        *_uib(160, 3, 0, 640, 160),  # ConvNext
        *_uib(160, 0, 0, 320, 160),  # FFN
        *_uib(160, 3, 0, 640, 160),  # ConvNext
        *_uib(160, 5, 5, 960, 256, 2),  # ExtraDW -> 8
        *_uib(256, 5, 5, 1024, 256),  # ExtraDW
        *_uib(256, 3, 5, 1024, 256, repeat=2),  # ExtraDW
        *_uib(256, 0, 0, 1024, 256),  # FFN
        *_uib(256, 3, 0, 1024, 256),  # ConvNext
        *_uib(256, 3, 5, 512, 256),  # ExtraDW
        *_uib(256, 5, 5, 1024, 256),  # ExtraDW
        *_uib(256, 0, 0, 1024, 256, repeat=2),  # FFN
        *_uib(256, 5, 0, 512, 256),  # ConvNext
        R(256, "conv", 0, 1, 0, 960, 1),
    ),
    head=1280,
    resolution=256,
)

# MNv4-Conv-L (V4 paper, appendix table "MNv4-Conv-L"), evaluated at 384x384; stem conv2d 3x3 / s2, 24.
MOBILENET_V4_CONV_LARGE = V4Spec(
    stem=24,
    rows=(
        R(24, "fused_ib", 0, 3, 96, 48, 2),  # 192 -> 96
        *_uib(48, 3, 5, 192, 96, 2),  # ExtraDW -> 48
        *_uib(96, 3, 3, 384, 96),  # ExtraDW
        *_uib(96, 3, 5, 384, 192, 2),  # ExtraDW -> 24
        *_uib(192, 3, 3, 768, 192, repeat=3),  # ExtraDW
        *_uib(192, 3, 5, 768, 192),  # ExtraDW
        *_uib(192, 5, 3, 768, 192, repeat=5),  # ExtraDW
        *_uib(192, 3, 0, 768, 192),  # ConvNext
        *_uib(192, 5, 5, 768, 512, 2, repeat=4),  # ExtraDW -> 12
        *_uib(512, 5, 0, 2048, 512),  # ConvNext
        *_uib(512, 5, 3, 2048, 512),  # ExtraDW
        *_uib(512, 5, 0, 2048, 512, repeat=2),  # ConvNext
        *_uib(512, 5, 3, 2048, 512),  # ExtraDW
        *_uib(512, 5, 5, 2048, 512),  # ExtraDW
        *_uib(512, 5, 0, 2048, 512, repeat=3),  # ConvNext
        R(512, "conv", 0, 1, 0, 960, 1),
    ),
    head=1280,
    resolution=384,
)


def _mqa(chs: int, heads: int, key_dim: int, kv_stride: int = 1) -> V4Row:
    """A Mobile MQA row; keys and values downsampled by a 3x3 depthwise conv when ``kv_stride`` is 2."""
    return V4Row(chs, "mqa", 0, 3, 0, chs, 1, heads, key_dim, kv_stride)


# MNv4-Hybrid-M (V4 paper, appendix table "MNv4-Hybrid-M"), evaluated at 256x256: Conv-M's layout with Mobile
# MQA (4 heads of 64, keys and values at half resolution in the 16x16 stage) between UIB blocks.
MOBILENET_V4_HYBRID_MEDIUM = V4Spec(
    stem=32,
    rows=(
        R(32, "fused_ib", 0, 3, 128, 48, 2),  # 128 -> 64
        *_uib(48, 3, 5, 192, 80, 2),  # ExtraDW -> 32
        *_uib(80, 3, 3, 160, 80),  # ExtraDW
        *_uib(80, 3, 5, 480, 160, 2),  # ExtraDW -> 16
        *_uib(160, 0, 0, 320, 160),  # FFN
        *_uib(160, 3, 3, 640, 160),  # ExtraDW
        *_uib(160, 3, 5, 640, 160),  # ExtraDW
        _mqa(160, 4, 64, 2),
        *_uib(160, 3, 3, 640, 160),  # ExtraDW
        _mqa(160, 4, 64, 2),
        *_uib(160, 3, 0, 640, 160),  # ConvNext
        _mqa(160, 4, 64, 2),
        *_uib(160, 3, 3, 640, 160),  # ExtraDW
        _mqa(160, 4, 64, 2),
        *_uib(160, 3, 0, 640, 160),  # ConvNext
        *_uib(160, 5, 5, 960, 256, 2),  # ExtraDW -> 8
        *_uib(256, 5, 5, 1024, 256),  # ExtraDW
        *_uib(256, 3, 5, 1024, 256, repeat=2),  # ExtraDW
        *_uib(256, 0, 0, 512, 256),  # FFN
        *_uib(256, 3, 5, 512, 256),  # ExtraDW
        *_uib(256, 0, 0, 512, 256),  # FFN
        *_uib(256, 0, 0, 1024, 256),  # FFN
        _mqa(256, 4, 64),
        *_uib(256, 3, 0, 1024, 256),  # ConvNext
        _mqa(256, 4, 64),
        *_uib(256, 5, 5, 1024, 256),  # ExtraDW
        _mqa(256, 4, 64),
        *_uib(256, 5, 0, 1024, 256),  # ConvNext
        _mqa(256, 4, 64),
        *_uib(256, 5, 0, 1024, 256),  # ConvNext
        R(256, "conv", 0, 1, 0, 960, 1),
    ),
    head=1280,
    resolution=256,
    layer_scale=1e-5,
)

# MNv4-Hybrid-L (V4 paper, appendix table "MNv4-Hybrid-L"), evaluated at 384x384, GELU: Conv-L's early stages,
# Mobile MQA with 8 heads (of 48 at 24x24 with keys and values at half resolution, of 64 at 12x12).
MOBILENET_V4_HYBRID_LARGE = V4Spec(
    stem=24,
    rows=(
        R(24, "fused_ib", 0, 3, 96, 48, 2),  # 192 -> 96
        *_uib(48, 3, 5, 192, 96, 2),  # ExtraDW -> 48
        *_uib(96, 3, 3, 384, 96),  # ExtraDW
        *_uib(96, 3, 5, 384, 192, 2),  # ExtraDW -> 24
        *_uib(192, 3, 3, 768, 192, repeat=3),  # ExtraDW
        *_uib(192, 3, 5, 768, 192),  # ExtraDW
        *_uib(192, 5, 3, 768, 192, repeat=2),  # ExtraDW
        _mqa(192, 8, 48, 2),
        *_uib(192, 5, 3, 768, 192),  # ExtraDW
        _mqa(192, 8, 48, 2),
        *_uib(192, 5, 3, 768, 192),  # ExtraDW
        _mqa(192, 8, 48, 2),
        *_uib(192, 5, 3, 768, 192),  # ExtraDW
        _mqa(192, 8, 48, 2),
        *_uib(192, 3, 0, 768, 192),  # ConvNext
        *_uib(192, 5, 5, 768, 512, 2, repeat=4),  # ExtraDW -> 12
        *_uib(512, 5, 0, 2048, 512),  # ConvNext
        *_uib(512, 5, 3, 2048, 512),  # ExtraDW
        *_uib(512, 5, 0, 2048, 512, repeat=2),  # ConvNext
        *_uib(512, 5, 3, 2048, 512),  # ExtraDW
        *_uib(512, 5, 5, 2048, 512),  # ExtraDW
        _mqa(512, 8, 64),
        *_uib(512, 5, 0, 2048, 512),  # ConvNext
        _mqa(512, 8, 64),
        *_uib(512, 5, 0, 2048, 512),  # ConvNext
        _mqa(512, 8, 64),
        *_uib(512, 5, 0, 2048, 512),  # ConvNext
        _mqa(512, 8, 64),
        *_uib(512, 5, 0, 2048, 512),  # ConvNext
        R(512, "conv", 0, 1, 0, 960, 1),
    ),
    head=1280,
    resolution=384,
    act="gelu",
    layer_scale=1e-5,
)


def build_mobilenet_v4(arch: str, opts: ModelOptions, spec: V4Spec) -> MobileNet:
    act = opts.act(spec.act)
    conv = opts.conv_kwargs()
    opts.require_defaults(("expand_width", "last_conv_width", "channel_rounding"), arch, "mobilenet_v1 to v3")
    alpha = opts.width_mult
    stem_chs = opts.stem_channels(spec.stem)
    strides = SmallInputStrides(opts.small_input)
    stem = ConvNormAct(opts.in_chans, stem_chs, 3, strides.stem, act_layer=act, **conv)
    *rows, last = spec.rows
    if last.block != "conv" or last.dw_k2 != 1:
        raise ValueError(f"{arch}: the last row of a V4 table must be the 1x1 conv before pooling, got {last}")
    blocks: list[nn.Module] = []
    specs: list[tuple[int, int]] = []
    in_chs = stem_chs
    for idx, row in enumerate(rows):
        out_chs = make_divisible(row.out * alpha)
        stride = strides.block(row.stride)
        drop = opts.drop_path_rate * idx / len(rows)
        if row.block == "conv":
            block: nn.Module = ConvNormAct(in_chs, out_chs, row.dw_k2, stride, act_layer=act, **conv)
        elif row.block == "mqa":
            block = MobileMultiQueryAttention(in_chs, out_chs, row.heads, row.key_dim, row.key_dim, row.kv_stride,
                                              row.dw_k2, drop_path_rate=drop, layer_scale=spec.layer_scale, **conv)
        else:
            mid_chs = make_divisible(in_chs * row.expanded / row.in_chs)
            if row.block == "fused_ib":
                block = FusedInvertedBottleneck(in_chs, mid_chs, out_chs, row.dw_k2, stride, act_layer=act,
                                                drop_path_rate=drop, **conv)
            else:
                block = UniversalInvertedBottleneck(in_chs, mid_chs, out_chs, row.dw_k1, row.dw_k2, stride,
                                                    act_layer=act, drop_path_rate=drop,
                                                    layer_scale=spec.layer_scale, **conv)
        blocks.append(block)
        specs.append((out_chs, stride))
        in_chs = out_chs
    last_chs = make_divisible(last.out * alpha)
    final_conv = ConvNormAct(in_chs, last_chs, 1, act_layer=act, **conv)
    head = opts.head_channels(spec.head)
    info = ModelInfo(
        arch=arch,
        options=opts,
        input_size=(opts.in_chans, spec.resolution, spec.resolution),
        min_input_size=strides.min_input_size,
    )
    return MobileNet(
        stem=stem,
        blocks=blocks,
        final_conv=final_conv,
        num_features=last_chs,
        feature_info=stage_feature_info(stem_chs, strides.stem, specs, last_chs),
        info=info,
        head_hidden=head,
        head_act=act,
        head_norm=True,
    )
