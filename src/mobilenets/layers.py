"""Building blocks shared by every MobileNet generation.

Attribute names are stable and descriptive (``conv_pw``, ``conv_dw``, ``se``, ``conv_pwl``) because
weight conversion and debugging address tensors by these names.
"""

from __future__ import annotations

import math
from typing import Callable, Literal, Optional, Union

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "make_divisible",
    "ConvNormAct",
    "DepthwiseSeparableConv",
    "InvertedResidual",
    "UniversalInvertedBottleneck",
    "FusedInvertedBottleneck",
    "MobileMultiQueryAttention",
    "LayerScale",
    "SqueezeExcite",
    "DropPath",
    "resolve_act_layer",
    "resolve_norm_layer",
    "ACT_LAYERS",
    "NORM_LAYERS",
    "Padding",
]

Padding = Literal["symmetric", "same"]
LayerFactory = Callable[..., nn.Module]

ACT_LAYERS: dict[str, type[nn.Module]] = {
    "relu": nn.ReLU,
    "relu6": nn.ReLU6,
    "hardswish": nn.Hardswish,
    "silu": nn.SiLU,
    "gelu": nn.GELU,
    "identity": nn.Identity,
}


def _group_norm(num_channels: int, eps: float = 1e-5, momentum: float | None = None) -> nn.Module:
    # 8 groups where the width allows it, else one group per channel pair (LayerNorm-like for tiny widths)
    del momentum  # GroupNorm keeps no running statistics
    groups = math.gcd(8, num_channels)
    return nn.GroupNorm(groups, num_channels, eps=eps)


NORM_LAYERS: dict[str, LayerFactory] = {
    "batchnorm": nn.BatchNorm2d,
    "groupnorm": _group_norm,
}


def _pick(kind: str, value, table: dict[str, LayerFactory]) -> LayerFactory:
    if isinstance(value, str):
        try:
            return table[value.lower()]
        except KeyError:
            raise ValueError(
                f"unknown {kind} {value!r}; accepted names: {', '.join(sorted(table))} (or pass a callable)"
            ) from None
    if callable(value):
        return value
    raise TypeError(f"{kind} must be a name ({', '.join(sorted(table))}) or a callable, got {type(value).__name__}")


def resolve_act_layer(value: Union[str, LayerFactory]) -> LayerFactory:
    """Turn ``"relu6"`` or ``nn.ReLU6`` into a factory called with no arguments."""
    return _pick("act_layer", value, ACT_LAYERS)


def resolve_norm_layer(value: Union[str, LayerFactory]) -> LayerFactory:
    """Turn ``"batchnorm"`` or ``nn.BatchNorm2d`` into a factory called as ``norm(channels, eps=, momentum=)``."""
    return _pick("norm_layer", value, NORM_LAYERS)


