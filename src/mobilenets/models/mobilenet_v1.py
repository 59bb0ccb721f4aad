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

from ..layers import ConvNormAct, DepthwiseSeparableConv, make_divisible
from .base import MobileNet, ModelInfo, ModelOptions, SmallInputStrides, stage_feature_info

__all__ = ["DSConvRow", "MOBILENET_V1", "build_mobilenet_v1", "v1_channels"]


@dataclass(frozen=True)
class DSConvRow:
    """One "Conv dw / Conv 1x1" pair of the V1 paper's Table 1."""

    out_chs: int
    stride: int


# V1 paper, Table 1. Stem: Conv 3x3 / s2, 32 channels, then 13 depthwise separable blocks.
# The paper's last "Conv dw / s2" at 7x7 is a typo: the input is already 7x7 and the reference
# implementation uses stride 1 there.
V1_STEM = 32
MOBILENET_V1: tuple[DSConvRow, ...] = (
    DSConvRow(64, 1),  # 112x112
    DSConvRow(128, 2),  # -> 56x56
    DSConvRow(128, 1),
    DSConvRow(256, 2),  # -> 28x28
    DSConvRow(256, 1),
    DSConvRow(512, 2),  # -> 14x14
    DSConvRow(512, 1),  # 5x (Conv dw / s1, Conv 1x1 512)
    DSConvRow(512, 1),
    DSConvRow(512, 1),
    DSConvRow(512, 1),
    DSConvRow(512, 1),
    DSConvRow(1024, 2),  # -> 7x7
    DSConvRow(1024, 1),  # paper says s2: typo, see above
)


def v1_channels(channels: int, width_mult: float) -> int:
    return max(int(channels * width_mult), 8)


def build_mobilenet_v1(arch: str, opts: ModelOptions, table: tuple[DSConvRow, ...] = MOBILENET_V1) -> MobileNet:
    act = opts.act(nn.ReLU)
    common = dict(act_layer=act, **opts.conv_kwargs())
    opts.require_defaults(
        ("head_width", "expand_width", "last_conv_width"), arch, "mobilenet_v2 / mobilenet_v3"
    )
    if opts.channel_rounding == "truncate_divisible":
        raise ValueError(
            f"channel_rounding='truncate_divisible' does not apply to {arch}; it is used by mobilenet_v2 only"
        )

    def width(channels: int) -> int:
        if opts.channel_rounding == "divisible":
            return make_divisible(channels * opts.width_mult)
        return v1_channels(channels, opts.width_mult)

    stem_chs = V1_STEM if opts.stem_width == "fixed" else width(V1_STEM)
    strides = SmallInputStrides(opts.small_input)
    stem_stride = strides.stem
    stem = ConvNormAct(opts.in_chans, stem_chs, 3, stem_stride, **common)
    blocks: list[nn.Module] = []
    specs: list[tuple[int, int]] = []
    in_chs = stem_chs
    for row in table:
        out_chs = width(row.out_chs)
        stride = row.stride
        stride = strides.block(stride)
        blocks.append(DepthwiseSeparableConv(in_chs, out_chs, stride, **common))
        specs.append((out_chs, stride))
        in_chs = out_chs
    info = ModelInfo(
        arch=arch,
        options=opts,
        input_size=(opts.in_chans, 224, 224),
        min_input_size=strides.min_input_size,
    )
    return MobileNet(
        stem=stem,
        blocks=blocks,
        final_conv=None,
        num_features=in_chs,
        feature_info=stage_feature_info(stem_chs, stem_stride, specs, None),
        info=info,
    )
