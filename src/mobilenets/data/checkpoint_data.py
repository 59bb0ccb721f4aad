"""The data a saved model is measured and calibrated on: the dataset its training record names, split and
normalised as that run did (evaluation, INT8 calibration; used by ``mobilenets evaluate`` and ``export``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import torch
from torch import nn
from torch.utils.data import DataLoader

from ..checkpoint import read_metadata
from . import build_data
from .base import TransformedView, training_record_data
from .transforms import BatchedSmallImageTransform

__all__ = ["CALIBRATION_BATCHES", "calibration_batches", "calibration_split", "checkpoint_data"]


def checkpoint_data(
    checkpoint: Path, model: nn.Module, dataset: Optional[str] = None, data_dir: Optional[str] = None,
    with_train: bool = False, meta: Optional[dict[str, Any]] = None,
):
    """``(bundle, dataset name)``: the dataset ``checkpoint`` was trained on (or ``dataset``), split with the
    training run's seed and validation fraction, checked against ``model`` and normalised exactly as the
    checkpoint's metadata (``meta``, read from ``checkpoint`` when not given) says."""
    if meta is None:
        meta = read_metadata(checkpoint)
    class_names = meta.get("class_names")
    build = lambda name, data_dir, **split: build_data(  # noqa: E731
        name, data_dir, **split, image_size=int(meta["input_size"][-1]), random_erasing=0.0,
        class_names=class_names if name == "imagefolder" else None, with_train=with_train)
    bundle, name = training_record_data(checkpoint, model, meta, dataset, data_dir, build)
    # feed the images exactly as the checkpoint says (its mean/std, not the dataset's recomputed ones)
    _renormalise(bundle, tuple(meta["mean"]), tuple(meta["std"]))
    return bundle, name


CALIBRATION_BATCHES = 8


def calibration_split(bundle) -> str:
    """The split INT8 calibrates on: ``"val"``, or ``"train"`` for a run that kept no validation split."""
    return "val" if bundle.val is not None else "train"


def calibration_batches(bundle, batches: int = CALIBRATION_BATCHES, batch_size: int = 32) -> list[torch.Tensor]:
    """INT8 calibration images, never the test split's: the first ``batches`` batches of the validation split,
    images neither trained on nor measured on. A run trained on every training image (``--val-fraction 0``)
    has no validation split; then they are its first training images, preprocessed for evaluation (no
    augmentation), as calibration is usually done (the model has seen them, the test measure has not)."""
    view = bundle.val
    if calibration_split(bundle) == "train":
        train = bundle.train
        view = TransformedView(train.base, train.indices[: batches * batch_size], bundle.test.transform)
    loader = DataLoader(view, batch_size=batch_size, shuffle=False)
    return [images for _, (images, _) in zip(range(batches), loader)]


def _renormalise(bundle, mean: tuple, std: tuple) -> None:
    from torchvision.transforms import v2

    for view in (bundle.train, bundle.val, bundle.test):
        if view is None or view.transform is None:
            continue
        if isinstance(view.transform, BatchedSmallImageTransform):
            view.transform.mean, view.transform.std = list(mean), list(std)
        for step in getattr(view.transform, "transforms", []):
            if isinstance(step, v2.Normalize):
                step.mean, step.std = list(mean), list(std)
