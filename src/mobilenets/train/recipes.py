"""Training recipes: the papers' RMSProp + exponential decay, and a modern SGD/AdamW + warmup + cosine default.

``paper`` follows MobileNetV2 (Sandler et al., 2018, sec. 6.1): RMSProp with decay and momentum 0.9, weight
decay 4e-5, initial learning rate 0.045 decayed by 0.98 per epoch (V1 and V3 use the same optimiser family).
PyTorch's RMSprop adds epsilon outside the square root where TensorFlow adds it inside, so eps = 0.0316
approximates timm's ``rmsproptf`` with eps 1e-3 used for its MobileNetV3 reproduction.

``default`` is what current PyTorch recipes (torchvision's classification references, timm) use for short
runs: SGD with Nesterov momentum, linear warmup then cosine decay to zero, label smoothing 0.1 (Szegedy et
al., 2016) and an exponential moving average of the weights.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Optional

import torch
from torch import nn

from ..models.base import PooledConvNormAct

__all__ = ["RECIPES", "OPTIMIZERS", "RecipeDefaults", "resolve_recipe", "build_optimizer", "lr_factor_fn",
           "default_clip_grad"]

OPTIMIZERS = ("sgd", "adamw", "rmsprop")


@dataclass(frozen=True)
class RecipeDefaults:
    opt: str
    lr_per_256: float  # learning rate at batch size 256, scaled linearly with the global batch size
    weight_decay: float
    schedule: str  # "cosine" or "exponential"
    warmup_epochs: float
    decay_rate: float  # per-epoch factor of the exponential schedule
    label_smoothing: float
    ema_decay: float  # 0: no EMA


RECIPES: dict[str, RecipeDefaults] = {
    # V2 paper: lr 0.045 at batch 96 (16 workers x 96 asynchronous; we scale by the batch seen per step)
    "paper": RecipeDefaults("rmsprop", 0.045 * 256 / 96, 4e-5, "exponential", 0.0, 0.98, 0.0, 0.0),
    "default": RecipeDefaults("sgd", 0.4, 5e-5, "cosine", 1.0, 0.0, 0.1, 0.999),
}


def resolve_recipe(name: str) -> RecipeDefaults:
    if name not in RECIPES:
        raise ValueError(f"unknown recipe {name!r}; accepted: {', '.join(RECIPES)}")
    return RECIPES[name]


# gradient-norm bound applied when --clip-grad is not given, for models that need one (see default_clip_grad)
POOLED_NORM_SGD_CLIP = 1.0


def default_clip_grad(model: nn.Module, opt: str) -> float:
    """The gradient-norm bound used when none is given: 0 (no clipping), except for SGD on a model whose head
    batch-normalises the pooled features (MobileNetV4's head, as in the paper and timm): that norm divides by
    the batch spread of pooled activations, which is small at initialisation, and multiplies the gradient
    reaching the body accordingly (measured by ``benchmarks/experiments/head_norm_gradient.py``). SGD at the
    default recipe's learning rate then diverges within the first epoch, where clipping the norm to 1 trains
    it (docs/training.md).
    Adaptive optimisers (AdamW, RMSProp) scale their steps per parameter and need no bound."""
    if opt != "sgd":
        return 0.0
    head = getattr(model, "head_fc", None)
    if isinstance(head, PooledConvNormAct) and isinstance(head.bn, nn.modules.batchnorm._BatchNorm):
        return POOLED_NORM_SGD_CLIP
    return 0.0


def _param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    # no decay on biases and norm parameters (1-D tensors), as TF-slim regularises conv/fc kernels only
    decay, no_decay = [], []
    for param in model.parameters():
        if param.requires_grad:
            (no_decay if param.ndim <= 1 else decay).append(param)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def build_optimizer(model: nn.Module, opt: str, lr: float, weight_decay: float) -> torch.optim.Optimizer:
    groups = _param_groups(model, weight_decay)
    if opt == "sgd":
        return torch.optim.SGD(groups, lr=lr, momentum=0.9, nesterov=True)
    if opt == "adamw":
        return torch.optim.AdamW(groups, lr=lr)
    if opt == "rmsprop":
        return torch.optim.RMSprop(groups, lr=lr, alpha=0.9, momentum=0.9, eps=0.0316)
    raise ValueError(f"unknown optimizer {opt!r}; accepted: {', '.join(OPTIMIZERS)}")


def lr_factor_fn(
    schedule: str, steps_per_epoch: int, epochs: int, warmup_epochs: float, decay_rate: float
) -> Callable[[int], float]:
    """Multiplier of the base learning rate at optimizer step ``step`` (for ``LambdaLR``)."""
    total = max(1, steps_per_epoch * epochs)
    warmup = int(round(warmup_epochs * steps_per_epoch))

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        if schedule == "cosine":
            progress = (step - warmup) / max(1, total - warmup)
            return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))
        if schedule == "exponential":
            # per-epoch staircase, as in the papers
            return decay_rate ** ((step - warmup) // max(1, steps_per_epoch))
        raise ValueError(f"unknown schedule {schedule!r}; accepted: cosine, exponential")

    return factor


def ema_multi_avg_fn(decay: float) -> Callable[[list[torch.Tensor], list[torch.Tensor], Optional[torch.Tensor]], None]:
    """EMA update for ``AveragedModel(multi_avg_fn=...)``: the decay is min(decay, (1 + n) / (10 + n)) as in
    TensorFlow's ExponentialMovingAverage(num_updates=...), so short runs are not dominated by the init.

    One ``torch._foreach_lerp_`` over all floating tensors instead of a Python loop over them, whose
    per-tensor overhead can cost as much as a small model's training step (docs/training.md). Integer
    buffers (BN's batch counters) follow the model."""

    def update(averaged: list[torch.Tensor], current: list[torch.Tensor], num_averaged: Optional[torch.Tensor]) -> None:
        n = float(num_averaged) if num_averaged is not None else 0.0
        d = min(decay, (1.0 + n) / (10.0 + n))
        with torch.no_grad():
            if averaged[0].is_floating_point():
                torch._foreach_lerp_(averaged, current, 1.0 - d)
            else:
                torch._foreach_copy_(averaged, current)

    return update
