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

Each table is nested by resolution stage; each row is typed by block kind and written with a keyword
constructor (:func:`conv`, :func:`fused_ib`, :func:`extra_dw`, :func:`ib`, :func:`convnext`, :func:`ffn`,
:func:`mqa`), so a row reads as the paper's (kind, kernels, expanded, output, stride) without positional zeros.

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
from typing import Optional, Union

from torch import nn

from ..layers import (
    ConvNormAct,
    FusedInvertedBottleneck,
    MobileMultiQueryAttention,
    UniversalInvertedBottleneck,
    make_divisible,
)
from .base import BlockArgs, MobileNet, ModelOptions, build_network

__all__ = [
    "ConvRow", "FusedIBRow", "UIBRow", "MQARow", "V4Row", "V4Spec", "conv", "fused_ib", "extra_dw", "ib",
    "convnext", "ffn", "mqa", "MOBILENET_V4_CONV_SMALL", "MOBILENET_V4_CONV_MEDIUM", "MOBILENET_V4_CONV_LARGE",
    "MOBILENET_V4_HYBRID_MEDIUM", "MOBILENET_V4_HYBRID_LARGE", "build_mobilenet_v4",
]


@dataclass(frozen=True)
class ConvRow:
    """A plain kxk conv + BN + activation (the reference's ``convbn``), no residual."""

    in_chs: int
    out: int
    kernel: int
    stride: int = 1


@dataclass(frozen=True)
class FusedIBRow:
    """A fused inverted bottleneck: a kxk conv to ``expanded`` (with the stride), a linear 1x1 to ``out``."""

    in_chs: int
    expanded: int
    out: int
    kernel: int
    stride: int = 1


@dataclass(frozen=True)
class UIBRow:
    """A universal inverted bottleneck: optional ``start_kernel`` depthwise conv before the expansion, optional
    ``mid_kernel`` one after it (0 for none): IB (0, k), ConvNext (k, 0), ExtraDW (k1, k2), FFN (0, 0)."""

    in_chs: int
    expanded: int
    out: int
    start_kernel: int
    mid_kernel: int
    stride: int = 1

    def __post_init__(self) -> None:
        if self.stride > 1 and not (self.start_kernel or self.mid_kernel):
            raise ValueError(f"{self}: an FFN row (no depthwise conv) cannot have a stride")


@dataclass(frozen=True)
class MQARow:
    """Mobile MQA: ``heads`` queries of ``key_dim`` (= value dim) per pixel; keys and values downsampled by
    ``kv_stride`` with a ``kv_kernel`` depthwise conv. Keeps the size and the width."""

    chs: int
    heads: int
    key_dim: int
    kv_stride: int = 1
    kv_kernel: int = 3
    stride: int = 1

    def __post_init__(self) -> None:
        if self.stride != 1 or self.heads < 1:
            raise ValueError(f"{self}: an attention row keeps the size and width, and needs heads")


V4Row = Union[ConvRow, FusedIBRow, UIBRow, MQARow]


def conv(in_chs: int, out: int, *, k: int, s: int = 1) -> ConvRow:
    return ConvRow(in_chs, out, k, s)


def fused_ib(in_chs: int, expanded: int, out: int, *, k: int, s: int = 1) -> FusedIBRow:
    return FusedIBRow(in_chs, expanded, out, k, s)


