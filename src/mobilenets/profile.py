"""Parameter and multiply-accumulate counts, per layer and in total.

Convention (the one the MobileNet papers use for "mult-adds"):

* ``macs``: multiply-accumulates of convolutions and fully connected layers only. Batch norm is treated
  as folded into the preceding convolution (0 MACs, and its bias add is free), as on any deployed model.
* ``other_ops``: element-wise work reported separately and *not* in ``macs``: activations, pooling,
  the squeeze-excite channel scaling, residual adds, padding-free normalisation when it cannot fold.
* ``params``: PyTorch's trainable parameters (``requires_grad``), batch-norm affine terms included.

The counts come from running one forward pass with hooks, so any input resolution works.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Iterable, Optional, Union

import torch
from torch import nn

from .layers import (
    FusedInvertedBottleneck,
    InvertedResidual,
    LayerScale,
    MobileMultiQueryAttention,
    SqueezeExcite,
    UniversalInvertedBottleneck,
)

__all__ = ["LayerProfile", "Profile", "profile", "layer_kind"]


@dataclass(frozen=True)
class LayerProfile:
    name: str
    type: str
    kind: str  # conv3x3 / conv_dw / conv1x1 / fc / norm / act / pool / other: the V1 paper's Table 2 split
    output_shape: tuple[int, ...]
    params: int
    macs: int
    other_ops: int


@dataclass
class Profile:
    input_size: tuple[int, int, int]
    layers: list[LayerProfile] = field(default_factory=list)

    @property
    def params(self) -> int:
        return sum(layer.params for layer in self.layers)

    @property
    def macs(self) -> int:
        return sum(layer.macs for layer in self.layers)

    @property
    def other_ops(self) -> int:
        return sum(layer.other_ops for layer in self.layers)

    def by_kind(self) -> dict[str, dict[str, int]]:
        """Totals per layer kind (``conv1x1``, ``conv_dw``, ``conv`` (full kxk), ``fc``, ``norm``, ...)."""
        out: dict[str, dict[str, int]] = {}
        for layer in self.layers:
            row = out.setdefault(layer.kind, {"params": 0, "macs": 0, "other_ops": 0})
            row["params"] += layer.params
            row["macs"] += layer.macs
            row["other_ops"] += layer.other_ops
        return out

    def to_dict(self, per_layer: bool = True) -> dict:
        out: dict = {
            "input_size": list(self.input_size),
            "params": self.params,
            "macs": self.macs,
            "other_ops": self.other_ops,
        }
        if per_layer:
            out["layers"] = [
                {**asdict(layer), "output_shape": list(layer.output_shape)} for layer in self.layers
            ]
        return out

    def to_json(self, per_layer: bool = True) -> str:
        return json.dumps(self.to_dict(per_layer))

    def format_table(self) -> str:
        header = f"{'layer':<34} {'type':<18} {'output':<18} {'params':>11} {'MACs':>14} {'other ops':>11}"
        lines = [header, "-" * len(header)]
        for r in self.layers:
            shape = "x".join(str(d) for d in r.output_shape)
            lines.append(
                f"{r.name:<34} {r.type:<18} {shape:<18} {r.params:>11,} {r.macs:>14,} {r.other_ops:>11,}"
            )
        lines.append("-" * len(header))
        lines.append(f"{'total':<72} {self.params:>11,} {self.macs:>14,} {self.other_ops:>11,}")
        return "\n".join(lines)


_NORM = (nn.BatchNorm2d, nn.BatchNorm1d, nn.GroupNorm, nn.LayerNorm)
_ACT = (nn.ReLU, nn.ReLU6, nn.Hardswish, nn.Hardsigmoid, nn.SiLU, nn.GELU, nn.Sigmoid)
_POOL = (nn.AdaptiveAvgPool2d, nn.AvgPool2d, nn.MaxPool2d)
_RESIDUAL = (InvertedResidual, UniversalInvertedBottleneck, FusedInvertedBottleneck, MobileMultiQueryAttention)


def layer_kind(module: nn.Module) -> str:
    if isinstance(module, nn.Conv2d):
        if module.groups == module.in_channels and module.groups > 1:
            return "conv_dw"
        if module.kernel_size == (1, 1):
            return "conv1x1"
        return "conv"
    if isinstance(module, nn.Linear):
        return "fc"
    if isinstance(module, _NORM):
        return "norm"
    if isinstance(module, _ACT):
        return "act"
    if isinstance(module, _POOL):
        return "pool"
    return "other"


def _own_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters(recurse=False) if p.requires_grad)


def _counts(module: nn.Module, inputs: tuple, output: torch.Tensor) -> tuple[int, int]:
    """(macs, other_ops) for one module call, per sample."""
    out_elems = output[0].numel()
    if isinstance(module, nn.Conv2d):
        kh, kw = module.kernel_size
        return out_elems * (module.in_channels // module.groups) * kh * kw, 0
    if isinstance(module, nn.Linear):
        return out_elems // module.out_features * module.in_features * module.out_features, 0
    if isinstance(module, _POOL):
        return 0, inputs[0][0].numel()
    if isinstance(module, _ACT):
        return 0, out_elems
    if isinstance(module, nn.GroupNorm):
        return 0, out_elems  # cannot fold into the conv: statistics come from the input
    if isinstance(module, SqueezeExcite):
        return 0, inputs[0][0].numel() + out_elems  # squeeze (mean) + channel-wise scale
    if isinstance(module, LayerScale):
        return 0, out_elems
    if isinstance(module, MobileMultiQueryAttention):
        # the two matrix products (no conv counts them); softmax as other ops, then the residual add
        h, w = inputs[0].shape[-2:]
        logits = module.heads * h * w * module.num_keys(h, w)
        return module.attention_macs(h, w), logits + (out_elems if module.has_skip else 0)
    if isinstance(module, _RESIDUAL) and module.has_skip:
        return 0, out_elems  # residual add
    return 0, 0


def profile(
    model: nn.Module,
    input_size: Union[int, tuple[int, int], tuple[int, int, int]] = 224,
    device: Optional[Union[str, torch.device]] = None,
) -> Profile:
    """Count params and MACs for one image of ``input_size`` (an int, (H, W) or (C, H, W)).

    Every leaf module gets a row, plus the blocks that do element-wise work of their own (squeeze-excite
    scaling, residual add). Batch norm rows carry parameters but no MACs.
    """
    in_chans = getattr(getattr(getattr(model, "info", None), "options", None), "in_chans", 3)
    if isinstance(input_size, int):
        size: tuple[int, int, int] = (in_chans, input_size, input_size)
    elif len(input_size) == 2:
        size = (in_chans, int(input_size[0]), int(input_size[1]))
    elif len(input_size) == 3:
        size = tuple(int(s) for s in input_size)  # type: ignore[assignment]
    else:
        raise ValueError(f"input_size must be an int, (H, W) or (C, H, W); got {input_size!r}")
    if device is None:
        first = next(model.parameters(), None)
        device = first.device if first is not None else "cpu"
    result = Profile(size)
    handles = []

    def hook(name: str):
        def fn(module: nn.Module, inputs: tuple, output: torch.Tensor) -> None:
            macs, other = _counts(module, inputs, output)
            result.layers.append(
                LayerProfile(
                    name=name,
                    type=type(module).__name__,
                    kind=layer_kind(module),
                    output_shape=tuple(output.shape[1:]),
                    params=_own_params(module),
                    macs=macs,
                    other_ops=other,
                )
            )

        return fn

    for name, module in model.named_modules():
        is_leaf = next(module.children(), None) is None
        if (is_leaf and not isinstance(module, (nn.Identity, nn.Dropout, nn.Flatten))) or isinstance(
            module, (SqueezeExcite,) + _RESIDUAL
        ):
            handles.append(module.register_forward_hook(hook(name)))
    was_training = model.training
    model.eval()
    # a detector's forward resizes its input and decodes, thresholds and suppresses boxes (NMS): it is counted
    # up to the raw head outputs, its forward_raw (docs/detection.md)
    run = getattr(model, "forward_raw", model)
    try:
        with torch.no_grad():
            run(torch.zeros((1,) + size, device=device))
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    # parameters of modules that did not run (none in our models) still count toward the total
    counted = sum(layer.params for layer in result.layers)
    total = sum(p.numel() for p in model.parameters() if p.requires_grad)
    if counted != total:
        result.layers.append(LayerProfile("(not executed)", "-", "other", (), total - counted, 0, 0))
    return result


