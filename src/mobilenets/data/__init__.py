"""Datasets for training and evaluation: Fashion-MNIST (default), CIFAR-10/100, and ImageFolder trees; for
segmentation, :data:`SEGMENTATION_DATASETS` through :func:`build_segmentation_data` (:mod:`.segmentation`); for
detection, :data:`DETECTION_DATASETS` through :func:`build_detection_data` (:mod:`.detection`).

:func:`build_data` returns a :class:`DataBundle`: a training split with augmentation, a validation split held
out from the training set (for model selection), the test split (for the final report), class names, and the
preprocessing a checkpoint needs to feed the model later.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

from .base import (
    ArrayDataset, DataBundle, DatasetNotFoundError, TransformedView, channel_stats, registered_name, split_indices,
)
from .cifar import load_cifar
from .detection import DETECTION_DATASETS, build_detection_data
from .fashion_mnist import FASHION_MNIST_CLASSES, load_fashion_mnist
from .image_folder import find_splits, scan_image_folder
from .images import load_image
from .segmentation import SEGMENTATION_DATASETS, build_segmentation_data
from .transforms import (
    AUGMENTATIONS,
    BatchedSmallImageTransform,
    crop_padding,
    eval_resize_for,
    imagenet_eval,
    imagenet_train,
    small_image_eval,
    small_image_train,
)

__all__ = [
    "DATASETS",
    "SEGMENTATION_DATASETS",
    "DETECTION_DATASETS",
    "AUGMENTATIONS",
    "ArrayDataset",
    "DataBundle",
    "DatasetNotFoundError",
    "TransformedView",
    "build_data",
    "build_segmentation_data",
    "build_detection_data",
    "dataset_name",
    "load_image",
]

DATASETS = ("fashion_mnist", "cifar10", "cifar100", "imagefolder")
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def dataset_name(name: str) -> str:
    """The registered name (one of ``DATASETS``) of a dataset named as users write it: case, '-' and '_' do not
    matter, so ``fashion-mnist``, ``FashionMNIST`` and ``CIFAR-10`` are ``fashion_mnist`` and ``cifar10``."""
    return registered_name(name, DATASETS, "dataset")


def build_data(
    name: str = "fashion_mnist",
    data_dir: Optional[str | os.PathLike] = None,
    *,
    val_fraction: float = 0.1,
    seed: int = 0,
    image_size: Optional[int] = None,
    augment: str = "none",
    random_erasing: float = 0.25,
    allow_download: bool = True,
    class_names: Optional[list[str]] = None,
    with_train: bool = True,
) -> DataBundle:
    """Load ``name`` (as :func:`dataset_name` reads it) and wrap its splits with the right transforms.

    ``val_fraction`` of the training set (stratified, fixed by ``seed``) becomes the validation split; the
    official test split is kept apart. ``class_names`` (from a checkpoint) makes an ImageFolder refuse a tree
    whose classes differ. ``with_train=False`` skips scanning the ImageFolder ``train/`` tree (evaluation).
    """
    name = dataset_name(name)
    if name == "imagefolder":
        return _image_folder(data_dir, val_fraction, seed, image_size or 224, augment, random_erasing, class_names, with_train)
    if augment != "none":
        raise ValueError(f"--augment {augment} applies to ImageFolder data; small-image datasets use crop/flip/erasing")
    if name == "fashion_mnist":
        train, test, folder = load_fashion_mnist(data_dir, allow_download=allow_download)
        names = list(FASHION_MNIST_CLASSES)
    else:
        train, test, names, folder = load_cifar(name, data_dir)
    native = train.images.shape[-1]
    size = image_size or native
    train_idx, val_idx = split_indices(train.targets, val_fraction, seed)
    # statistics of the images the model trains on, not of the held-out ones
    mean, std = channel_stats(train.images[train_idx])
    if size == native:
        # in-memory images at their own size: augment whole batches (same steps as the torchvision path below)
        train_tf = BatchedSmallImageTransform(mean, std, padding=crop_padding(size), flip=True, erasing=random_erasing)
        eval_tf = BatchedSmallImageTransform(mean, std)
    else:
        from torchvision.transforms import v2

        train_tf = v2.Compose([v2.Resize(size, antialias=True), small_image_train(size, mean, std, erasing=random_erasing)])
        eval_tf = small_image_eval(size, native, mean, std)
    return DataBundle(
        name=name,
        train=TransformedView(train, train_idx, train_tf, seed),
        val=TransformedView(train, val_idx, eval_tf, seed) if val_idx else None,
        test=TransformedView(test, None, eval_tf, seed),
        class_names=names,
        in_chans=train.images.shape[1],
        image_size=size,
        mean=mean,
        std=std,
        small_input=size <= 64,
        eval_resize=size,
        source=str(folder),
    )


def _image_folder(
    data_dir: Optional[str | os.PathLike],
    val_fraction: float,
    seed: int,
    size: int,
    augment: str,
    erasing: float,
    class_names: Optional[list[str]],
    with_train: bool,
) -> DataBundle:
    if data_dir is None:
        raise DatasetNotFoundError("--dataset imagefolder needs --data-dir ROOT with ROOT/train/<class>/ (and ROOT/val/<class>/)")
    root = Path(data_dir)
    train_root, val_root = find_splits(root)
    skipped: list[tuple[str, str]] = []
    resize = eval_resize_for(size)
    eval_tf = imagenet_eval(size, IMAGENET_MEAN, IMAGENET_STD, resize)
    if with_train or val_root is None:
        train_set, bad = scan_image_folder(train_root, class_names)
        skipped += bad
        names = class_names or list(train_set.classes)
    else:
        train_set, names = None, list(class_names or [])
    if val_root is not None:
        test_set, bad = scan_image_folder(val_root, names or None)
        skipped += bad
        names = names or list(test_set.classes)
    if train_set is not None:
        train_idx, val_idx = split_indices(train_set.targets, val_fraction if val_root is not None or with_train else 0.0, seed)
        if val_root is None:
            # no val/ folder: the held-out part of train/ serves as test split and there is no model selection split
            test_view = TransformedView(train_set, val_idx, eval_tf, seed)
            val_view = None
        else:
            test_view = TransformedView(test_set, None, eval_tf, seed)
            val_view = TransformedView(train_set, val_idx, eval_tf, seed) if val_idx else None
        train_view = TransformedView(train_set, train_idx, imagenet_train(size, IMAGENET_MEAN, IMAGENET_STD, augment, erasing), seed)
    else:
        test_view = TransformedView(test_set, None, eval_tf, seed)
        train_view = TransformedView(test_set, [], None, seed)
        val_view = None
    return DataBundle(
        name="imagefolder",
        train=train_view,
        val=val_view,
        test=test_view,
        class_names=names,
        in_chans=3,
        image_size=size,
        mean=IMAGENET_MEAN,
        std=IMAGENET_STD,
        small_input=size <= 64,
        eval_resize=resize,
        source=str(root),
        skipped=skipped,
    )
