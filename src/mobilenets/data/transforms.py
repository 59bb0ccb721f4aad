"""Preprocessing and augmentation, built from torchvision transforms v2.

Small images (Fashion-MNIST, CIFAR): random crop with zero padding and horizontal flip, the standard CIFAR
recipe (He et al., 2016, sec. 4.2), plus random erasing (Zhong et al., 2020, arXiv:1708.04896).
ImageFolder: the ImageNet recipe of the MobileNet papers (Inception-style RandomResizedCrop, flip; optional
AutoAugment / RandAugment / TrivialAugment), and resize + center crop at 0.875 for evaluation.
"""

from __future__ import annotations

from typing import Sequence

import torch

__all__ = ["AUGMENTATIONS", "small_image_train", "small_image_eval", "imagenet_train", "imagenet_eval", "eval_resize_for"]

AUGMENTATIONS = ("none", "autoaugment", "randaugment", "trivialaugment")
CROP_PCT = 0.875  # 224 / 256, the evaluation crop of the ImageNet papers


def eval_resize_for(image_size: int) -> int:
    return int(round(image_size / CROP_PCT))


def _finish(mean: Sequence[float], std: Sequence[float], erasing: float) -> list:
    from torchvision.transforms import v2

    steps = [v2.ToDtype(torch.float32, scale=True), v2.Normalize(list(mean), list(std))]
    if erasing > 0:
        steps.append(v2.RandomErasing(p=erasing, value=0))
    return steps


def small_image_train(image_size: int, mean: Sequence[float], std: Sequence[float], flip: bool = True, erasing: float = 0.25):
    from torchvision.transforms import v2

    padding = max(1, image_size // 8)  # 4 px at 32 (CIFAR convention), 3 px at 28
    steps: list = [v2.ToImage(), v2.RandomCrop(image_size, padding=padding)]
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
