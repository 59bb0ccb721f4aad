"""The user's own images: ``root/train/<class>/*`` and ``root/val/<class>/*`` (torchvision ImageFolder layout).

Every file is decoded once up front with :func:`~mobilenets.data.images.load_image`, the loader training and
prediction use; files it cannot decode, files of other types and files outside a class folder are skipped,
counted and reported instead of crashing a training run hours in. A class folder left without images is
refused: it would become a class the model can never learn or be measured on.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path
from typing import Optional

from PIL import Image

from .base import DatasetNotFoundError
from .images import UnreadableImageError, describe_error, load_image

__all__ = ["scan_image_folder", "find_splits", "describe_skipped"]

# the reasons of the files skipped for what they are, not for their content
_OUTSIDE = "not inside a class folder"
_UNSUPPORTED = "unsupported file type"


def _check_image(path: str) -> Optional[str]:
    """Why ``path`` cannot be trained on, or None."""
    try:
        # verify() checks the container (PNG chunk CRCs) that decoding alone may not
        with Image.open(path) as image:
            image.verify()
    except Exception as exc:  # Pillow raises many types (OSError, SyntaxError, DecompressionBombError, ...)
        return describe_error(exc)
    try:
        load_image(path)
    except UnreadableImageError as exc:
        return exc.reason
    return None


def scan_image_folder(root: Path, class_names: Optional[list[str]] = None):
    """A torchvision ImageFolder over ``root`` without unusable files, and the list of (path, reason) skipped."""
    from torchvision.datasets import ImageFolder
    from torchvision.datasets.folder import IMG_EXTENSIONS

    if not root.is_dir():
        raise DatasetNotFoundError(f"{root}: no such folder; expected class sub-folders of images")
    accepted = ", ".join(IMG_EXTENSIONS)
    skipped: list[tuple[str, str]] = [
        (str(path), _OUTSIDE) for path in sorted(root.iterdir()) if not path.is_dir()
    ]

    def valid(path: str) -> bool:
        if not path.lower().endswith(IMG_EXTENSIONS):
            kind = os.path.splitext(path)[1] or "without an extension"
            skipped.append((path, f"{_UNSUPPORTED} ({kind}); accepted: {accepted}"))
            return False
        problem = _check_image(path)
        if problem is not None:
            skipped.append((path, problem))
            return False
        return True

    try:
        dataset = ImageFolder(
            str(root), loader=functools.partial(load_image, channels=3), is_valid_file=valid, allow_empty=True
        )
    except FileNotFoundError as exc:
        raise DatasetNotFoundError(f"{root}: {exc}") from None
    if class_names is not None and dataset.classes != class_names:
        raise DatasetNotFoundError(
            f"{root}: class folders {dataset.classes} differ from the training classes {class_names}"
        )
    if len(dataset) == 0:
        raise DatasetNotFoundError(f"{root}: no readable images (extensions {accepted}; {len(skipped)} skipped)")
    used = set(dataset.targets)
    empty = [name for index, name in enumerate(dataset.classes) if index not in used]
    if empty:
        in_empty = sum(Path(p).relative_to(root).parts[0] in empty for p, _ in skipped)
        raise DatasetNotFoundError(
            f"{root}: class folder(s) {', '.join(empty)} hold no readable images ({in_empty} file(s) skipped there); "
            f"every class needs at least one image ({accepted}): add images or remove the folder"
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


def describe_skipped(skipped: list[tuple[str, str]]) -> str:
    """What :func:`scan_image_folder` skipped, counted by why (images it could not decode, files of other types,
    files outside a class folder), and the first one: "skipped 1 unreadable image(s), 2 file(s) of another type;
    first: PATH (REASON)"."""
    outside = sum(reason == _OUTSIDE for _, reason in skipped)
    unsupported = sum(reason.startswith(_UNSUPPORTED) for _, reason in skipped)
    counts = ((len(skipped) - outside - unsupported, "unreadable image(s)"), (unsupported, "file(s) of another type"),
              (outside, "file(s) outside a class folder"))
    first_path, first_reason = skipped[0]
    return (f"skipped {', '.join(f'{n} {what}' for n, what in counts if n)}; "
            f"first: {first_path} ({first_reason})")
