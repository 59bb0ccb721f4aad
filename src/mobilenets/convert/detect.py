"""Which library a state dict comes from, by its tensor names: to tell a user who picked the wrong source
(``--from``) which one the file looks like.

torchvision's MobileNets name their tensors ``features.N...`` / ``classifier.N...``, timm's ``conv_stem``,
``bn1``, ``blocks.I.J...``, ours ``stem.conv...``, ``blocks.N...``. Each converter's ``forward_order`` already
recognises its library's names (None otherwise); ours are recognised by the stem's name.
"""

from __future__ import annotations

from typing import Iterable, Optional

from . import timm as _timm
from . import torchvision as _torchvision

__all__ = ["state_dict_library"]

_ORDERS = {"torchvision": _torchvision.forward_order, "timm": _timm.forward_order}


def state_dict_library(keys: Iterable[str]) -> Optional[str]:
    """"torchvision", "timm", "mobilenets" or None (names no library here uses)."""
    prefixes = sorted({key.rpartition(".")[0] for key in keys})
    if not prefixes:
        return None
    if any(p == "stem.conv" or p.endswith(".stem.conv") for p in prefixes):
        return "mobilenets"
    for library, order in _ORDERS.items():
        if order(prefixes) is not None:
            return library
    return None
