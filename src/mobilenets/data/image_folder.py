"""The user's own images: ``root/train/<class>/*`` and ``root/val/<class>/*`` (torchvision ImageFolder layout).

Every file is opened and verified once up front; unreadable ones are skipped, counted and reported instead
of crashing a training run hours in.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

from PIL import Image

from .base import DatasetNotFoundError

__all__ = ["scan_image_folder", "load_rgb"]


def load_rgb(path: str) -> Image.Image:
    with open(path, "rb") as fh:
        image = Image.open(fh)
        return image.convert("RGB")


def _check_image(path: str) -> Optional[str]:
    try:
        with Image.open(path) as image:
            image.verify()
        # verify() only checks the container; decoding catches truncated pixel data
        with Image.open(path) as image:
            image.load()
    except Exception as exc:  # PIL raises many types (OSError, SyntaxError, DecompressionBombError...)
        return f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
    return None


def scan_image_folder(root: Path, class_names: Optional[list[str]] = None):
    """A torchvision ImageFolder over ``root`` without unreadable files, and the list of (path, reason) skipped."""
    from torchvision.datasets import ImageFolder
    from torchvision.datasets.folder import IMG_EXTENSIONS

    if not root.is_dir():
        raise DatasetNotFoundError(f"{root}: no such folder; expected class sub-folders of images")
    skipped: list[tuple[str, str]] = []

    def valid(path: str) -> bool:
        if not path.lower().endswith(IMG_EXTENSIONS):
            return False
        problem = _check_image(path)
        if problem is not None:
            skipped.append((path, problem))
            return False
        return True

    try:
        dataset = ImageFolder(str(root), loader=load_rgb, is_valid_file=valid, allow_empty=True)
    except FileNotFoundError as exc:
        raise DatasetNotFoundError(f"{root}: {exc}") from None
    if class_names is not None and dataset.classes != class_names:
        raise DatasetNotFoundError(
            f"{root}: class folders {dataset.classes} differ from the training classes {class_names}"
        )
    if len(dataset) == 0:
        raise DatasetNotFoundError(
            f"{root}: no readable images (extensions {', '.join(IMG_EXTENSIONS)}; {len(skipped)} unreadable)"
        )
    return dataset, skipped


def find_splits(root: Path) -> tuple[Path, Optional[Path]]:
    train = root / "train"
    if not train.is_dir():
        raise DatasetNotFoundError(
            f"{root}: expected an ImageFolder tree with train/<class>/ (and val/<class>/) sub-folders"
        )
    val = root / "val"
    return train, val if val.is_dir() else None

