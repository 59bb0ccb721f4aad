"""Preprocessing and augmentation, built from torchvision transforms v2.

Small images (Fashion-MNIST, CIFAR): random crop with zero padding and horizontal flip, the standard CIFAR
recipe (He et al., 2016, sec. 4.2), plus random erasing (Zhong et al., 2020, arXiv:1708.04896).
ImageFolder: the ImageNet recipe of the MobileNet papers (Inception-style RandomResizedCrop, flip; optional
AutoAugment / RandAugment / TrivialAugment), and resize + center crop at 0.875 for evaluation.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from ..models.base import CROP_PCT

__all__ = [
    "AUGMENTATIONS",
    "BatchedSmallImageTransform",
    "crop_padding",
    "small_image_train",
    "small_image_eval",
    "imagenet_train",
    "imagenet_eval",
    "eval_resize_for",
]

AUGMENTATIONS = ("none", "autoaugment", "randaugment", "trivialaugment")


def eval_resize_for(image_size: int) -> int:
    return int(round(image_size / CROP_PCT))


def _finish(mean: Sequence[float], std: Sequence[float], erasing: float) -> list:
    from torchvision.transforms import v2

    steps = [v2.ToDtype(torch.float32, scale=True), v2.Normalize(list(mean), list(std))]
    if erasing > 0:
        steps.append(v2.RandomErasing(p=erasing, value=0))
    return steps


def crop_padding(image_size: int) -> int:
    return max(1, image_size // 8)  # 4 px at 32 (CIFAR convention), 3 px at 28


def small_image_train(image_size: int, mean: Sequence[float], std: Sequence[float], flip: bool = True, erasing: float = 0.25):
    from torchvision.transforms import v2

    steps: list = [v2.ToImage(), v2.RandomCrop(image_size, padding=crop_padding(image_size))]
    if flip:
        steps.append(v2.RandomHorizontalFlip())
    return v2.Compose(steps + _finish(mean, std, erasing))


def small_image_eval(image_size: int, native_size: int, mean: Sequence[float], std: Sequence[float]):
    from torchvision.transforms import v2

    steps: list = [v2.ToImage()]
    if image_size != native_size:
        steps.append(v2.Resize(image_size, antialias=True))
    return v2.Compose(steps + _finish(mean, std, 0.0))


def imagenet_train(image_size: int, mean: Sequence[float], std: Sequence[float], augment: str = "none", erasing: float = 0.0):
    from torchvision.transforms import v2

    if augment not in AUGMENTATIONS:
        raise ValueError(f"unknown augmentation {augment!r}; accepted: {', '.join(AUGMENTATIONS)}")
    steps: list = [v2.ToImage(), v2.RandomResizedCrop(image_size, antialias=True), v2.RandomHorizontalFlip()]
    policy = {
        "autoaugment": lambda: v2.AutoAugment(v2.AutoAugmentPolicy.IMAGENET),
        "randaugment": lambda: v2.RandAugment(),
        "trivialaugment": lambda: v2.TrivialAugmentWide(),
    }.get(augment)
    if policy is not None:
        steps.append(policy())
    return v2.Compose(steps + _finish(mean, std, erasing))


def imagenet_eval(image_size: int, mean: Sequence[float], std: Sequence[float], resize: int | None = None):
    from torchvision.transforms import v2

    return v2.Compose(
        [v2.ToImage(), v2.Resize(resize or eval_resize_for(image_size), antialias=True), v2.CenterCrop(image_size)]
        + _finish(mean, std, 0.0)
    )


# torchvision's RandomErasing defaults (Zhong et al., 2020): erased area 2-33% of the image, aspect 0.3-3.3
_ERASE_SCALE = (0.02, 0.33)
_ERASE_LOG_RATIO = (math.log(0.3), math.log(1 / 0.3))
_ERASE_ATTEMPTS = 10
_MIX = np.uint64(0x9E3779B97F4A7C15)


def _uniforms(keys: np.ndarray, count: int) -> np.ndarray:
    """``count`` uniform floats in [0, 1) per key, from SplitMix64 (Steele et al., 2014) on (key, stream):
    a counter-based generator, so each sample's draws depend on its key alone, not on batch or order."""
    with np.errstate(over="ignore"):
        z = keys[:, None] * _MIX + (np.arange(1, count + 1, dtype=np.uint64) * _MIX)[None, :]
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        z = z ^ (z >> np.uint64(31))
    return (z >> np.uint64(11)).astype(np.float64) * (1.0 / (1 << 53))


