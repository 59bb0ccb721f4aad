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

``reduced_tail=True`` halves the last stage (160 and 320 channels) and the 1280-channel final conv, as the V3
paper does for segmentation (Sec. 6.3); dense-prediction heads on V2 use it the same way.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from torch import nn

from ..layers import ConvNormAct, InvertedResidual, make_divisible
from .base import BlockArgs, MobileNet, ModelOptions, build_network

__all__ = ["BottleneckRow", "MOBILENET_V2", "build_mobilenet_v2"]


@dataclass(frozen=True)
class BottleneckRow:
    """One row of the V2 paper's Table 2: expansion t, output channels c, repeats n, first stride s."""

    t: int
    c: int
    n: int
    s: int


# V2 paper, Table 2 (input 224x224x3), by resolution stage. Stem: conv2d 3x3 / s2, 32 channels.
V2_STEM = 32
V2_LAST = 1280
MOBILENET_V2: tuple[tuple[BottleneckRow, ...], ...] = (
    (BottleneckRow(t=1, c=16, n=1, s=1),),  # stage 1, 112x112
    (BottleneckRow(t=6, c=24, n=2, s=2),),  # stage 2, -> 56x56
    (BottleneckRow(t=6, c=32, n=3, s=2),),  # stage 3, -> 28x28
    (BottleneckRow(t=6, c=64, n=4, s=2), BottleneckRow(t=6, c=96, n=3, s=1)),  # stage 4, -> 14x14
    (BottleneckRow(t=6, c=160, n=3, s=2), BottleneckRow(t=6, c=320, n=1, s=1)),  # stage 5, -> 7x7
)


def build_mobilenet_v2(
    arch: str, opts: ModelOptions, table: tuple[tuple[BottleneckRow, ...], ...] = MOBILENET_V2
) -> MobileNet:
    act = opts.act(nn.ReLU6)
    conv = opts.conv_kwargs()
    opts.require_defaults(("expand_width", "last_conv_width", "reduced_tail_expansion"), arch, "mobilenet_v3")
    alpha = opts.width_mult
    last_table = V2_LAST
    if opts.reduced_tail:
        # V3 paper Sec. 6.3 applied to V2: the last stage and the final conv at half width
        table = table[:-1] + (tuple(replace(row, c=row.c // 2) for row in table[-1]),)
        last_table = V2_LAST // 2

    def make_block(row: BottleneckRow, at: BlockArgs) -> tuple[nn.Module, int]:
        c = int(row.c * alpha) if opts.channel_rounding == "truncate_divisible" else row.c * alpha
        out_chs = make_divisible(c)
        block = InvertedResidual(
            at.in_chs,
            make_divisible(at.in_chs * row.t),
            out_chs,
            kernel_size=3,
            stride=at.stride,
            dilation=at.dilation,
            act_layer=act,
            drop_path_rate=at.drop_path_rate,
            **conv,
        )
        return block, out_chs

    def final_conv(in_chs: int) -> tuple[nn.Module, int]:
        last_chs = opts.head_channels(last_table)
        return ConvNormAct(in_chs, last_chs, 1, act_layer=act, **conv), last_chs

    return build_network(
        arch,
        opts,
        stem_chs=opts.stem_channels(V2_STEM),
        stem_act=act,
        stages=[[(row, row.s if i == 0 else 1) for row in stage for i in range(row.n)] for stage in table],
        make_block=make_block,
        final_conv=final_conv,
    )
