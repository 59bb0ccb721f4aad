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

``reduced_tail=True``: the last stage, the last conv and the head at half width (:func:`reduced_tail`), the
V3 paper's segmentation backbone (Table 6's dagger, RF2 in Table 7). The paper's RF2 (TensorFlow DeepLab's
``mobilenet_v3_large_seg``) halves the expansion of the stage's first block too (672 -> 336 on Large), which
its Table 7 parameter count needs (1.51M, docs/segmentation.md); ``reduced_tail_expansion="kept"`` keeps it,
as torchvision's ``reduced_tail=True`` does.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Literal

from torch import nn

from ..layers import ConvNormAct, InvertedResidual, make_divisible
from .base import BlockArgs, MobileNet, ModelOptions, build_network

__all__ = [
    "BneckRow", "V3Spec", "MOBILENET_V3_LARGE", "MOBILENET_V3_SMALL", "build_mobilenet_v3", "minimal", "reduced_tail",
]

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
    stages: tuple[tuple[BneckRow, ...], ...]  # by resolution stage
    last_conv: int  # "conv2d 1x1" before pooling
    head: int  # "conv2d 1x1, NBN" after pooling
    head_act: Act


R = BneckRow
# V3 paper, Table 1 (MobileNetV3-Large), input 224x224x3; stem conv2d 3x3 / s2, 16, HS.
MOBILENET_V3_LARGE = V3Spec(
    stem=16,
    stem_act="HS",
    stages=(
        # stage 1, 112x112
        (R(16, 3, 16, 16, False, "RE", 1),),
        # stage 2, -> 56x56
        (R(16, 3, 64, 24, False, "RE", 2), R(24, 3, 72, 24, False, "RE", 1)),
        # stage 3, -> 28x28
        (R(24, 5, 72, 40, True, "RE", 2), R(40, 5, 120, 40, True, "RE", 1), R(40, 5, 120, 40, True, "RE", 1)),
        # stage 4, -> 14x14
        (
            R(40, 3, 240, 80, False, "HS", 2),
            R(80, 3, 200, 80, False, "HS", 1),
            R(80, 3, 184, 80, False, "HS", 1),
            R(80, 3, 184, 80, False, "HS", 1),
            R(80, 3, 480, 112, True, "HS", 1),
            R(112, 3, 672, 112, True, "HS", 1),
        ),
        # stage 5, -> 7x7
        (R(112, 5, 672, 160, True, "HS", 2), R(160, 5, 960, 160, True, "HS", 1), R(160, 5, 960, 160, True, "HS", 1)),
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
    stages=(
        # stage 1, -> 56x56
        (R(16, 3, 16, 16, True, "RE", 2),),
        # stage 2, -> 28x28
        (R(16, 3, 72, 24, False, "RE", 2), R(24, 3, 88, 24, False, "RE", 1)),
        # stage 3, -> 14x14
        (
            R(24, 5, 96, 40, True, "HS", 2),
            R(40, 5, 240, 40, True, "HS", 1),
            R(40, 5, 240, 40, True, "HS", 1),
            R(40, 5, 120, 48, True, "HS", 1),
            R(48, 5, 144, 48, True, "HS", 1),
        ),
        # stage 4, -> 7x7
        (R(48, 5, 288, 96, True, "HS", 2), R(96, 5, 576, 96, True, "HS", 1), R(96, 5, 576, 96, True, "HS", 1)),
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
        stages=tuple(tuple(replace(r, kernel=3, se=False, act="RE") for r in stage) for stage in spec.stages),
    )


def reduced_tail(spec: V3Spec, first_expansion: str = "halved") -> V3Spec:
    """The last stage, the last conv and the head at half width: the V3 paper's Table 6 dagger ("RF2" in
    Table 7), for segmentation. The first block of the stage reads the previous stage's full width; its
    expansion is halved (``"halved"``, the paper's) or kept (``"kept"``, torchvision's ``_reduced_tail``)."""
    *rest, last = spec.stages
    first, *others = last
    first_exp = first.exp // 2 if first_expansion == "halved" else first.exp
    halved = (replace(first, exp=first_exp, out=first.out // 2),) + tuple(
        replace(r, in_chs=r.in_chs // 2, exp=r.exp // 2, out=r.out // 2) for r in others
    )
    return replace(spec, stages=(*rest, halved), last_conv=spec.last_conv // 2, head=spec.head // 2)


def build_mobilenet_v3(arch: str, opts: ModelOptions, spec: V3Spec) -> MobileNet:
    # act_layer overrides h-swish; the table's ReLU layers stay ReLU
    hswish = opts.act(nn.Hardswish)
    acts = {"RE": nn.ReLU, "HS": hswish}
    conv = opts.conv_kwargs()
    opts.require_defaults(("channel_rounding",), arch, "mobilenet_v1 / mobilenet_v2")
    alpha = opts.width_mult
    if opts.reduced_tail:
        spec = reduced_tail(spec, opts.reduced_tail_expansion)
    elif opts.reduced_tail_expansion != "halved":
        raise ValueError(f"reduced_tail_expansion={opts.reduced_tail_expansion!r} needs reduced_tail=True")

    def make_block(row: BneckRow, at: BlockArgs) -> tuple[nn.Module, int]:
        out_chs = make_divisible(row.out * alpha)
        if opts.expand_width == "scaled":
            mid_chs = make_divisible(row.exp * alpha)
        else:
            mid_chs = make_divisible(at.in_chs * row.exp / row.in_chs)
        block = InvertedResidual(
            at.in_chs,
            mid_chs,
            out_chs,
            kernel_size=row.kernel,
            stride=at.stride,
            dilation=at.dilation,
            se_channels=make_divisible(mid_chs / 4) if row.se else None,
            act_layer=acts[row.act],
            drop_path_rate=at.drop_path_rate,
            **conv,
        )
        return block, out_chs

    def final_conv(in_chs: int) -> tuple[nn.Module, int]:
        if opts.last_conv_width == "from_blocks":
            last_chs = make_divisible(in_chs * spec.last_conv / spec.stages[-1][-1].out)
        else:
            last_chs = make_divisible(spec.last_conv * alpha)
        return ConvNormAct(in_chs, last_chs, 1, act_layer=acts[spec.head_act], **conv), last_chs

    return build_network(
        arch,
        opts,
        stem_chs=opts.stem_channels(spec.stem),
        stem_act=acts[spec.stem_act],
        stages=[[(row, row.stride) for row in stage] for stage in spec.stages],
        make_block=make_block,
        final_conv=final_conv,
        head_hidden=opts.head_channels(spec.head),
        head_act=acts[spec.head_act],
    )