def make_divisible(value: float, divisor: int = 8, min_value: Optional[int] = None, round_limit: float = 0.9) -> int:
    """Round a channel count to the nearest multiple of ``divisor``.

    The one rounding rule of the library, from the TensorFlow reference (``_make_divisible``):
    the result is at least ``min_value`` (default ``divisor``) and never more than 10% below ``value``.
    """
    if divisor < 1:
        raise ValueError(f"divisor must be >= 1, got {divisor}")
    min_value = divisor if min_value is None else min_value
    new_value = max(min_value, int(value + divisor / 2) // divisor * divisor)
    if new_value < round_limit * value:
        new_value += divisor
    return new_value


def _same_padding(size: int, kernel: int, stride: int, dilation: int) -> tuple[int, int]:
    """TensorFlow "SAME": output = ceil(size / stride); the odd pixel of padding goes after."""
    out = -(-size // stride)
    total = max((out - 1) * stride + (kernel - 1) * dilation + 1 - size, 0)
    return total // 2, total - total // 2


class ConvNormAct(nn.Module):
    """Conv2d (no bias) -> norm -> activation: the unit every MobileNet is built from.

    ``padding="symmetric"`` pads ``dilation * (k // 2)`` on every side (PyTorch convention);
    ``padding="same"`` reproduces TensorFlow/Keras, which pad asymmetrically on stride-2 convs.
    ``norm_layer=None`` gives a conv with bias and no norm (the V3 head conv is "NBN" in the paper).
    """

    # a plain conv has no expansion inside: feature_location="expansion" takes its output, as timm's ConvBnAct
    expansion_input: Optional[str] = None

    def __init__(
        self,
        in_chs: int,
        out_chs: int,
        kernel_size: int = 3,
        stride: int = 1,
        groups: int = 1,
        dilation: int = 1,
        norm_layer: Optional[LayerFactory] = nn.BatchNorm2d,
        act_layer: Optional[LayerFactory] = nn.ReLU,
        padding: Padding = "symmetric",
        bn_eps: float = 1e-5,
        bn_momentum: float = 0.1,
    ) -> None:
        super().__init__()
        if padding not in ("symmetric", "same"):
            raise ValueError(f"padding must be 'symmetric' or 'same', got {padding!r}")
        self.padding = padding
        self.kernel_size = kernel_size
        self.stride = stride
        self.dilation = dilation
        static_pad = dilation * (kernel_size // 2) if padding == "symmetric" else 0
        # "same" with stride 1 and an odd kernel is symmetric too: no dynamic padding needed then
        self._dynamic_pad = padding == "same" and (stride > 1 or kernel_size % 2 == 0)
        if padding == "same" and not self._dynamic_pad:
            static_pad = dilation * (kernel_size // 2)
        self.conv = nn.Conv2d(
            in_chs,
            out_chs,
            kernel_size,
            stride=stride,
            padding=static_pad,
            dilation=dilation,
            groups=groups,
            bias=norm_layer is None,
        )
        self.bn = norm_layer(out_chs, eps=bn_eps, momentum=bn_momentum) if norm_layer is not None else nn.Identity()
        self.act = act_layer() if act_layer is not None else nn.Identity()

    @property
    def in_channels(self) -> int:
        return self.conv.in_channels

    @property
    def out_channels(self) -> int:
        return self.conv.out_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self._dynamic_pad:
            ph = _same_padding(x.shape[-2], self.kernel_size, self.stride, self.dilation)
            pw = _same_padding(x.shape[-1], self.kernel_size, self.stride, self.dilation)
            x = F.pad(x, (pw[0], pw[1], ph[0], ph[1]))
        return self.act(self.bn(self.conv(x)))


class DropPath(nn.Module):
    """Stochastic depth: drop the residual branch per sample with probability ``p`` while training."""

    def __init__(self, p: float = 0.0) -> None:
        super().__init__()
        if not 0.0 <= p < 1.0:
            raise ValueError(f"drop path rate must be in [0, 1), got {p}")
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.p == 0.0 or not self.training:
            return x
        keep = 1.0 - self.p
        mask = x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(keep)
        return x * mask / keep

    def extra_repr(self) -> str:
        return f"p={self.p}"


class SqueezeExcite(nn.Module):
    """Squeeze-and-excite as in MobileNetV3 (Sec. 5.3): pool, 1x1 reduce + ReLU, 1x1 expand, hard-sigmoid gate.

    The reduced width is ``make_divisible(channels / 4)`` of the *expanded* channels it gates.
    """

    def __init__(
        self,
        channels: int,
        rd_channels: Optional[int] = None,
        act_layer: LayerFactory = nn.ReLU,
        gate_layer: LayerFactory = nn.Hardsigmoid,
    ) -> None:
        super().__init__()
        rd_channels = make_divisible(channels / 4) if rd_channels is None else rd_channels
        self.conv_reduce = nn.Conv2d(channels, rd_channels, 1, bias=True)
        self.act = act_layer()
        self.conv_expand = nn.Conv2d(rd_channels, channels, 1, bias=True)
        self.gate = gate_layer()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = x.mean((2, 3), keepdim=True)
        s = self.gate(self.conv_expand(self.act(self.conv_reduce(s))))
        return x * s


class DepthwiseSeparableConv(nn.Module):
    """MobileNetV1 block (V1 paper, Fig. 3): 3x3 depthwise + BN + ReLU, then 1x1 pointwise + BN + ReLU."""

    # feature_location="expansion" taps the input of this child (timm's convention: the depthwise output)
    expansion_input = "conv_pw"

    def __init__(
        self,
        in_chs: int,
        out_chs: int,
        stride: int = 1,
        kernel_size: int = 3,
        dilation: int = 1,
        norm_layer: LayerFactory = nn.BatchNorm2d,
        act_layer: LayerFactory = nn.ReLU,
        padding: Padding = "symmetric",
        bn_eps: float = 1e-5,
        bn_momentum: float = 0.1,
    ) -> None:
        super().__init__()
        common = dict(norm_layer=norm_layer, act_layer=act_layer, bn_eps=bn_eps, bn_momentum=bn_momentum)
        self.conv_dw = ConvNormAct(
            in_chs, in_chs, kernel_size, stride, groups=in_chs, dilation=dilation, padding=padding, **common
        )
        self.conv_pw = ConvNormAct(in_chs, out_chs, 1, **common)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv_pw(self.conv_dw(x))


class _Residual(nn.Module):
    """A block whose branch joins its input when ``has_skip`` (stride 1, same width), with stochastic depth on
    the branch: the one rule of every residual block here (V2/V3, V4's UIB, fused IB and attention)."""

    has_skip: bool
    drop_path: nn.Module

    def _residual(self, in_chs: int, out_chs: int, stride: int, drop_path_rate: float) -> None:
        self.has_skip = stride == 1 and in_chs == out_chs
        self.drop_path = DropPath(drop_path_rate) if self.has_skip and drop_path_rate > 0 else nn.Identity()

    def _join(self, out: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return self.drop_path(out) + x if self.has_skip else out


class InvertedResidual(_Residual):
    """Inverted residual with linear bottleneck (V2 paper, Table 1), optionally with squeeze-excite (V3).

    1x1 expansion (skipped when ``mid_chs == in_chs``), kxk depthwise, optional SE, *linear* 1x1 projection.
    The residual joins the thin ends when the stride is 1 and the widths match.
    """

    # feature_location="expansion": the input of the projection, the widest map of the block (SSDLite's C4)
    expansion_input = "conv_pwl"

    def __init__(
        self,
        in_chs: int,
        mid_chs: int,
        out_chs: int,
        kernel_size: int = 3,
        stride: int = 1,
        dilation: int = 1,
        se_channels: Optional[int] = None,
        act_layer: LayerFactory = nn.ReLU6,
        norm_layer: LayerFactory = nn.BatchNorm2d,
        se_layer: Callable[..., nn.Module] = SqueezeExcite,
        padding: Padding = "symmetric",
        bn_eps: float = 1e-5,
        bn_momentum: float = 0.1,
        drop_path_rate: float = 0.0,
    ) -> None:
        super().__init__()
        common = dict(norm_layer=norm_layer, bn_eps=bn_eps, bn_momentum=bn_momentum)
        self.conv_pw = (
            ConvNormAct(in_chs, mid_chs, 1, act_layer=act_layer, **common) if mid_chs != in_chs else nn.Identity()
        )
        self.conv_dw = ConvNormAct(
            mid_chs,
            mid_chs,
            kernel_size,
            stride,
            groups=mid_chs,
            dilation=dilation,
            act_layer=act_layer,
            padding=padding,
            **common,
        )
        self.se = se_layer(mid_chs, se_channels) if se_channels else nn.Identity()
        # linear bottleneck: no activation after the projection (V2 paper, Sec. 3.2)
        self.conv_pwl = ConvNormAct(mid_chs, out_chs, 1, act_layer=None, **common)
        self._residual(in_chs, out_chs, stride, drop_path_rate)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv_pwl(self.se(self.conv_dw(self.conv_pw(x))))
        return self._join(out, x)


class UniversalInvertedBottleneck(_Residual):
    """MobileNetV4's Universal Inverted Bottleneck (UIB; V4 paper, Sec. 3.1 and Fig. 4).

    An optional kxk depthwise conv *before* the expansion (``start_kernel``, linear), the 1x1 expansion,
    an optional kxk depthwise conv in the wide space (``mid_kernel``), and the linear 1x1 projection. The two
    optional convs give the four instances the search picks from:

    - IB (``start_kernel=0``, ``mid_kernel=k``): V2's inverted bottleneck;
    - ConvNext (``k``, ``0``): spatial mixing before the expansion;
    - ExtraDW (``k1``, ``k2``): both, a larger receptive field for little compute;
    - FFN (``0``, ``0``): two 1x1 convs, a transformer's MLP.

    The stride goes to the middle depthwise conv when there is one, else to the starting one (an FFN cannot
    downsample). The residual joins the thin ends when the stride is 1 and the widths match. ``layer_scale``
    (the hybrid models) multiplies the branch by a learned per-channel scale started at that value, on every
    block, with or without a residual (as the reference does). ``dilation`` applies to both depthwise convs
    (an output stride below 32).
    """

    expansion_input = "conv_pwl"

    def __init__(
        self,
        in_chs: int,
        mid_chs: int,
        out_chs: int,
        start_kernel: int = 0,
        mid_kernel: int = 3,
        stride: int = 1,
        dilation: int = 1,
        act_layer: LayerFactory = nn.ReLU,
        norm_layer: LayerFactory = nn.BatchNorm2d,
        padding: Padding = "symmetric",
        bn_eps: float = 1e-5,
        bn_momentum: float = 0.1,
        drop_path_rate: float = 0.0,
        layer_scale: Optional[float] = None,
    ) -> None:
        super().__init__()
        if stride > 1 and not (start_kernel or mid_kernel):
            raise ValueError("a UIB block without depthwise convs (FFN) cannot have stride > 1")
        common = dict(norm_layer=norm_layer, bn_eps=bn_eps, bn_momentum=bn_momentum)
        spatial = dict(padding=padding, dilation=dilation, **common)
        self.conv_dw_start = (
            ConvNormAct(in_chs, in_chs, start_kernel, 1 if mid_kernel else stride, groups=in_chs, act_layer=None,
                        **spatial)
            if start_kernel else nn.Identity()
        )
        self.conv_pw = ConvNormAct(in_chs, mid_chs, 1, act_layer=act_layer, **common)
        self.conv_dw = (
            ConvNormAct(mid_chs, mid_chs, mid_kernel, stride, groups=mid_chs, act_layer=act_layer, **spatial)
            if mid_kernel else nn.Identity()
        )
        self.conv_pwl = ConvNormAct(mid_chs, out_chs, 1, act_layer=None, **common)
        self.layer_scale = LayerScale(out_chs, layer_scale) if layer_scale is not None else nn.Identity()
        self._residual(in_chs, out_chs, stride, drop_path_rate)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.layer_scale(self.conv_pwl(self.conv_dw(self.conv_pw(self.conv_dw_start(x)))))
        return self._join(out, x)


class FusedInvertedBottleneck(_Residual):
    """The fused inverted bottleneck (FusedIB; EfficientNetV2's Fused-MBConv, V4 paper Sec. 3.1): a full kxk
    conv expands (and strides), then a linear 1x1 conv projects. Early, wide-spatial stages run it faster than
    a depthwise conv on most hardware. The residual joins the thin ends when the stride is 1 and the widths
    match."""

    expansion_input = "conv_pwl"

    def __init__(
        self,
        in_chs: int,
        mid_chs: int,
        out_chs: int,
        kernel_size: int = 3,
        stride: int = 1,
        dilation: int = 1,
        act_layer: LayerFactory = nn.ReLU,
        norm_layer: LayerFactory = nn.BatchNorm2d,
        padding: Padding = "symmetric",
        bn_eps: float = 1e-5,
        bn_momentum: float = 0.1,
        drop_path_rate: float = 0.0,
    ) -> None:
        super().__init__()
        common = dict(norm_layer=norm_layer, bn_eps=bn_eps, bn_momentum=bn_momentum)
        self.conv_exp = ConvNormAct(in_chs, mid_chs, kernel_size, stride, act_layer=act_layer, padding=padding,
                                    dilation=dilation, **common)
        self.conv_pwl = ConvNormAct(mid_chs, out_chs, 1, act_layer=None, **common)
        self._residual(in_chs, out_chs, stride, drop_path_rate)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv_pwl(self.conv_exp(x))
        return self._join(out, x)


class LayerScale(nn.Module):
    """A learned per-channel scale of an (N, C, H, W) branch, started small (Touvron et al., CaiT,
    arXiv:2103.17239), so that deep stacks of residual branches start close to the identity."""

    def __init__(self, channels: int, init: float = 1e-5) -> None:
        super().__init__()
        self.gamma = nn.Parameter(torch.full((channels,), float(init)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gamma.view(1, -1, 1, 1)


class MobileMultiQueryAttention(_Residual):
    """Mobile MQA (V4 paper, Sec. 3.3): multi-query attention over the pixels of a feature map, for the
    hybrid models.

    Batch norm, then ``heads`` queries per pixel (a 1x1 conv to ``heads * key_dim``) and one key and one value
    per pixel shared by all heads (multi-query: 1x1 convs to ``key_dim`` and ``value_dim``). With
    ``kv_stride`` 2 the keys and values come from a map downsampled by a strided ``kv_kernel`` depthwise conv
    + batch norm (dilated past the output stride, as timm's), which cuts the attention's cost by 4 ("spatial
    reduction"). Softmax over the keys, the
    heads' outputs concatenated (head-major), a 1x1 output conv, an optional layer scale, and the residual.
    """

    expansion_input = "out"

    def __init__(
        self,
        in_chs: int,
        out_chs: int,
        heads: int,
        key_dim: int,
        value_dim: int,
        kv_stride: int = 1,
        kv_kernel: int = 3,
        dilation: int = 1,
        norm_layer: LayerFactory = nn.BatchNorm2d,
        padding: Padding = "symmetric",
        bn_eps: float = 1e-5,
        bn_momentum: float = 0.1,
        drop_path_rate: float = 0.0,
        layer_scale: Optional[float] = None,
    ) -> None:
        super().__init__()
        if heads < 1 or key_dim < 1 or value_dim < 1 or kv_stride < 1:
            raise ValueError(
                "heads, key_dim, value_dim and kv_stride must be >= 1, "
                f"got {heads}, {key_dim}, {value_dim}, {kv_stride}"
            )
        self.heads, self.key_dim, self.value_dim, self.kv_stride = heads, key_dim, value_dim, kv_stride
        self.norm = norm_layer(in_chs, eps=bn_eps, momentum=bn_momentum)
        self.query = nn.Conv2d(in_chs, heads * key_dim, 1, bias=False)

        def downsample() -> nn.Module:
            if kv_stride == 1:
                return nn.Identity()
            return ConvNormAct(in_chs, in_chs, kv_kernel, kv_stride, groups=in_chs, dilation=dilation, act_layer=None,
                               padding=padding, norm_layer=norm_layer, bn_eps=bn_eps, bn_momentum=bn_momentum)

        self.key_down = downsample()
        self.key = nn.Conv2d(in_chs, key_dim, 1, bias=False)
        self.value_down = downsample()
        self.value = nn.Conv2d(in_chs, value_dim, 1, bias=False)
        self.out = nn.Conv2d(heads * value_dim, out_chs, 1, bias=False)
        self.layer_scale = LayerScale(out_chs, layer_scale) if layer_scale is not None else nn.Identity()
        self._residual(in_chs, out_chs, 1, drop_path_rate)

    def num_keys(self, height: int, width: int) -> int:
        """Key (and value) pixels for a ``height`` x ``width`` map: the map downsampled by ``kv_stride``."""
        return -(-height // self.kv_stride) * -(-width // self.kv_stride)

    def attention_macs(self, height: int, width: int) -> int:
        """Multiply-accumulates of the two matrix products (queries x keys, weights x values) per image, which
        no conv counts: every query pixel against every key pixel, for each head."""
        return self.heads * height * width * self.num_keys(height, width) * (self.key_dim + self.value_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, _, h, w = x.shape
        y = self.norm(x)
        q = self.query(y).reshape(n, self.heads, self.key_dim, h * w).transpose(-1, -2)  # (N, heads, HW, k)
        k = self.key(self.key_down(y)).flatten(2).transpose(1, 2).unsqueeze(1)  # (N, 1, M, k): shared by the heads
        v = self.value(self.value_down(y)).flatten(2).transpose(1, 2).unsqueeze(1)  # (N, 1, M, v)
        # softmax(q k^T / sqrt(key_dim)) v, PyTorch's fused kernel where it has one
        o = F.scaled_dot_product_attention(q, k, v)  # (N, heads, HW, v)
        # (N, heads * v, H, W), head-major channels. One transpose whose reshape must copy: the transpose-reshape-
        # permute it replaces was traced as a plain view of the fused kernel's output layout, which ExecuTorch's
        # decomposition then refused and LiteRT converted to wrong outputs (max diff 0.65 on V4-Hybrid-M)
        o = o.transpose(-1, -2).reshape(n, self.heads * self.value_dim, h, w)
        out = self.layer_scale(self.out(o))
        return self._join(out, x)
