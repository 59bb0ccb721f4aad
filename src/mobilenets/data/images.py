"""Image files to PIL images, decoded one way for training, evaluation and prediction.

A model sees the same pixels for a file whether an ImageFolder tree feeds it during training or
``mobilenets predict`` is given it afterwards: both call :func:`load_image`. Pillow's plain
``convert("RGB")`` is not enough on its own: it clips 16-bit values to 255 (a 16-bit photo becomes white),
truncates floats in [0, 1] to 0 (black), drops alpha (transparent pixels take whatever colour they hide) and
ignores the EXIF orientation a camera records instead of rotating its pixels.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

__all__ = ["CHANNELS", "UnreadableImageError", "load_image", "convert_image"]

CHANNELS = (1, 3)  # 1: luminance (Fashion-MNIST-style models), 3: RGB
_ALPHA_MODES = ("RGBA", "RGBa", "LA", "La", "PA")
_SIXTEEN_BIT = 65535.0


class UnreadableImageError(ValueError):
    """A file that cannot be decoded into an image; ``path`` is the file as given, ``reason`` what went wrong."""

    def __init__(self, path: str | os.PathLike, reason: str) -> None:
        super().__init__(f"{path}: not a readable image ({reason})")
        self.path = path
        self.reason = reason


def _check_channels(channels: int) -> None:
    if channels not in CHANNELS:
        raise ValueError(f"channels must be 1 (grayscale) or 3 (RGB), got {channels!r}")


def _to_8bit(image: Image.Image) -> Image.Image:
    """Integer ("I;16*", "I") and float ("F") grayscale to 8-bit "L" by a fixed range, the same for every image
    of a dataset (scaling each image by its own maximum would change its brightness relative to the others)."""
    array = np.asarray(image, dtype=np.float64)
    # "I" holds what Pillow decodes 16-bit files (PGM, some TIFFs) into, so it gets the 16-bit range too
    scale = 1.0 if image.mode == "F" else _SIXTEEN_BIT
    scaled = np.clip(array / scale * 255.0 + 0.5, 0, 255).astype(np.uint8)
    return Image.fromarray(scaled, mode="L")


def convert_image(image: Image.Image, channels: int = 3) -> Image.Image:
    """``image`` (any Pillow mode) as 8-bit "L" (``channels=1``) or "RGB" (``channels=3``).

    16-bit ("I;16", "I;16B", ...) and 32-bit integer ("I") images are taken to span 0-65535, float ("F")
    images 0.0-1.0; values outside are clipped. Palettes become RGB(A), a palette or grayscale/RGB image
    with a transparent colour becomes RGBA, and alpha is composited onto white (a transparent background
    is not black). CMYK and YCbCr go through Pillow's conversion to RGB; RGB to "L" uses ITU-R 601-2 luma.
    """
    _check_channels(channels)
    if image.mode.startswith("I") or image.mode == "F":
        image = _to_8bit(image)
    if image.mode == "P" or "transparency" in image.info:
        image = image.convert("RGBA")
    if image.mode in _ALPHA_MODES:
        background = Image.new("RGBA", image.size, (255, 255, 255, 255))
        image = Image.alpha_composite(background, image.convert("RGBA"))
    return image.convert("L" if channels == 1 else "RGB")


def load_image(path: str | os.PathLike, channels: int = 3) -> Image.Image:
    """The image in ``path`` as a PIL image in "RGB" (``channels=3``) or "L" (``channels=1``).

    The EXIF orientation is applied (a portrait photo stays upright), then the pixels are converted by
    :func:`convert_image` (16-bit and float ranges, palettes, transparency, CMYK). Multi-frame files (GIF,
    multi-page TIFF) give their first frame. Raises ``FileNotFoundError`` for a missing file and
    :class:`UnreadableImageError` (a ``ValueError``) naming ``path`` for anything Pillow cannot decode,
    including images over Pillow's decompression-bomb limit (``PIL.Image.MAX_IMAGE_PIXELS``).
    """
    _check_channels(channels)
    file = Path(path)
    if not file.is_file():
        raise FileNotFoundError(f"{path}: no such image file" if not file.exists() else f"{path}: not a file")
    try:
        with Image.open(file) as image:
            image.load()
            upright = ImageOps.exif_transpose(image)  # a loaded copy, valid after the file closes
        return convert_image(upright, channels)
    except Exception as exc:  # Pillow raises many types (OSError, SyntaxError, DecompressionBombError, ...)
        raise UnreadableImageError(path, describe_error(exc)) from exc


def describe_error(exc: BaseException) -> str:
    """``exc`` in one line: its type and the first line of its message."""
    text = str(exc).splitlines()[0] if str(exc) else ""
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
