"""Whose tensor names a state dict carries (torchvision's, timm's or ours), and the forward order of
torchvision's and timm's names, from the names alone: no tensor is read.

Below the checkpoint reader, which tells a user what a file that is not a checkpoint holds, and the converters,
which map a source layer by layer in its forward order (safetensors files sort their keys by name, which is not
the modules' order). torchvision's MobileNets name their tensors ``features.N...`` / ``classifier.N...`` (its
segmentation models ``backbone.N...``, its SSDLite ``features``, ``extra`` and the two heads), timm's
``conv_stem``, ``bn1``, ``blocks.I.J...``, ours ``stem.conv...``, ``stages.I.J...``.
"""

from __future__ import annotations

from typing import Iterable, Mapping, Optional

__all__ = ["natural_key", "strip_wrappers", "torchvision_order", "timm_order", "state_dict_library"]


def natural_key(prefix: str) -> tuple:
    """"blocks.10.0" after "blocks.9.0": numbers compare as numbers."""
    return tuple((0, int(p), "") if p.isdigit() else (1, 0, p) for p in prefix.split("."))


def strip_wrappers(prefixes: list[str], top: Mapping[str, int]) -> Optional[list[list[str]]]:
    """Split prefixes into parts starting at the library's top-level module (dropping wrappers such as
    ``module.`` from DataParallel); None when a prefix has no known top-level module."""
    out = []
    for prefix in prefixes:
        parts = prefix.split(".")
        start = next((i for i, part in enumerate(parts) if part in top), None)
        if start is None:
            return None
        out.append(parts[start:])
    return out


# segmentation models call the features "backbone" and add "aux_classifier"
_TV_TOP = {"features": 0, "backbone": 0, "classifier": 1, "aux_classifier": 2}
# LRASPPHead registers its layers in this order, which sorting by name does not give
_LRASPP_ORDER = {"cbr": 0, "scale": 1, "low_classifier": 2, "high_classifier": 3}
# SSD's: the backbone's features, its extra layers, then the classification and regression heads
_SSD_TOP = {"features": 0, "extra": 1, "classification_head": 2, "regression_head": 3}


def torchvision_order(prefixes: list[str]) -> Optional[list[str]]:
    """torchvision's module order: ``features`` / ``backbone`` (numbered, ``fc1`` before ``fc2``), then
    ``classifier``, then ``aux_classifier``; a detector's as ``_SSD_TOP`` says."""
    detector = strip_wrappers(prefixes, _SSD_TOP)
    if detector is not None and any(parts[0] == "regression_head" for parts in detector):
        keyed_ssd = [((_SSD_TOP[parts[0]],) + natural_key(".".join(parts[1:])), prefix)
                     for parts, prefix in zip(detector, prefixes)]
        return [prefix for _, prefix in sorted(keyed_ssd)]
    split = strip_wrappers(prefixes, _TV_TOP)
    if split is None:
        return None

    def key(parts: list[str]) -> tuple:
        head = (_LRASPP_ORDER.get(parts[1], 0),) if parts[0] == "classifier" and len(parts) > 1 else ()
        return (_TV_TOP[parts[0]],) + head + natural_key(".".join(parts[1:]))

    keyed = [(key(parts), prefix) for parts, prefix in zip(split, prefixes)]
    return [prefix for _, prefix in sorted(keyed)]


# timm's module order (registration order) by attribute name; a block's kind decides where bn1/bn2 sit
_TIMM_TOP = {"conv_stem": 0, "bn1": 1, "blocks": 2, "conv_head": 3, "bn2": 4, "norm_head": 5, "classifier": 6}
_IN_BLOCK = {
    "InvertedResidual": {"conv_pw": 0, "bn1": 1, "conv_dw": 2, "bn2": 3, "se": 4, "conv_pwl": 5, "bn3": 6},
    "DepthwiseSeparableConv": {"conv_dw": 0, "bn1": 1, "se": 2, "conv_pw": 3, "bn2": 4},
    "ConvBnAct": {"conv": 0, "bn1": 1},
    "EdgeResidual": {"conv_exp": 0, "bn1": 1, "se": 2, "conv_pwl": 3, "bn2": 4},
    "UniversalInvertedResidual": {
        "dw_start": 0, "pw_exp": 1, "dw_mid": 2, "se": 3, "pw_proj": 4, "dw_end": 5, "layer_scale": 6,
    },
    "MobileAttention": {"norm": 0, "attn": 1, "layer_scale": 2},
}
# deeper levels: a squeeze-excite's two convs; a UIB part's conv and norm (timm ConvNormAct); an attention's
# query / key / value / output paths and, in each, the downsampling conv, its norm and the projection
_INNER = {
    "conv_reduce": 0, "conv_expand": 1,
    "conv": 0, "bn": 1,
    "query": 0, "key": 1, "value": 2, "output": 3, "down_conv": 0, "norm": 1, "proj": 2,
}


def _block_kind(children: set[str]) -> Optional[str]:
    if "attn" in children:
        return "MobileAttention"
    if "pw_exp" in children:
        return "UniversalInvertedResidual"
    if "conv_exp" in children:
        return "EdgeResidual"
    if "conv_pwl" in children:
        return "InvertedResidual"
    if "conv_dw" in children:
        return "DepthwiseSeparableConv"
    return "ConvBnAct" if "conv" in children else None


def timm_order(prefixes: list[str]) -> Optional[list[str]]:
    """timm's forward order for prefixes in any order (safetensors files sort keys alphabetically)."""
    stripped = strip_wrappers(prefixes, _TIMM_TOP)
    if stripped is None:
        return None
    split = list(zip(stripped, prefixes))
    children: dict[tuple[str, ...], set[str]] = {}
    for parts, _ in split:
        if parts[0] == "blocks" and len(parts) >= 4:
            children.setdefault(tuple(parts[1:3]), set()).add(parts[3])
    keyed = []
    for parts, prefix in split:
        if parts[0] != "blocks":
            keyed.append(((_TIMM_TOP[parts[0]],), prefix))
            continue
        if len(parts) < 4 or not (parts[1].isdigit() and parts[2].isdigit()):
            return None
        ranks = _IN_BLOCK.get(_block_kind(children[tuple(parts[1:3])]) or "", {})
        inner = tuple(_INNER.get(part, -1) for part in parts[4:])
        if parts[3] not in ranks or any(rank < 0 for rank in inner):
            return None
        keyed.append(((_TIMM_TOP["blocks"], int(parts[1]), int(parts[2]), ranks[parts[3]]) + inner, prefix))
    return [prefix for _, prefix in sorted(keyed)]


def state_dict_library(keys: Iterable[str]) -> Optional[str]:
    """"torchvision", "timm", "mobilenets" or None (names no library here uses)."""
    prefixes = sorted({key.rpartition(".")[0] for key in keys})
    if not prefixes:
        return None
    if any(p == "stem.conv" or p.endswith(".stem.conv") for p in prefixes):
        return "mobilenets"
    for library, order in (("torchvision", torchvision_order), ("timm", timm_order)):
        if order(prefixes) is not None:
            return library
    return None
