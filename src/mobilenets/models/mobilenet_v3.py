"""MobileNetV3 Large and Small (Howard et al., 2019, arXiv:1905.02244), and the "minimalistic" variants
of the TensorFlow reference (no SE, ReLU everywhere, 3x3 kernels, no h-swish).

Width policy (alpha), the TensorFlow reference's, which reproduces the paper's Table 3 rows for 0.75:
block outputs ``make_divisible(c * alpha)``; the expanded width is ``make_divisible(in * ratio)`` where
``ratio = exp / in`` of the paper's table (so it follows the *scaled* input); the stem is
``make_divisible(16 * alpha)``; the last 1x1 conv ``make_divisible(960 * alpha)`` (576 for Small); the
pooled 1280 (1024) head is kept for alpha <= 1 and scaled for alpha > 1.

Options that reproduce other libraries (see docs/convert.md):

- ``stem_width="fixed"``: the stem keeps 16 channels for every alpha (Keras always; timm for alpha < 0.75).
- ``expand_width="scaled"``: expanded widths are ``make_divisible(exp * alpha)`` of the table's exp size
  instead of following the scaled input (torchvision); they differ for alpha != 1.
- ``last_conv_width="from_blocks"``: the last 1x1 conv is 6x the last block's width (torchvision, Keras)
  instead of ``make_divisible(960 * alpha)``; they differ for some alphas (e.g. 0.26).
- ``head_width``: ``"default"`` is the rule above; ``"scaled"`` scales the pooled head for every alpha
  (torchvision), ``"fixed"`` never scales it (timm).
- ``channel_rounding`` is a V1/V2 option and is refused here (V3 always uses ``make_divisible``).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Literal

from torch import nn

from ..layers import ConvNormAct, InvertedResidual, make_divisible
from .base import MobileNet, ModelInfo, ModelOptions, SmallInputStrides, stage_feature_info

__all__ = ["BneckRow", "V3Spec", "MOBILENET_V3_LARGE", "MOBILENET_V3_SMALL", "build_mobilenet_v3", "minimal"]

Act = Literal["RE", "HS"]


@dataclass(frozen=True)
class BneckRow:
    """One "bneck" row of the V3 paper's Tables 1 and 2 (input channels, operator kernel, exp size,
    #out, SE, NL, s)."""

    in_chs: int
    kernel: int
    exp: int
    out: int
    se: bool
    act: Act
    stride: int


@dataclass(frozen=True)
class V3Spec:
    stem: int
    stem_act: Act
    rows: tuple[BneckRow, ...]
    last_conv: int  # "conv2d 1x1" before pooling
    head: int  # "conv2d 1x1, NBN" after pooling
    head_act: Act


R = BneckRow
# V3 paper, Table 1 (MobileNetV3-Large), input 224x224x3; stem conv2d 3x3 / s2, 16, HS.
MOBILENET_V3_LARGE = V3Spec(
    stem=16,
    stem_act="HS",
    rows=(
        R(16, 3, 16, 16, False, "RE", 1),  # 112x112
        R(16, 3, 64, 24, False, "RE", 2),  # -> 56x56
        R(24, 3, 72, 24, False, "RE", 1),
        R(24, 5, 72, 40, True, "RE", 2),  # -> 28x28
        R(40, 5, 120, 40, True, "RE", 1),
        R(40, 5, 120, 40, True, "RE", 1),
        R(40, 3, 240, 80, False, "HS", 2),  # -> 14x14
        R(80, 3, 200, 80, False, "HS", 1),
        R(80, 3, 184, 80, False, "HS", 1),
        R(80, 3, 184, 80, False, "HS", 1),
        R(80, 3, 480, 112, True, "HS", 1),
        R(112, 3, 672, 112, True, "HS", 1),
        R(112, 5, 672, 160, True, "HS", 2),  # -> 7x7
        R(160, 5, 960, 160, True, "HS", 1),
        R(160, 5, 960, 160, True, "HS", 1),
    ),
    last_conv=960,
    head=1280,
    head_act="HS",
)

# V3 paper, Table 2 (MobileNetV3-Small). The table marks SE on the last 1x1 conv (576); neither the
# TensorFlow reference nor torchvision/timm/Keras has it there, and the published 2.5M params exclude it.
MOBILENET_V3_SMALL = V3Spec(
    stem=16,
    stem_act="HS",
    rows=(
        R(16, 3, 16, 16, True, "RE", 2),  # -> 56x56
        R(16, 3, 72, 24, False, "RE", 2),  # -> 28x28
        R(24, 3, 88, 24, False, "RE", 1),
        R(24, 5, 96, 40, True, "HS", 2),  # -> 14x14
        R(40, 5, 240, 40, True, "HS", 1),
        R(40, 5, 240, 40, True, "HS", 1),
        R(40, 5, 120, 48, True, "HS", 1),
        R(48, 5, 144, 48, True, "HS", 1),
        R(48, 5, 288, 96, True, "HS", 2),  # -> 7x7
        R(96, 5, 576, 96, True, "HS", 1),
        R(96, 5, 576, 96, True, "HS", 1),
    ),
    last_conv=576,
    head=1024,
    head_act="HS",
)


def minimal(spec: V3Spec) -> V3Spec:
    """The TensorFlow reference's "minimalistic" variant: no SE, ReLU everywhere, 3x3 kernels."""
    return replace(
        spec,
        stem_act="RE",
        head_act="RE",
        rows=tuple(replace(r, kernel=3, se=False, act="RE") for r in spec.rows),
    )


def build_mobilenet_v3(arch: str, opts: ModelOptions, spec: V3Spec) -> MobileNet:
    # act_layer overrides h-swish; the table's ReLU layers stay ReLU
    hswish = opts.act(nn.Hardswish)
    acts = {"RE": nn.ReLU, "HS": hswish}
    conv = opts.conv_kwargs()
    opts.require_defaults(("channel_rounding",), arch, "mobilenet_v1 / mobilenet_v2")
    alpha = opts.width_mult
    stem_chs = opts.stem_channels(spec.stem)
    strides = SmallInputStrides(opts.small_input)
    stem_stride = strides.stem
    stem = ConvNormAct(opts.in_chans, stem_chs, 3, stem_stride, act_layer=acts[spec.stem_act], **conv)
    blocks: list[nn.Module] = []
    specs: list[tuple[int, int]] = []
    in_chs = stem_chs
    n = len(spec.rows)
    for idx, row in enumerate(spec.rows):
        out_chs = make_divisible(row.out * alpha)
        if opts.expand_width == "scaled":
            mid_chs = make_divisible(row.exp * alpha)
        else:
            mid_chs = make_divisible(in_chs * row.exp / row.in_chs)
        stride = row.stride
        stride = strides.block(stride)
        blocks.append(
            InvertedResidual(
                in_chs,
                mid_chs,
                out_chs,
                kernel_size=row.kernel,
                stride=stride,
                se_channels=make_divisible(mid_chs / 4) if row.se else None,
                act_layer=acts[row.act],
                drop_path_rate=opts.drop_path_rate * idx / n,
                **conv,
            )
        )
        specs.append((out_chs, stride))
        in_chs = out_chs
    if opts.last_conv_width == "from_blocks":
        last_chs = make_divisible(in_chs * spec.last_conv / spec.rows[-1].out)
    else:
        last_chs = make_divisible(spec.last_conv * alpha)
    final_conv = ConvNormAct(in_chs, last_chs, 1, act_layer=acts[spec.head_act], **conv)
    head = opts.head_channels(spec.head)
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
        head_hidden=head,
        head_act=acts[spec.head_act],
    )
