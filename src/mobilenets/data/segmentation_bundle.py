"""A segmentation dataset as the trainer takes it: a :class:`~.base.DataBundle` of (image, mask) splits with
joint transforms seeded per sample (exact resume), a validation split for model selection and the test split.

``fashion_mnist_scenes``: ``val_fraction`` of the Fashion-MNIST training garments are held out and the
validation scenes drawn from them (no garment is both trained on and selected with), the training scenes from
the others, the test scenes from the test garments; scenes are the dataset's own (seeded by the dataset, not the
run), so every run measures on the same test scenes. ``voc`` and ``mask_folder``: ``val_fraction`` of the training
files are held out; the test split is VOC's ``val`` list or the folder's ``val/``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Optional, Sequence

import torch
from torch import nn

from .base import DataBundle, TransformedView, channel_stats, held_out, training_record_data
from .scenes import SCENE_CLASSES, SCENE_COUNTS, SCENE_SIZE, scene_splits
from .segmentation import (
    VOC_CLASSES, JointTransform, MaskFolder, VOCSegmentation, segmentation_dataset_name,
)

__all__ = ["SCENE_COUNTS", "SCENE_SIZE", "USER_DATA_SIZE", "build_segmentation_bundle", "segmentation_checkpoint_data"]

USER_DATA_SIZE = 512  # training crop and evaluation short side of VOC and mask folders (DeepLab's 513, rounded)
_STATS_SCENES = 512  # training scenes the normalisation statistics are measured on
_IMAGENET_MEAN = (0.485, 0.456, 0.406)
_IMAGENET_STD = (0.229, 0.224, 0.225)


class _JointTransform(JointTransform):
    joint = True  # TransformedView passes the mask along with the image


def build_segmentation_bundle(
    name: str,
    data_dir: Optional[str | os.PathLike] = None,
    *,
    val_fraction: float = 0.1,
    seed: int = 0,
    image_size: Optional[int] = None,
    classes: Optional[Sequence[str]] = None,
    scene_counts: Optional[dict[str, int]] = None,
    with_train: bool = True,
    normalise: Optional[tuple[Sequence[float], Sequence[float]]] = None,
) -> DataBundle:
    """The splits of segmentation dataset ``name`` (:data:`~.segmentation.SEGMENTATION_DATASETS`) with their
    transforms: training images randomly resized-cropped to ``image_size`` and flipped, evaluation images
    resized so their shorter side is ``image_size`` (scenes: 128, their canvas; VOC and mask folders: 512).
    ``classes`` names the mask values of a mask folder (required there); ``scene_counts`` overrides
    :data:`SCENE_COUNTS` (``train``, ``val``, ``test``). ``with_train=False`` (evaluation) skips what only
    training needs; ``normalise`` = (mean, std) feeds images as a checkpoint says instead of the dataset's."""
    name = segmentation_dataset_name(name)
    if image_size is not None and (isinstance(image_size, bool) or not isinstance(image_size, int) or image_size < 32):
        raise ValueError(f"image_size must be an integer >= 32 for segmentation, got {image_size!r}")
    if name == "fashion_mnist_scenes":
        if classes is not None and list(classes) != list(SCENE_CLASSES):
            raise ValueError(f"fashion_mnist_scenes has its own classes ({', '.join(SCENE_CLASSES)}); do not pass "
                             "classes")
        train_set, val_set, test_set, folder = scene_splits(data_dir, val_fraction, seed, scene_counts)
        size = image_size or SCENE_SIZE
        if normalise is None:
            stats_images = torch.stack([train_set.scene(i).image for i in range(min(_STATS_SCENES, len(train_set)))])
            mean, std = channel_stats(stats_images)
        names, in_chans, source = list(SCENE_CLASSES), 1, str(folder)
        train_rows = val_rows = None
    else:
        if data_dir is None:
            layout = ("a VOC root (ImageSets/Segmentation, JPEGImages, SegmentationClass)" if name == "voc"
                      else "a folder with train/ and val/, each holding images/ and masks/")
            raise ValueError(f"dataset {name} needs --data-dir: {layout}")
        size = image_size or USER_DATA_SIZE
        root = Path(data_dir)
        if name == "voc":
            names = list(classes or VOC_CLASSES)
            test_set = VOCSegmentation(root, "val", names)
            train_set = VOCSegmentation(root, "train", names) if with_train else None
        else:
            if not classes:
                raise ValueError("dataset mask_folder needs the class names (--classes background,cat,...): the "
                                 "names of mask values 0, 1, ...")
            names = list(classes)
            test_set = MaskFolder(root / "val", names)
            train_set = MaskFolder(root / "train", names) if with_train else None
        if train_set is not None:
            train_rows, val_rows = held_out(len(train_set), val_fraction, seed)
            val_set = train_set if val_rows else None
        else:
            train_rows, val_rows, val_set = [], None, None
        mean, std, in_chans, source = _IMAGENET_MEAN, _IMAGENET_STD, 3, str(root)
    if normalise is not None:
        mean, std = (tuple(float(v) for v in values) for values in normalise)
    evaluation = _JointTransform(size, mean, std, train=False)
    return DataBundle(
        name=name,
        train=TransformedView(train_set if train_set is not None else test_set, train_rows,
                              _JointTransform(size, mean, std, train=True), seed),
        val=TransformedView(val_set, val_rows, evaluation, seed) if val_set is not None else None,
        test=TransformedView(test_set, None, evaluation, seed),
        class_names=names,
        in_chans=in_chans,
        image_size=size,
        mean=tuple(mean),
        std=tuple(std),
        small_input=False,  # dense prediction keeps the backbone's strides: its output stride is the head's
        eval_resize=size,
        source=source,
    )


def segmentation_checkpoint_data(
    checkpoint: Path, model: nn.Module, meta: dict[str, Any], dataset: Optional[str] = None,
    data_dir: Optional[str] = None, with_train: bool = False,
) -> tuple[DataBundle, str]:
    """``(bundle, dataset name)`` a saved segmentation model is measured on: the dataset its training record
    names (or ``dataset``), split with the run's seed and validation fraction, at its input size, normalised
    with the checkpoint's mean and std, checked against ``model``."""
    class_names = meta.get("class_names")
    build = lambda name, data_dir, **split: build_segmentation_bundle(  # noqa: E731
        name, data_dir, **split, image_size=int(meta["input_size"][-1]),
        classes=class_names if name == "mask_folder" else None, with_train=with_train,
        normalise=(meta["mean"], meta["std"]))
    return training_record_data(checkpoint, model, meta, dataset, data_dir, build, segmentation_dataset_name)