class BatchedSmallImageTransform:
    """The small-image pipeline of :func:`small_image_train` / :func:`small_image_eval` applied to a whole
    uint8 batch at once, with each sample's random choices drawn from its own key.

    Same semantics as the torchvision v2 steps it replaces: random crop with ``padding`` zero pixels
    (``RandomCrop(size, padding)``), horizontal flip with probability 0.5, scale to [0, 1] and normalise, then
    ``RandomErasing(p=erasing, value=0)`` with torchvision's default scale and ratio ranges and its ten
    attempts. The v2 transforms pay Python dispatch per image, a large share of the training wall-clock for
    small images on a few CPU cores (docs/training.md); here the cost is a few tensor ops per batch. ``keys`` (one int per
    sample, e.g. from (seed, epoch, index)) make the augmentation reproducible whatever the batching.
    """

    batched = True

    def __init__(
        self, mean: Sequence[float], std: Sequence[float], padding: int = 0, flip: bool = False, erasing: float = 0.0
    ) -> None:
        if padding < 0 or not 0.0 <= erasing <= 1.0:
            raise ValueError(f"padding must be >= 0 and erasing a probability, got {padding} and {erasing}")
        self.mean, self.std = list(mean), list(std)
        self.padding, self.flip, self.erasing = padding, flip, erasing

    def __call__(self, images: torch.Tensor, keys: Sequence[int]) -> torch.Tensor:
        if images.dtype != torch.uint8 or images.ndim != 4:
            raise ValueError(f"expected a uint8 batch (N, C, H, W), got {images.dtype} {tuple(images.shape)}")
        n, c, h, w = images.shape
        u = torch.from_numpy(_uniforms(np.asarray(keys, dtype=np.uint64), 4 + 4 * _ERASE_ATTEMPTS))
        x = images
        if self.padding:
            p = self.padding
            offsets = (u[:, :2] * (2 * p + 1)).long().clamp_(max=2 * p)  # top, left of the crop in the padded image
            padded = F.pad(x, (p, p, p, p))
            rows = (offsets[:, 0, None] + torch.arange(h))[:, :, None]  # (n, h, 1)
            cols = (offsets[:, 1, None] + torch.arange(w))[:, None, :]  # (n, 1, w)
            x = padded[torch.arange(n)[:, None, None], :, rows, cols].permute(0, 3, 1, 2)  # (n, c, h, w)
        if self.flip:
            x = torch.where((u[:, 2] < 0.5)[:, None, None, None], x.flip(-1), x)
        mean = torch.tensor(self.mean, dtype=torch.float32).view(1, -1, 1, 1)
        std = torch.tensor(self.std, dtype=torch.float32).view(1, -1, 1, 1)
        out = (x.float().div_(255.0) - mean).div_(std)
        if self.erasing > 0:
            out = out.masked_fill_(self._erase_mask(u, h, w), 0.0)
        return out.contiguous()

    def _erase_mask(self, u: torch.Tensor, h: int, w: int) -> torch.Tensor:
        tries = u[:, 4:].view(-1, _ERASE_ATTEMPTS, 4).double()
        area = h * w * (_ERASE_SCALE[0] + tries[..., 0] * (_ERASE_SCALE[1] - _ERASE_SCALE[0]))
        aspect = torch.exp(_ERASE_LOG_RATIO[0] + tries[..., 1] * (_ERASE_LOG_RATIO[1] - _ERASE_LOG_RATIO[0]))
        eh = torch.sqrt(area * aspect).round().long()
        ew = torch.sqrt(area / aspect).round().long()
        fits = (eh < h) & (ew < w)
        first = torch.where(fits.any(dim=1), fits.long().argmax(dim=1), 0)  # the first attempt that fits
        pick = lambda t: t.gather(1, first[:, None]).squeeze(1)  # noqa: E731
        eh, ew = pick(eh), pick(ew)
        top = (pick(tries[..., 2]) * (h - eh + 1)).long().clamp_(min=0)
        left = (pick(tries[..., 3]) * (w - ew + 1)).long().clamp_(min=0)
        apply = (u[:, 3] < self.erasing) & fits.any(dim=1)
        rows = torch.arange(h)[None, :, None]
        cols = torch.arange(w)[None, None, :]
        box = (rows >= top[:, None, None]) & (rows < (top + eh)[:, None, None])
        box = box & (cols >= left[:, None, None]) & (cols < (left + ew)[:, None, None])
        return (box & apply[:, None, None])[:, None]  # (n, 1, h, w), broadcast over channels
