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

from ..layers import ConvNormAct

__all__ = ["INDUCTOR_OPTIONS", "fold_batchnorm", "count_batchnorm", "compile_frozen", "prepare_for_inference"]

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
) -> Callable[[torch.Tensor], torch.Tensor]:
    """Fold batch norm, switch to channels-last memory (oneDNN's preferred layout for depthwise convs on
    CPU) and optionally compile (:func:`compile_frozen`); return a callable mapping an NCHW float batch to logits.

    The returned callable runs under ``torch.inference_mode`` and accepts contiguous NCHW input; the layout
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

    predict.module = folded  # type: ignore[attr-defined]
    return predict
