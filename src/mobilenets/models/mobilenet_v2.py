"""MobileNetV2 (Sandler et al., 2018, arXiv:1801.04381).

Width policy (alpha): block widths ``make_divisible(c * alpha)``; the stem likewise
(``make_divisible(32 * alpha)``); the expanded width is ``make_divisible(in * t)``. The 1280-channel
final conv is kept for alpha < 1 and scaled for alpha > 1 (paper Sec. 6.1: "for multipliers less than
one, we apply width multiplier to all layers except the very last convolutional layer").

Options that reproduce other libraries (see docs/convert.md):

- ``stem_width="fixed"``: the stem keeps 32 channels for every alpha.
- ``head_width``: ``"default"`` is the rule above; ``"scaled"`` gives ``make_divisible(1280 * alpha)`` for
  every alpha, ``"fixed"`` keeps 1280 for every alpha.
- ``channel_rounding="truncate_divisible"``: block widths are ``make_divisible(int(c * alpha))``, alpha
  applied and truncated before rounding, as Keras' ``MobileNetV2`` does (differs from the default for a
  few alphas, e.g. 0.56); ``"divisible"`` is this generation's default rule.
- ``expand_width`` and ``last_conv_width`` are V3 options and are refused here.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from ..layers import ConvNormAct, InvertedResidual, make_divisible
from .base import MobileNet, ModelInfo, ModelOptions, SmallInputStrides, stage_feature_info

__all__ = ["BottleneckRow", "MOBILENET_V2", "build_mobilenet_v2"]


@dataclass(frozen=True)
class BottleneckRow:
    """One row of the V2 paper's Table 2: expansion t, output channels c, repeats n, first stride s."""

    t: int
    c: int
    n: int
    s: int


# V2 paper, Table 2 (input 224x224x3). Stem: conv2d 3x3 / s2, 32 channels.
V2_STEM = 32
V2_LAST = 1280
MOBILENET_V2: tuple[BottleneckRow, ...] = (
    BottleneckRow(t=1, c=16, n=1, s=1),  # 112x112
    BottleneckRow(t=6, c=24, n=2, s=2),  # -> 56x56
    BottleneckRow(t=6, c=32, n=3, s=2),  # -> 28x28
    BottleneckRow(t=6, c=64, n=4, s=2),  # -> 14x14
    BottleneckRow(t=6, c=96, n=3, s=1),
    BottleneckRow(t=6, c=160, n=3, s=2),  # -> 7x7
    BottleneckRow(t=6, c=320, n=1, s=1),
)


def build_mobilenet_v2(arch: str, opts: ModelOptions, table: tuple[BottleneckRow, ...] = MOBILENET_V2) -> MobileNet:
    act = opts.act(nn.ReLU6)
    conv = opts.conv_kwargs()
    opts.require_defaults(("expand_width", "last_conv_width"), arch, "mobilenet_v3")
    alpha = opts.width_mult
    stem_chs = opts.stem_channels(V2_STEM)
    strides = SmallInputStrides(opts.small_input)
    stem_stride = strides.stem
    stem = ConvNormAct(opts.in_chans, stem_chs, 3, stem_stride, act_layer=act, **conv)
    rows = [(row, i) for row in table for i in range(row.n)]
    blocks: list[nn.Module] = []
    specs: list[tuple[int, int]] = []
    in_chs = stem_chs
    for idx, (row, repeat) in enumerate(rows):
        out_chs = make_divisible(int(row.c * alpha) if opts.channel_rounding == "truncate_divisible" else row.c * alpha)
        stride = row.s if repeat == 0 else 1
        stride = strides.block(stride)
        blocks.append(
            InvertedResidual(
                in_chs,
                make_divisible(in_chs * row.t),
                out_chs,
                kernel_size=3,
                stride=stride,
                act_layer=act,
                drop_path_rate=opts.drop_path_rate * idx / len(rows),
                **conv,
            )
        )
        specs.append((out_chs, stride))
        in_chs = out_chs
    last_chs = opts.head_channels(V2_LAST)
    final_conv = ConvNormAct(in_chs, last_chs, 1, act_layer=act, **conv)
    info = ModelInfo(
        arch=arch,
        options=opts,
        input_size=(opts.in_chans, 224, 224),
        min_input_size=strides.min_input_size,
    )
    return MobileNet(
        stem=stem,
        blocks=blocks,
        final_conv=final_conv,
        num_features=last_chs,
        feature_info=stage_feature_info(stem_chs, stem_stride, specs, last_chs),
        info=info,
    )
