"""Inference preparation: batch norm folded into the convolutions, optional channels-last layout and compile.

Folding follows the standard identity (Jacob et al., "Quantization and Training of Neural Networks for Efficient
Integer-Arithmetic-Only Inference", CVPR 2018, Sec. 3.2): ``W' = W * gamma / sqrt(var + eps)`` and
``b' = beta + (b - mean) * gamma / sqrt(var + eps)``, computed by ``torch.nn.utils.fusion.fuse_conv_bn_eval``.
A folded network computes the same function in eval mode with one fewer pass over every activation map,
and it is what ONNX exporters and INT8 quantizers expect (one weight tensor and one bias per conv).
"""

from __future__ import annotations

import copy
from typing import Callable

import torch
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

from ..layers import ConvNormAct, InvertedResidual, SqueezeExcite
from .predictor import Predictor

__all__ = [
    "INDUCTOR_OPTIONS", "fold_batchnorm", "count_batchnorm", "compile_frozen", "pad_expanded_channels",
    "prepare_for_inference",
]

# Inference-only Inductor settings. Freezing turns the weights into constants, so Inductor folds them and
# prepacks each conv's weights into oneDNN's blocked layout once instead of reordering them on every call.
INDUCTOR_OPTIONS = {"freezing": True}


def fold_batchnorm(model: nn.Module, inplace: bool = False) -> nn.Module:
    """Return ``model`` in eval mode with every ``ConvNormAct`` batch norm folded into its conv.

    Norms that cannot fold (group norm keeps no running statistics) stay in place. The original model is
    untouched unless ``inplace=True``.
    """
    model = model if inplace else copy.deepcopy(model)
    model.eval()
    for module in model.modules():
        if isinstance(module, ConvNormAct) and isinstance(module.bn, nn.BatchNorm2d):
            module.conv = fuse_conv_bn_eval(module.conv, module.bn)
            module.bn = nn.Identity()
    return model


def _grown(conv: nn.Conv2d, out_channels: int, in_channels: int) -> nn.Conv2d:
    """A copy of ``conv`` (with a bias) widened to ``out_channels`` x ``in_channels``; the new weights and
    biases are zero. A depthwise conv stays depthwise (one filter per channel)."""
    depthwise = conv.groups > 1 and conv.groups == conv.in_channels == conv.out_channels
    if conv.groups > 1 and not depthwise:
        raise ValueError(f"cannot widen a grouped conv that is not depthwise: {conv}")
    grown = nn.Conv2d(
        in_channels, out_channels, conv.kernel_size, conv.stride, conv.padding, conv.dilation,
        groups=out_channels if depthwise else 1, bias=True, padding_mode=conv.padding_mode,
    ).to(device=conv.weight.device, dtype=conv.weight.dtype)
    with torch.no_grad():
        grown.weight.zero_()
        grown.bias.zero_()
        grown.weight[: conv.out_channels, : conv.weight.shape[1]] = conv.weight
        if conv.bias is not None:
            grown.bias[: conv.out_channels] = conv.bias
    return grown


def pad_expanded_channels(model: nn.Module, multiple: int = 16) -> nn.Module:
    """Return a batch-norm-folded copy of ``model`` whose expanded (depthwise) width in every inverted residual
    is rounded up to a multiple of ``multiple``, computing the same function.

    ONNX Runtime's fast integer depthwise kernels on x86 take a channel count that is a multiple of 16; other
    counts fall back to a generic, slower kernel (``MlasConvSymPackWSize`` in onnxruntime/core/mlas/lib/
    convsym.cpp). MobileNetV3-Large expands to 72, 120, 184 and 200 channels in 7 of its 15 blocks. The extra
    channels get zero filters and zero biases in the expansion conv and the depthwise conv, so they hold
    ``act(0) = 0`` for ReLU, ReLU6 and h-swish (any other activation is refused); the squeeze-excite reduce conv
    and the projection conv read them with zero weights, so the output is unchanged. This is for INT8 files:
    in fp32, ONNX Runtime blocks channels by 16 itself (``benchmarks/experiments/ort_graph_changes.py`` times both).
    """
    if multiple < 1:
        raise ValueError(f"multiple must be >= 1, got {multiple}")
    model = fold_batchnorm(model)
    zero_at_zero = (nn.ReLU, nn.ReLU6, nn.Hardswish, nn.Identity)
    for block in model.modules():
        if not isinstance(block, InvertedResidual) or not isinstance(block.conv_pw, ConvNormAct):
            continue  # without an expansion conv the width is the previous block's output
        width = block.conv_dw.out_channels
        padded = -(-width // multiple) * multiple
        if padded == width:
            continue
        if not all(isinstance(m.act, zero_at_zero) and isinstance(m.bn, nn.Identity)
                   for m in (block.conv_pw, block.conv_dw)):
            raise ValueError(
                f"cannot pad {block.__class__.__name__}: its expansion needs a batch norm folded away and an "
                "activation with act(0) = 0 (ReLU, ReLU6, h-swish)"
            )
        pw, dw = block.conv_pw.conv, block.conv_dw.conv
        block.conv_pw.conv = _grown(pw, padded, pw.in_channels)
        block.conv_dw.conv = _grown(dw, padded, padded)
        if isinstance(block.se, SqueezeExcite):
            reduce, expand = block.se.conv_reduce, block.se.conv_expand
            block.se.conv_reduce = _grown(reduce, reduce.out_channels, padded)
            block.se.conv_expand = _grown(expand, padded, expand.in_channels)  # gate(0) * 0 = 0
        elif not isinstance(block.se, nn.Identity):
            raise ValueError(f"cannot pad a block with attention {block.se.__class__.__name__}")
        pwl = block.conv_pwl.conv
        block.conv_pwl.conv = _grown(pwl, pwl.out_channels, padded)
    return model


def count_batchnorm(model: nn.Module) -> int:
    return sum(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())


def compile_frozen(module: nn.Module) -> Callable[[torch.Tensor], torch.Tensor]:
    """``torch.compile`` (Inductor) with :data:`INDUCTOR_OPTIONS`, one graph per input shape. Call the result
    under ``torch.no_grad`` or ``torch.inference_mode``: Inductor freezes only when no gradient is recorded,
    and the frozen graph ignores later changes to the module's weights."""
    from torch._inductor import config as inductor_config

    compiled = torch.compile(module, dynamic=False)

    def run(x: torch.Tensor) -> torch.Tensor:
        # Inductor compiles lazily (first call of each shape), so the settings must hold around the call.
        # Passing them as torch.compile(options=...) instead breaks PT2E graphs on torch 2.14 (fake-tensor
        # propagation meets an onednn.qconv_prepack it cannot run); the patched global config does not.
        with inductor_config.patch(INDUCTOR_OPTIONS):
            return compiled(x)

    return run


def prepare_for_inference(
    model: nn.Module,
    channels_last: bool = True,
    compile: bool = False,
) -> Predictor:
    """Fold batch norm, switch to channels-last memory (oneDNN's preferred layout for depthwise convs on
    CPU) and optionally compile (:func:`compile_frozen`); return a :class:`Predictor` mapping an NCHW float
    batch to logits (its ``module``: the folded model).

    The predictor runs under ``torch.inference_mode`` and accepts contiguous NCHW input; the layout
    conversion happens inside it.
    """
    folded = fold_batchnorm(model)
    if channels_last:
        folded = folded.to(memory_format=torch.channels_last)
    runner: Callable[[torch.Tensor], torch.Tensor] = folded
    if compile:
        runner = compile_frozen(folded)

    def predict(x: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode():
            if channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            return runner(x)

    return Predictor(predict, module=folded)
