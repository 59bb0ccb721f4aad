"""MobileNetV1 (Howard et al., 2017, arXiv:1704.04861).

Width policy (alpha): every layer, stem included, gets ``max(int(c * alpha), 8)`` channels, as the
TensorFlow reference (``mobilenet_v1.py``, ``depth = max(int(d * depth_multiplier), min_depth)``) and Keras
do. No rounding to multiples of 8: that is the V2/V3 rule.

Options that reproduce other libraries (see docs/convert.md): ``stem_width="fixed"`` keeps the 32-channel
stem for every alpha. timm and Keras use ReLU6 (``act_layer="relu6"``); Keras and TensorFlow pad stride-2
convs asymmetrically (``padding="same"``) and use ``bn_eps=1e-3``. The V2/V3 width options
(``head_width``, ``expand_width``, ``last_conv_width``) do not apply and are refused.
``channel_rounding="divisible"`` rounds every width to a multiple of 8 (``make_divisible(c * alpha)``), as
timm's ``mobilenetv1_*`` does; ``"truncate_divisible"`` is a V2 rule and is refused.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from ..layers import DepthwiseSeparableConv, make_divisible
from .base import BlockArgs, MobileNet, ModelOptions, build_network

__all__ = ["DSConvRow", "MOBILENET_V1", "build_mobilenet_v1", "v1_channels"]


@dataclass(frozen=True)
class DSConvRow:
    """One "Conv dw / Conv 1x1" pair of the V1 paper's Table 1."""

    out_chs: int
    stride: int


# V1 paper, Table 1, by resolution stage. Stem: Conv 3x3 / s2, 32 channels, then 13 depthwise separable blocks.
# The paper's last "Conv dw / s2" at 7x7 is a typo: the input is already 7x7 and the reference
# implementation uses stride 1 there.
V1_STEM = 32
MOBILENET_V1: tuple[tuple[DSConvRow, ...], ...] = (
    # stage 1, 112x112
    (DSConvRow(64, 1),),
    # stage 2, -> 56x56
    (DSConvRow(128, 2), DSConvRow(128, 1)),
    # stage 3, -> 28x28
    (DSConvRow(256, 2), DSConvRow(256, 1)),
    # stage 4, -> 14x14: then 5x (Conv dw / s1, Conv 1x1 512)
    (DSConvRow(512, 2), *(DSConvRow(512, 1),) * 5),
    # stage 5, -> 7x7
    (DSConvRow(1024, 2), DSConvRow(1024, 1)),  # the paper's s2 on the second row is a typo, see above
)


def v1_channels(channels: int, width_mult: float) -> int:
    return max(int(channels * width_mult), 8)


def build_mobilenet_v1(
    arch: str, opts: ModelOptions, table: tuple[tuple[DSConvRow, ...], ...] = MOBILENET_V1
) -> MobileNet:
    act = opts.act(nn.ReLU)
    common = dict(act_layer=act, **opts.conv_kwargs())
    opts.require_defaults(
        ("head_width", "expand_width", "last_conv_width", "reduced_tail"), arch, "mobilenet_v2 / mobilenet_v3"
    )
    opts.require_defaults(("reduced_tail_expansion",), arch, "mobilenet_v3")
    # drop path skips a residual branch; V1 has no residuals, so a rate would silently do nothing
    opts.require_defaults(("drop_path_rate",), arch, "the models with residual blocks (V2, V3, V4)")
    if opts.channel_rounding == "truncate_divisible":
        raise ValueError(
            f"channel_rounding='truncate_divisible' does not apply to {arch}; it is used by mobilenet_v2 only"
        )

    def width(channels: int) -> int:
        if opts.channel_rounding == "divisible":
            return make_divisible(channels * opts.width_mult)
        return v1_channels(channels, opts.width_mult)

    def make_block(row: DSConvRow, at: BlockArgs) -> tuple[nn.Module, int]:
        out_chs = width(row.out_chs)
        return DepthwiseSeparableConv(at.in_chs, out_chs, at.stride, dilation=at.dilation, **common), out_chs

    return build_network(
        arch,
        opts,
        stem_chs=V1_STEM if opts.stem_width == "fixed" else width(V1_STEM),
        stem_act=act,
        stages=[[(row, row.stride) for row in stage] for stage in table],
        make_block=make_block,
    )
