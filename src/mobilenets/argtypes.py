"""argparse value types shared by every command, so that "an integer >= 1" is checked and worded once."""

from __future__ import annotations

import argparse
import math
from typing import Callable, TypeVar

__all__ = ["bounded", "positive_int", "positive_float", "non_negative_float", "resolution", "resolution_hw"]

N = TypeVar("N", int, float)


def bounded(kind: type[N], minimum: N, inclusive: bool = True, what: str = "") -> Callable[[str], N]:
    """An argparse type parsing ``kind`` and refusing values below ``minimum`` (or equal, if not inclusive)."""
    noun = what or ("an integer" if kind is int else "a number")

    def parse(text: str) -> N:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {noun}, got {text!r}") from None
        # float() takes "nan" and "inf"; no option of ours means anything by them, and nan passes every bound check
        if kind is float and not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"expected a finite number, got {text!r}")
        if value < minimum or (not inclusive and value == minimum):
            raise argparse.ArgumentTypeError(f"must be {'>=' if inclusive else '>'} {minimum}, got {text}")
        return value

    parse.__name__ = f"{kind.__name__}>={minimum}" if inclusive else f"{kind.__name__}>{minimum}"
    return parse


positive_int = bounded(int, 1)
positive_float = bounded(float, 0.0, inclusive=False)
non_negative_float = bounded(float, 0.0)
# 28 px, the smallest images of the datasets, is the floor of --resolution (models with small_input take 16 px,
# for training's --progressive-sizes; without it they refuse inputs under 32 px with their own message)
resolution = bounded(int, 28, what="an integer number of pixels")


def resolution_hw(text: str) -> tuple[int, int]:
    """``"224"`` (square) or ``"HxW"`` (``"1024x2048"``: height first, as the segmentation papers write it), each
    side checked as :data:`resolution` checks it."""
    parts = text.lower().split("x")
    if len(parts) > 2 or not all(parts):
        raise argparse.ArgumentTypeError(f"expected N or HxW (e.g. 224 or 1024x2048), got {text!r}")
    sides = [resolution(part) for part in parts]
    return (sides[0], sides[-1])
