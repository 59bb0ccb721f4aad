"""Scenes of Fashion-MNIST garments: real images placed on a canvas, with a segmentation mask and boxes.

Each scene (deterministic in ``(seed, index)``) draws 1 to 4 garments (``objects``) of random scale and
position on a black canvas of ``size`` x ``size`` pixels, in order: a later garment covers an earlier one where
its pixels are *ink* (above ``ink_threshold`` after resizing) and leaves it visible elsewhere. The mask holds
0 for background and ``1 + label`` (1 to 10, :data:`SCENE_CLASSES`) where a garment's visible ink is; the boxes
are the tight (x0, y0, x1, y1) boxes, exclusive ends, of each garment's visible pixels (a garment hidden entirely
has none and is left out), for detection. Train scenes use the training images, test scenes the test images.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from .base import ArrayDataset, held_out
from .fashion_mnist import FASHION_MNIST_CLASSES, load_fashion_mnist

__all__ = ["SCENE_CLASSES", "SCENE_COUNTS", "SCENE_SIZE", "Scene", "FashionMNISTScenes", "scene_splits"]

SCENE_CLASSES = ("background",) + FASHION_MNIST_CLASSES
SCENE_SIZE = 128  # the canvas side of the registered dataset's scenes
SCENE_COUNTS = {"train": 10000, "val": 1000, "test": 1000}  # its scenes per split
_SCENE_SEED = 0  # the dataset's seed: the scenes are the same for every run (and for both tasks)


@dataclass(frozen=True)
class Scene:
    """One scene: ``image`` uint8 (1, H, W), ``mask`` int64 (H, W), ``boxes`` int64 (K, 4) as (x0, y0, x1, y1)
    with exclusive ends, ``labels`` int64 (K,) in 1..10, in drawing order."""

    image: torch.Tensor
    mask: torch.Tensor
    boxes: torch.Tensor
    labels: torch.Tensor


def _check_range(name: str, value: Any, low: float, high: float, kind: type) -> tuple:
    if (not isinstance(value, (tuple, list)) or len(value) != 2
            or not all(isinstance(v, kind) and not isinstance(v, bool) for v in value)
            or not low <= value[0] <= value[1] <= high):
        raise ValueError(f"{name} must be a pair (min, max) of {kind.__name__}s with {low} <= min <= max <= {high}, "
                         f"got {value!r}")
    return tuple(value)


class FashionMNISTScenes(Dataset):
    """``length`` scenes built from the garments of ``source`` (a Fashion-MNIST split, :class:`ArrayDataset`).

    ``scale``: a garment's side is ``28 * s`` px for ``s`` drawn uniformly in the range, at most ``size``.
    ``transform(image, mask) -> (image, mask)`` (:class:`~mobilenets.data.segmentation.JointTransform`) is
    applied by ``__getitem__``; :meth:`scene` gives the raw scene with its boxes.
    """

    def __init__(
        self,
        source: ArrayDataset,
        length: int,
        seed: int = 0,
        size: int = 128,
        objects: tuple[int, int] = (1, 4),
        scale: tuple[float, float] = (1.0, 3.0),
        ink_threshold: int = 32,
        transform: Optional[Callable[[torch.Tensor, torch.Tensor], tuple[Any, Any]]] = None,
    ) -> None:
        if not isinstance(length, int) or isinstance(length, bool) or length < 1:
            raise ValueError(f"length must be an integer >= 1, got {length!r}")
        if not isinstance(size, int) or isinstance(size, bool) or size < 28:
            raise ValueError(f"size must be an integer >= 28 (a garment is 28 px), got {size!r}")
        self.objects = _check_range("objects", objects, 1, 64, int)
        self.scale = _check_range("scale", scale, 0.25, size / 28, float)
        if not isinstance(ink_threshold, int) or not 0 <= ink_threshold < 255:
            raise ValueError(f"ink_threshold must be an integer in [0, 255), got {ink_threshold!r}")
        if source.images.shape[1:] != (1, 28, 28):
            raise ValueError(f"source must hold Fashion-MNIST images (N, 1, 28, 28), got {tuple(source.images.shape)}")
        self.source = source
        self.length = length
        self.seed = int(seed)
        self.size = size
        self.ink_threshold = ink_threshold
        self.transform = transform
        self.classes = list(SCENE_CLASSES)

    def __len__(self) -> int:
        return self.length

    def scene(self, index: int) -> Scene:
        if not 0 <= index < self.length:
            raise IndexError(f"scene {index} out of range (0 to {self.length - 1})")
        rng = np.random.default_rng([self.seed, index])
        size = self.size
        image = torch.zeros(size, size, dtype=torch.uint8)
        mask = torch.zeros(size, size, dtype=torch.int64)
        instance = torch.full((size, size), -1, dtype=torch.int64)
        count = int(rng.integers(self.objects[0], self.objects[1] + 1))
        labels = []
        for k in range(count):
            pick = int(rng.integers(len(self.source)))
            side = min(size, max(1, round(28 * float(rng.uniform(*self.scale)))))
            top, left = (int(rng.integers(size - side + 1)) for _ in range(2))
            garment = self.source.images[pick].float()[None]
            garment = F.interpolate(garment, size=(side, side), mode="bilinear", antialias=True, align_corners=False)
            garment = garment[0, 0].round().clamp(0, 255).to(torch.uint8)
            ink = garment > self.ink_threshold
            window = (slice(top, top + side), slice(left, left + side))
            image[window][ink] = garment[ink]
            mask[window][ink] = int(self.source.labels[pick]) + 1
            instance[window][ink] = k
            labels.append(int(self.source.labels[pick]) + 1)
        boxes, kept = [], []
        for k, label in enumerate(labels):
            ys, xs = torch.nonzero(instance == k, as_tuple=True)
            if len(ys):
                boxes.append([int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1])
                kept.append(label)
        return Scene(
            image[None],
            mask,
            torch.tensor(boxes, dtype=torch.int64).reshape(-1, 4),
            torch.tensor(kept, dtype=torch.int64),
        )

    def __getitem__(self, index: int) -> tuple[Any, Any]:
        scene = self.scene(index)
        if self.transform is None:
            return scene.image, scene.mask
        return self.transform(scene.image, scene.mask)


def scene_splits(
    data_dir: Optional[str | os.PathLike], val_fraction: float, seed: int,
    scene_counts: Optional[dict[str, int]] = None,
) -> tuple[FashionMNISTScenes, Optional[FashionMNISTScenes], FashionMNISTScenes, Path]:
    """``(train, val, test, folder)`` of the registered ``fashion_mnist_scenes`` dataset, for segmentation and
    detection alike: ``val_fraction`` of the Fashion-MNIST training garments (seeded by ``seed``) are held out
    and the validation scenes (None when none are) drawn from them, the training scenes from the others, the test
    scenes from the test garments, all :data:`SCENE_SIZE` px; ``scene_counts`` overrides :data:`SCENE_COUNTS`.
    ``folder``: where the Fashion-MNIST files were read."""
    counts = {**SCENE_COUNTS, **(scene_counts or {})}
    if set(counts) != set(SCENE_COUNTS) or not all(
            isinstance(v, int) and not isinstance(v, bool) and v >= 1 for v in counts.values()):
        raise ValueError(f"scene_counts takes integers >= 1 for {', '.join(SCENE_COUNTS)}, got {scene_counts!r}")
    train, test, folder = load_fashion_mnist(data_dir, allow_download=False)
    keep, held = held_out(len(train), val_fraction, seed)
    part = lambda rows: ArrayDataset(train.images[rows], train.labels[rows])  # noqa: E731
    # the scenes are the dataset's own (seeded by it, not by the run): every run is measured on the same
    train_set = FashionMNISTScenes(part(keep), counts["train"], _SCENE_SEED, SCENE_SIZE)
    val_set = FashionMNISTScenes(part(held), counts["val"], _SCENE_SEED + 2, SCENE_SIZE) if held else None
    test_set = FashionMNISTScenes(test, counts["test"], _SCENE_SEED + 1, SCENE_SIZE)
    return train_set, val_set, test_set, folder
