"""Segmentation data: the Fashion-MNIST scenes, Pascal VOC folders, plain images/ + masks/ folders, and joint
image/mask augmentation through torchvision's transforms v2 (docs/segmentation.md).

Every dataset yields ``(image, mask)``: before a transform, a uint8 image tensor (C, H, W) and an int64 mask
(H, W) of class indices, :data:`IGNORE_INDEX` (255) for pixels no loss should count (VOC's borders).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from ..segmentation.metrics import IGNORE_INDEX
from .base import registered_name
from .fashion_mnist import load_fashion_mnist
from .images import load_image
from .scenes import SCENE_CLASSES, FashionMNISTScenes

__all__ = [
    "IGNORE_INDEX", "VOC_CLASSES", "SEGMENTATION_DATASETS", "VOCSegmentation", "MaskFolder", "JointTransform",
    "SegmentationData", "build_segmentation_data", "read_mask", "segmentation_dataset_name",
]

VOC_CLASSES = (
    "background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
    "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train", "tvmonitor",
)
SEGMENTATION_DATASETS = ("fashion_mnist_scenes", "voc", "mask_folder")
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")


def read_mask(path: Path, num_classes: Optional[int] = None) -> torch.Tensor:
    """A mask file (a palette PNG as VOC's SegmentationClass, or 8-bit grayscale) as int64 (H, W) class indices.

    An RGB mask (colours, not indices) is refused: the colour of a class is not its index. With ``num_classes``,
    a value that is neither a class nor :data:`IGNORE_INDEX` is refused, naming the file."""
    try:
        with Image.open(path) as img:
            mode = img.mode
            values = np.array(img) if mode in ("P", "L") else None
    except OSError as exc:
        raise ValueError(f"{path}: not a readable mask image ({exc})") from None
    if values is None:
        raise ValueError(f"{path}: a {mode} image; a mask must hold class indices (a palette 'P' PNG as VOC's, "
                         "or 8-bit grayscale 'L')")
    mask = torch.from_numpy(values.astype(np.int64))
    if num_classes is not None:
        bad = torch.unique(mask[(mask >= num_classes) & (mask != IGNORE_INDEX)])
        if len(bad):
            raise ValueError(f"{path}: values {bad.tolist()[:5]} are not classes 0-{num_classes - 1} nor "
                             f"{IGNORE_INDEX} (ignored)")
    return mask


def _image_tensor(path: Path, channels: int) -> torch.Tensor:
    pixels = np.array(load_image(path, channels), dtype=np.uint8)
    pixels = pixels[..., None] if pixels.ndim == 2 else pixels
    return torch.from_numpy(pixels).permute(2, 0, 1).contiguous()


class _PairedFiles(Dataset):
    """(image file, mask file) pairs read on access; shapes must agree."""

    def __init__(self, pairs: list[tuple[Path, Path]], classes: Sequence[str], channels: int, transform: Any) -> None:
        self.pairs = pairs
        self.classes = list(classes)
        self.channels = channels
        self.transform = transform

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, index: int) -> tuple[Any, Any]:
        image_path, mask_path = self.pairs[index]
        image = _image_tensor(image_path, self.channels)
        mask = read_mask(mask_path, len(self.classes))
        if image.shape[-2:] != mask.shape:
            raise ValueError(f"{mask_path}: mask is {tuple(mask.shape)} but its image {image_path.name} is "
                             f"{tuple(image.shape[-2:])}")
        return (image, mask) if self.transform is None else self.transform(image, mask)


class VOCSegmentation(_PairedFiles):
    """Pascal VOC's layout: ``root/ImageSets/Segmentation/{split}.txt`` lists ids, ``root/JPEGImages/{id}.jpg``
    the images, ``root/SegmentationClass/{id}.png`` the palette masks (255: border, ignored). ``root`` may be
    the VOC2012 folder or one holding ``VOCdevkit/VOC2012``."""

    def __init__(self, root: str | os.PathLike, split: str = "train", classes: Sequence[str] = VOC_CLASSES,
                 transform: Any = None) -> None:
        base = Path(root)
        if not (base / "ImageSets").is_dir() and (base / "VOCdevkit" / "VOC2012").is_dir():
            base = base / "VOCdevkit" / "VOC2012"
        listing = base / "ImageSets" / "Segmentation" / f"{split}.txt"
        if not listing.is_file():
            raise FileNotFoundError(f"{listing}: no such list; a VOC root holds ImageSets/Segmentation/{split}.txt, "
                                    "JPEGImages/ and SegmentationClass/")
        ids = [line.strip() for line in listing.read_text().splitlines() if line.strip()]
        pairs = [(base / "JPEGImages" / f"{i}.jpg", base / "SegmentationClass" / f"{i}.png") for i in ids]
        missing = [str(p) for pair in pairs for p in pair if not p.is_file()]
        if missing:
            raise FileNotFoundError(f"{listing}: {len(missing)} listed files are missing, first {missing[0]}")
        super().__init__(pairs, classes, 3, transform)


class MaskFolder(_PairedFiles):
    """``root/images/NAME.(jpg|png|...)`` with ``root/masks/NAME.png`` (class indices, 255 ignored) for each; an
    image without a mask, or a mask without an image, is refused. ``classes`` names the mask values."""

    def __init__(self, root: str | os.PathLike, classes: Sequence[str], channels: int = 3,
                 transform: Any = None) -> None:
        root = Path(root)
        images_dir, masks_dir = root / "images", root / "masks"
        for folder in (images_dir, masks_dir):
            if not folder.is_dir():
                raise FileNotFoundError(f"{folder}: no such folder; a mask folder holds images/ and masks/")
        images = {p.stem: p for p in sorted(images_dir.iterdir()) if p.suffix.lower() in IMAGE_SUFFIXES}
        masks = {p.stem: p for p in sorted(masks_dir.iterdir()) if p.suffix.lower() == ".png"}
        for what, names in (("images without a mask", images.keys() - masks.keys()),
                            ("masks without an image", masks.keys() - images.keys())):
            if names:
                raise ValueError(f"{root}: {len(names)} {what}, e.g. {sorted(names)[:3]}")
        if not images:
            raise ValueError(f"{images_dir}: no images ({', '.join(IMAGE_SUFFIXES)})")
        super().__init__([(images[k], masks[k]) for k in sorted(images)], classes, channels, transform)


class JointTransform:
    """One torchvision v2 pipeline applied to an image and its mask together (``tv_tensors.Image`` and
    ``tv_tensors.Mask``: geometry is shared, masks resized with nearest neighbours and padded with
    :data:`IGNORE_INDEX`, colour changes and normalisation touch the image only). Returns a float image
    (C, H, W) and an int64 mask (H, W).

    ``train=True``: random resized crop to ``size`` (``scale`` of the area), horizontal flip; else a resize of
    the shorter side to ``size`` (no crop: predictions cover the whole image)."""

    def __init__(self, size: int | tuple[int, int], mean: Sequence[float], std: Sequence[float], train: bool,
                 scale: tuple[float, float] = (0.25, 1.0)) -> None:
        from torchvision import tv_tensors
        from torchvision.transforms import v2

        self._tv_tensors = tv_tensors
        geometry: list[Any] = (
            [v2.RandomResizedCrop(size, scale=scale, antialias=True), v2.RandomHorizontalFlip()] if train
            else [v2.Resize(size, antialias=True)]
        )
        self.pipeline = v2.Compose([
            *geometry,
            v2.ToDtype({tv_tensors.Image: torch.float32, "others": None}, scale=True),
            v2.Normalize(list(mean), list(std)),
        ])

    def __call__(self, image: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        tv = self._tv_tensors
        out_image, out_mask = self.pipeline(tv.Image(image), tv.Mask(mask))
        return out_image.as_subclass(torch.Tensor), out_mask.as_subclass(torch.Tensor).long()


@dataclass
class SegmentationData:
    """The splits of a segmentation dataset, its class names (index = mask value) and its channels."""

    name: str
    train: Dataset
    test: Dataset
    classes: list[str]
    in_chans: int


def segmentation_dataset_name(name: str) -> str:
    """The registered name of a segmentation dataset; case, '-' and '_' do not matter."""
    return registered_name(name, SEGMENTATION_DATASETS, "segmentation dataset")


def build_segmentation_data(
    name: str,
    data_dir: Optional[str | os.PathLike] = None,
    *,
    classes: Optional[Sequence[str]] = None,
    train_scenes: int = 10000,
    test_scenes: int = 1000,
    seed: int = 0,
    size: int = 128,
) -> SegmentationData:
    """Splits without transforms (set ``.transform`` to a :class:`JointTransform`).

    ``fashion_mnist_scenes``: ``train_scenes`` from the training images and ``test_scenes`` from the test
    images, ``size`` px, seeded (test scenes by ``seed + 1``). ``voc``: ``data_dir`` is a VOC root (train.txt and
    val.txt). ``mask_folder``: ``data_dir/train`` and ``data_dir/val``, each with images/ and masks/; ``classes``
    is required (the names of mask values 0, 1, ...)."""
    name = segmentation_dataset_name(name)
    if name == "fashion_mnist_scenes":
        train, test, _ = load_fashion_mnist(data_dir, allow_download=False)
        return SegmentationData(name, FashionMNISTScenes(train, train_scenes, seed, size),
                                FashionMNISTScenes(test, test_scenes, seed + 1, size), list(SCENE_CLASSES), 1)
    if data_dir is None:
        raise ValueError(f"dataset {name} needs data_dir")
    if name == "voc":
        names = list(classes or VOC_CLASSES)
        return SegmentationData(name, VOCSegmentation(data_dir, "train", names),
                                VOCSegmentation(data_dir, "val", names), names, 3)
    if not classes:
        raise ValueError("mask_folder needs classes: the names of mask values 0, 1, ... (0 is usually background)")
    root = Path(data_dir)
    return SegmentationData(name, MaskFolder(root / "train", classes), MaskFolder(root / "val", classes),
                            list(classes), 3)
