"""Structural weight mapping shared by every converter.

A source is read into *layers* (a conv, a batch norm, a fully connected layer or a layer scale, with its tensors
already in PyTorch layout) held in one or more *queues*, each in the source network's forward order. The target
model's ``Conv2d`` / ``BatchNorm2d`` / ``Linear`` / ``LayerScale`` modules are walked in registration order
(which is forward order for every mobilenets model) and each one takes the next layer of its queue; kinds and
shapes must agree, and every source layer must be used. No key tables: a renamed or reordered source only has
to keep its forward order, and a wrong architecture or width shows up as the first layer whose shape differs.

One queue is enough for PyTorch state dicts, whose order is the modules' registration order. Keras 3's
``.weights.h5`` numbers layers per class (``conv2d_3``, ``batch_normalization_7``), so the Keras reader
keeps one queue per class and the walk picks the queue by the target module's kind.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Mapping, Optional

import torch
from torch import nn

from ..layers import LayerScale

__all__ = [
    "SourceLayer",
    "ConversionError",
    "Queues",
    "torch_layers",
    "target_layers",
    "copy_into",
    "count",
]

BN_TENSORS = ("weight", "bias", "running_mean", "running_var")


class ConversionError(ValueError):
    """A source that cannot be converted; the message names the file (or state dict) and the problem."""


@dataclass
class SourceLayer:
    """One layer of the source: ``kind`` is "conv", "bn", "linear" or "scale" (a layer scale's ``gamma``);
    tensors use PyTorch names and layout."""

    name: str
    kind: str
    tensors: dict[str, torch.Tensor] = field(default_factory=dict)

    def describe(self) -> str:
        weight = self.tensors.get("weight", self.tensors.get("gamma"))
        shape = tuple(weight.shape) if weight is not None else ()
        return f"{self.name} ({self.kind} {shape})"


# queue name -> layers in forward order
Queues = dict[str, list[SourceLayer]]
# picks the queue a target module reads from, given the queues (some sources lack a queue, e.g. Keras Dense)
QueueFor = Callable[[nn.Module, Queues], str]


def torch_layers(
    state_dict: Mapping[str, torch.Tensor],
    label: str,
    order: Optional[Callable[[list[str]], Optional[list[str]]]] = None,
) -> list[SourceLayer]:
    """Group a PyTorch state dict by module prefix, in module registration order.

    ``order`` puts the prefixes in the source library's forward order (returning None when it does not
    recognise the names): safetensors files store keys sorted alphabetically, which puts ``bn1`` before
    ``conv_dw`` and ``classifier`` before ``features``. Without it, the key order is kept.
    """
    groups: dict[str, dict[str, torch.Tensor]] = {}
    for key, value in state_dict.items():
        if not isinstance(value, torch.Tensor):
            raise ConversionError(f"{label}: entry {key!r} is a {type(value).__name__}, not a tensor")
        prefix, _, leaf = key.rpartition(".")
        if leaf == "num_batches_tracked":
            continue
        groups.setdefault(prefix, {})[leaf] = value
    prefixes = list(groups)
    ordered = order(prefixes) if order is not None else None
    layers = []
    for prefix in ordered if ordered is not None else prefixes:
        tensors = groups[prefix]
        weight = tensors.get("weight")
        if "running_mean" in tensors:
            kind = "bn"
        elif weight is not None and weight.ndim == 4:
            kind = "conv"
        elif weight is not None and weight.ndim == 2:
            kind = "linear"
        elif set(tensors) == {"gamma"} and tensors["gamma"].ndim == 1:
            kind = "scale"
        else:
            shapes = {k: tuple(v.shape) for k, v in tensors.items()}
            raise ConversionError(
                f"{label}: {prefix or '<root>'} {shapes} is neither a conv, a batch norm nor a linear layer"
            )
        layers.append(SourceLayer(prefix, kind, tensors))
    return layers


def target_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """The modules that hold weights, in forward order."""
    kinds = (nn.Conv2d, nn.BatchNorm2d, nn.Linear, LayerScale)
    return [(name, m) for name, m in model.named_modules() if isinstance(m, kinds)]


def count(queues: Queues) -> int:
    return sum(len(q) for q in queues.values())


def _expected(module: nn.Module) -> dict[str, tuple[int, ...]]:
    if isinstance(module, LayerScale):
        return {"gamma": tuple(module.gamma.shape)}
    if isinstance(module, nn.BatchNorm2d):
        return {k: tuple(getattr(module, k).shape) for k in BN_TENSORS}
    out = {"weight": tuple(module.weight.shape)}
    if module.bias is not None:
        out["bias"] = tuple(module.bias.shape)
    return out


def _fit(layer: SourceLayer, module: nn.Module) -> Optional[dict[str, torch.Tensor]]:
    """The source tensors reshaped for ``module``, or None when kind or shapes disagree."""
    tensors = dict(layer.tensors)
    if isinstance(module, LayerScale):
        if layer.kind != "scale":
            return None
    elif isinstance(module, nn.BatchNorm2d):
        if layer.kind != "bn":
            return None
    elif isinstance(module, nn.Conv2d):
        if layer.kind != "conv":
            return None
    elif isinstance(module, nn.Linear):
        weight = tensors.get("weight")
        # a 1x1 conv applied to a pooled 1x1 map is a fully connected layer (timm conv_head, Keras Logits)
        if layer.kind == "conv" and weight is not None and weight.shape[2:] == (1, 1):
            tensors["weight"] = weight.flatten(1)
        elif layer.kind != "linear":
            return None
    expected = _expected(module)
    if set(expected) != set(tensors):
        return None
    if any(tuple(tensors[k].shape) != shape for k, shape in expected.items()):
        return None
    return tensors


def copy_into(model: nn.Module, queues: Queues, queue_for: QueueFor, label: str, what: str) -> int:
    """Fill every weight of ``model`` from ``queues``; returns the number of tensors copied.

    ``what`` names the target in errors (e.g. "mobilenet_v2 width_mult=0.5").
    """
    cursor = {name: 0 for name in queues}
    copied = 0
    with torch.no_grad():
        for position, (name, module) in enumerate(target_layers(model)):
            qname = queue_for(module, queues)
            queue = queues.get(qname, [])
            idx = cursor.get(qname, 0)
            if idx >= len(queue):
                raise ConversionError(
                    f"{label}: the source ends before {what} does (no layer left for {name}, "
                    f"{_describe_module(module)}); it is not this architecture/width"
                )
            layer = queue[idx]
            cursor[qname] = idx + 1
            tensors = _fit(layer, module)
            if tensors is None:
                raise ConversionError(
                    f"{label}: source layer {layer.describe()} does not fit {name} {_describe_module(module)} "
                    f"of {what} (target layer {position}); check the architecture and width multiplier"
                )
            for key, value in tensors.items():
                getattr(module, key).copy_(value.to(getattr(module, key).dtype))
                copied += 1
    left = [layer for qname, queue in queues.items() for layer in queue[cursor.get(qname, 0):]]
    if left:
        raise ConversionError(
            f"{label}: {len(left)} source layer(s) left over after filling {what}, first {left[0].describe()}; "
            "it is not this architecture/width"
        )
    return copied


def _describe_module(module: nn.Module) -> str:
    if isinstance(module, LayerScale):
        return f"(scale {tuple(module.gamma.shape)})"
    kind = "bn" if isinstance(module, nn.BatchNorm2d) else "conv" if isinstance(module, nn.Conv2d) else "linear"
    return f"({kind} {tuple(module.weight.shape)})"