def _uib(in_chs: int, expanded: int, out: int, k1: int, k2: int, s: int, repeat: int) -> tuple[UIBRow, ...]:
    """``repeat`` UIB rows; the first may stride and change width, the rest take its output at the same
    expansion ratio."""
    first = UIBRow(in_chs, expanded, out, k1, k2, s)
    rest = UIBRow(out, expanded * out // in_chs, out, k1, k2, 1)
    return (first,) + (rest,) * (repeat - 1)


def extra_dw(in_chs: int, expanded: int, out: int, *, k1: int, k2: int, s: int = 1, repeat: int = 1) -> tuple[UIBRow, ...]:
    """UIB ExtraDW: depthwise ``k1`` before the expansion, depthwise ``k2`` after it."""
    return _uib(in_chs, expanded, out, k1, k2, s, repeat)


def ib(in_chs: int, expanded: int, out: int, *, k: int, s: int = 1, repeat: int = 1) -> tuple[UIBRow, ...]:
    """UIB IB: V2's inverted bottleneck, depthwise ``k`` after the expansion."""
    return _uib(in_chs, expanded, out, 0, k, s, repeat)


def convnext(in_chs: int, expanded: int, out: int, *, k: int, s: int = 1, repeat: int = 1) -> tuple[UIBRow, ...]:
    """UIB ConvNext: depthwise ``k`` before the expansion only."""
    return _uib(in_chs, expanded, out, k, 0, s, repeat)


def ffn(in_chs: int, expanded: int, out: int, *, repeat: int = 1) -> tuple[UIBRow, ...]:
    """UIB FFN: two 1x1 convs, no spatial mixing, no stride."""
    return _uib(in_chs, expanded, out, 0, 0, 1, repeat)


def mqa(chs: int, *, heads: int, key_dim: int, kv_stride: int = 1) -> MQARow:
    """Mobile MQA; keys and values downsampled by a 3x3 depthwise conv when ``kv_stride`` is 2."""
    return MQARow(chs, heads, key_dim, kv_stride)


@dataclass(frozen=True)
class V4Spec:
    stem: int  # conv2d 3x3 / s2 + batch norm + the activation
    stages: tuple[tuple[V4Row, ...], ...]  # by resolution stage
    head: int  # the 1x1 conv after pooling (batch norm, activation)
    resolution: int  # the paper's evaluation resolution
    last_conv: int = 960  # conv 1x1 before pooling, the table's last row
    act: str = "relu"
    layer_scale: Optional[float] = None  # on every UIB and attention block (the hybrids)


# MNv4-Conv-S (V4 paper, appendix table "MNv4-Conv-S"), 224x224 input; stem conv2d 3x3 / s2, 32.
MOBILENET_V4_CONV_SMALL = V4Spec(
    stem=32,
    stages=(
        # stage 1, 112x112 in: the paper's FusedIB, built as conv 3x3 + conv 1x1
        (conv(32, 32, k=3, s=2), conv(32, 32, k=1)),
        # stage 2, 56x56 in
        (conv(32, 96, k=3, s=2), conv(96, 64, k=1)),
        # stage 3, 28x28 in
        (
            *extra_dw(64, 192, 96, k1=5, k2=5, s=2),
            *ib(96, 192, 96, k=3, repeat=4),
            *convnext(96, 384, 96, k=3),
        ),
        # stage 4, 14x14 in
        (
            *extra_dw(96, 576, 128, k1=3, k2=3, s=2),
            *extra_dw(128, 512, 128, k1=5, k2=5),
            *ib(128, 512, 128, k=5),
            *ib(128, 384, 128, k=5),
            *ib(128, 512, 128, k=3, repeat=2),
        ),
    ),
    head=1280,
    resolution=224,
)

# MNv4-Conv-M (V4 paper, appendix table "MNv4-Conv-M"), evaluated at 256x256; stem conv2d 3x3 / s2, 32.
MOBILENET_V4_CONV_MEDIUM = V4Spec(
    stem=32,
    stages=(
        # stage 1, 128x128 in
        (fused_ib(32, 128, 48, k=3, s=2),),
        # stage 2, 64x64 in
        (*extra_dw(48, 192, 80, k1=3, k2=5, s=2), *extra_dw(80, 160, 80, k1=3, k2=3)),
        # stage 3, 32x32 in
        (
            *extra_dw(80, 480, 160, k1=3, k2=5, s=2),
            *extra_dw(160, 640, 160, k1=3, k2=3, repeat=2),
            *extra_dw(160, 640, 160, k1=3, k2=5),
            *extra_dw(160, 640, 160, k1=3, k2=3),
            *convnext(160, 640, 160, k=3),
            *ffn(160, 320, 160),
            *convnext(160, 640, 160, k=3),
        ),
        # stage 4, 16x16 in
        (
            *extra_dw(160, 960, 256, k1=5, k2=5, s=2),
            *extra_dw(256, 1024, 256, k1=5, k2=5),
            *extra_dw(256, 1024, 256, k1=3, k2=5, repeat=2),
            *ffn(256, 1024, 256),
            *convnext(256, 1024, 256, k=3),
            *extra_dw(256, 512, 256, k1=3, k2=5),
            *extra_dw(256, 1024, 256, k1=5, k2=5),
            *ffn(256, 1024, 256, repeat=2),
            *convnext(256, 512, 256, k=5),
        ),
    ),
    head=1280,
    resolution=256,
)

# MNv4-Conv-L (V4 paper, appendix table "MNv4-Conv-L"), evaluated at 384x384; stem conv2d 3x3 / s2, 24.
MOBILENET_V4_CONV_LARGE = V4Spec(
    stem=24,
    stages=(
        # stage 1, 192x192 in
        (fused_ib(24, 96, 48, k=3, s=2),),
        # stage 2, 96x96 in
        (*extra_dw(48, 192, 96, k1=3, k2=5, s=2), *extra_dw(96, 384, 96, k1=3, k2=3)),
        # stage 3, 48x48 in
        (
            *extra_dw(96, 384, 192, k1=3, k2=5, s=2),
            *extra_dw(192, 768, 192, k1=3, k2=3, repeat=3),
            *extra_dw(192, 768, 192, k1=3, k2=5),
            *extra_dw(192, 768, 192, k1=5, k2=3, repeat=5),
            *convnext(192, 768, 192, k=3),
        ),
        # stage 4, 24x24 in
        (
            *extra_dw(192, 768, 512, k1=5, k2=5, s=2, repeat=4),
            *convnext(512, 2048, 512, k=5),
            *extra_dw(512, 2048, 512, k1=5, k2=3),
            *convnext(512, 2048, 512, k=5, repeat=2),
            *extra_dw(512, 2048, 512, k1=5, k2=3),
            *extra_dw(512, 2048, 512, k1=5, k2=5),
            *convnext(512, 2048, 512, k=5, repeat=3),
        ),
    ),
    head=1280,
    resolution=384,
)

# MNv4-Hybrid-M (V4 paper, appendix table "MNv4-Hybrid-M"), evaluated at 256x256: Conv-M's layout with Mobile
# MQA (4 heads of 64, keys and values at half resolution in the 16x16 stage) between UIB blocks.
_MQA_M16 = mqa(160, heads=4, key_dim=64, kv_stride=2)
_MQA_M8 = mqa(256, heads=4, key_dim=64)
MOBILENET_V4_HYBRID_MEDIUM = V4Spec(
    stem=32,
    stages=(
        # stage 1, 128x128 in
        (fused_ib(32, 128, 48, k=3, s=2),),
        # stage 2, 64x64 in
        (*extra_dw(48, 192, 80, k1=3, k2=5, s=2), *extra_dw(80, 160, 80, k1=3, k2=3)),
        # stage 3, 32x32 in
        (
            *extra_dw(80, 480, 160, k1=3, k2=5, s=2),
            *ffn(160, 320, 160),
            *extra_dw(160, 640, 160, k1=3, k2=3),
            *extra_dw(160, 640, 160, k1=3, k2=5),
            _MQA_M16,
            *extra_dw(160, 640, 160, k1=3, k2=3),
            _MQA_M16,
            *convnext(160, 640, 160, k=3),
            _MQA_M16,
            *extra_dw(160, 640, 160, k1=3, k2=3),
            _MQA_M16,
            *convnext(160, 640, 160, k=3),
        ),
        # stage 4, 16x16 in
        (
            *extra_dw(160, 960, 256, k1=5, k2=5, s=2),
            *extra_dw(256, 1024, 256, k1=5, k2=5),
            *extra_dw(256, 1024, 256, k1=3, k2=5, repeat=2),
            *ffn(256, 512, 256),
            *extra_dw(256, 512, 256, k1=3, k2=5),
            *ffn(256, 512, 256),
            *ffn(256, 1024, 256),
            _MQA_M8,
            *convnext(256, 1024, 256, k=3),
            _MQA_M8,
            *extra_dw(256, 1024, 256, k1=5, k2=5),
            _MQA_M8,
            *convnext(256, 1024, 256, k=5),
            _MQA_M8,
            *convnext(256, 1024, 256, k=5),
        ),
    ),
    head=1280,
    resolution=256,
    layer_scale=1e-5,
)

# MNv4-Hybrid-L (V4 paper, appendix table "MNv4-Hybrid-L"), evaluated at 384x384, GELU: Conv-L's early stages,
# Mobile MQA with 8 heads (of 48 at 24x24 with keys and values at half resolution, of 64 at 12x12).
_MQA_L24 = mqa(192, heads=8, key_dim=48, kv_stride=2)
_MQA_L12 = mqa(512, heads=8, key_dim=64)
MOBILENET_V4_HYBRID_LARGE = V4Spec(
    stem=24,
    stages=(
        # stage 1, 192x192 in
        (fused_ib(24, 96, 48, k=3, s=2),),
        # stage 2, 96x96 in
        (*extra_dw(48, 192, 96, k1=3, k2=5, s=2), *extra_dw(96, 384, 96, k1=3, k2=3)),
        # stage 3, 48x48 in
        (
            *extra_dw(96, 384, 192, k1=3, k2=5, s=2),
            *extra_dw(192, 768, 192, k1=3, k2=3, repeat=3),
            *extra_dw(192, 768, 192, k1=3, k2=5),
            *extra_dw(192, 768, 192, k1=5, k2=3, repeat=2),
            _MQA_L24,
            *extra_dw(192, 768, 192, k1=5, k2=3),
            _MQA_L24,
            *extra_dw(192, 768, 192, k1=5, k2=3),
            _MQA_L24,
            *extra_dw(192, 768, 192, k1=5, k2=3),
            _MQA_L24,
            *convnext(192, 768, 192, k=3),
        ),
        # stage 4, 24x24 in
        (
            *extra_dw(192, 768, 512, k1=5, k2=5, s=2, repeat=4),
            *convnext(512, 2048, 512, k=5),
            *extra_dw(512, 2048, 512, k1=5, k2=3),
            *convnext(512, 2048, 512, k=5, repeat=2),
            *extra_dw(512, 2048, 512, k1=5, k2=3),
            *extra_dw(512, 2048, 512, k1=5, k2=5),
            _MQA_L12,
            *convnext(512, 2048, 512, k=5),
            _MQA_L12,
            *convnext(512, 2048, 512, k=5),
            _MQA_L12,
            *convnext(512, 2048, 512, k=5),
            _MQA_L12,
            *convnext(512, 2048, 512, k=5),
        ),
    ),
    head=1280,
    resolution=384,
    act="gelu",
    layer_scale=1e-5,
)


def build_mobilenet_v4(arch: str, opts: ModelOptions, spec: V4Spec) -> MobileNet:
    act = opts.act(spec.act)
    common = opts.conv_kwargs()
    opts.require_defaults(
        ("expand_width", "last_conv_width", "channel_rounding", "reduced_tail"), arch, "mobilenet_v1 to v3"
    )
    opts.require_defaults(("reduced_tail_expansion",), arch, "mobilenet_v3")
    alpha = opts.width_mult

    def make_block(row: V4Row, at: BlockArgs) -> tuple[nn.Module, int]:
        if isinstance(row, MQARow):
            out_chs = make_divisible(row.chs * alpha)
            return MobileMultiQueryAttention(
                at.in_chs, out_chs, row.heads, row.key_dim, row.key_dim, row.kv_stride, row.kv_kernel, at.dilation,
                drop_path_rate=at.drop_path_rate, layer_scale=spec.layer_scale, **common,
            ), out_chs
        out_chs = make_divisible(row.out * alpha)
        if isinstance(row, ConvRow):
            return ConvNormAct(at.in_chs, out_chs, row.kernel, at.stride, dilation=at.dilation, act_layer=act,
                               **common), out_chs
        mid_chs = make_divisible(at.in_chs * row.expanded / row.in_chs)
        if isinstance(row, FusedIBRow):
            return FusedInvertedBottleneck(at.in_chs, mid_chs, out_chs, row.kernel, at.stride, at.dilation,
                                           act_layer=act, drop_path_rate=at.drop_path_rate, **common), out_chs
        return UniversalInvertedBottleneck(at.in_chs, mid_chs, out_chs, row.start_kernel, row.mid_kernel, at.stride,
                                           at.dilation, act_layer=act, drop_path_rate=at.drop_path_rate,
                                           layer_scale=spec.layer_scale, **common), out_chs

    def final_conv(in_chs: int) -> tuple[nn.Module, int]:
        last_chs = make_divisible(spec.last_conv * alpha)
        return ConvNormAct(in_chs, last_chs, 1, act_layer=act, **common), last_chs

    return build_network(
        arch,
        opts,
        stem_chs=opts.stem_channels(spec.stem),
        stem_act=act,
        stages=[[(row, row.stride) for row in stage] for stage in spec.stages],
        make_block=make_block,
        final_conv=final_conv,
        resolution=spec.resolution,
        head_hidden=opts.head_channels(spec.head),
        head_act=act,
        head_norm=True,
    )
