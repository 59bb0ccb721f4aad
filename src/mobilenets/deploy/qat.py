"""Quantization-aware fine-tuning for the ONNX Runtime INT8 scheme of :mod:`.quantize`.

Post-training quantization loses most on MobileNetV3 (h-swish has a wide negative-to-positive range that a
uint8 grid resolves coarsely, and the SE gates multiply quantization error into every channel; Howard et al.,
"Searching for MobileNetV3", Sec. 6.1.2 report the same for their own INT8 models). Fine-tuning with the
rounding simulated in the forward pass (straight-through estimator; Jacob et al., CVPR 2018, Sec. 3) lets the
weights move to where the INT8 grid hurts less.

The simulation matches what :func:`~mobilenets.deploy.quantize.quantize_onnx` does afterwards: batch norm
folded first, weights of every conv and linear layer symmetric INT8 per output channel (scale max|w| / 127),
and their inputs asymmetric UINT8 per tensor with ranges tracked as a running min/max. After fine-tuning
the fake quantization is removed; the float weights it leaves are then exported and quantized for real.
"""

from __future__ import annotations

import itertools
from typing import Callable, Iterable, Optional

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import parametrize

from .prepare import fold_batchnorm

__all__ = ["WeightFakeQuant", "ActivationFakeQuant", "prepare_qat", "strip_qat", "qat_finetune"]


class WeightFakeQuant(nn.Module):
    """Symmetric INT8 per-output-channel fake quantization of a weight tensor (a parametrization)."""

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        reduce_dims = tuple(range(1, weight.ndim))
        scale = (weight.detach().abs().amax(dim=reduce_dims) / 127.0).clamp_min(1e-12)
        zero_point = torch.zeros(weight.shape[0], dtype=torch.int32, device=weight.device)
        return torch.fake_quantize_per_channel_affine(weight, scale, zero_point, 0, -127, 127)


class ActivationFakeQuant(nn.Module):
    """Asymmetric UINT8 per-tensor fake quantization with a running min/max range (updated while training)."""

    def __init__(self, momentum: float = 0.01) -> None:
        super().__init__()
        self.momentum = momentum
        self.register_buffer("low", torch.tensor(0.0))
        self.register_buffer("high", torch.tensor(0.0))
        self.register_buffer("initialised", torch.tensor(False))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training:
            low, high = x.detach().min(), x.detach().max()
            if not bool(self.initialised):
                self.low.copy_(low)
                self.high.copy_(high)
                self.initialised.fill_(True)
            else:
                self.low.lerp_(low, self.momentum)
                self.high.lerp_(high, self.momentum)
        # the range must hold zero exactly (zero padding and ReLU outputs), as ONNX Runtime's calibrator does
        low, high = min(float(self.low), 0.0), max(float(self.high), 0.0)
        scale = max((high - low) / 255.0, 1e-8)
        zero_point = int(round(-low / scale))
        return torch.fake_quantize_per_tensor_affine(x, scale, zero_point, 0, 255)


def _quantized_layers(model: nn.Module) -> list[nn.Module]:
    return [m for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]


def prepare_qat(model: nn.Module) -> nn.Module:
    """A copy of ``model`` with batch norm folded and fake quantization on every conv/linear weight and input."""
    qat = fold_batchnorm(model)
    for layer in _quantized_layers(qat):
        parametrize.register_parametrization(layer, "weight", WeightFakeQuant())
        layer.input_quant = ActivationFakeQuant()
        layer.register_forward_pre_hook(lambda module, args: (module.input_quant(args[0]),) + tuple(args[1:]))
    return qat


def strip_qat(model: nn.Module) -> nn.Module:
    """Remove the fake quantization in place; the float (latent) weights stay, ready for export."""
    for layer in _quantized_layers(model):
        if parametrize.is_parametrized(layer, "weight"):
            parametrize.remove_parametrizations(layer, "weight", leave_parametrized=False)
        layer._forward_pre_hooks.clear()
        if hasattr(layer, "input_quant"):
            del layer.input_quant
    return model.eval()


def qat_finetune(
    model: nn.Module,
    batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
    steps: int,
    lr: float = 1e-4,
    weight_decay: float = 0.0,
    log: Optional[Callable[[str], None]] = None,
) -> nn.Module:
    """Fine-tune ``model`` for ``steps`` batches of (images, labels) with INT8 simulated; return a new model
    (batch norm folded, fake quantization removed). Adam with cosine decay; a small learning rate because
    the model starts trained and only has to absorb the rounding."""
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    qat = prepare_qat(model)
    qat.train()
    optimizer = torch.optim.Adam(qat.parameters(), lr=lr, weight_decay=weight_decay)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, steps)
    for step, (images, labels) in enumerate(itertools.islice(itertools.cycle(batches), steps)):
        loss = F.cross_entropy(qat(images), labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
        if log is not None and (step + 1) % max(1, steps // 5) == 0:
            log(f"qat step {step + 1}/{steps}: loss {loss.item():.4f}")
    return strip_qat(qat)
