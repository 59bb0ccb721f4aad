"""Segmentation scores from a pixel confusion matrix: mIoU, pixel accuracy, per-class IoU.

One definition for every caller (training's validation, ``mobilenets evaluate``, INT8 and ONNX checks):
accumulate :func:`confusion_matrix` over batches, then read :func:`scores` once. Pixels whose target is
``ignore_index`` (255, VOC's borders) count nowhere. The IoU of class c is ``TP / (TP + FP + FN)``; a class
absent from both the targets and the predictions has no IoU (NaN) and is left out of the mean, as
torchvision's reference scripts and TensorFlow DeepLab's evaluation do.
"""

from __future__ import annotations

import math
from typing import Any, Optional, Sequence

import torch

__all__ = ["IGNORE_INDEX", "confusion_matrix", "scores"]

IGNORE_INDEX = 255


def confusion_matrix(prediction: torch.Tensor, target: torch.Tensor, num_classes: int,
                     ignore_index: int = IGNORE_INDEX) -> torch.Tensor:
    """(num_classes, num_classes) int64 pixel counts, rows = true class, columns = predicted.

    ``prediction`` holds class indices of the same shape as ``target`` (logits: take ``argmax(dim=1)`` first).
    A target value that is neither a class nor ``ignore_index`` is refused: it would be counted as nothing or
    as another class."""
    if prediction.shape != target.shape:
        raise ValueError(f"prediction {tuple(prediction.shape)} and target {tuple(target.shape)} must have one "
                         "shape (class indices; take argmax(dim=1) of logits)")
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise ValueError(f"num_classes must be an integer >= 1, got {num_classes!r}")
    target = target.long()
    prediction = prediction.long()
    valid = target != ignore_index
    bad = valid & ((target < 0) | (target >= num_classes))
    if bool(bad.any()):
        values = torch.unique(target[bad]).tolist()[:5]
        raise ValueError(f"target values {values} are neither classes 0-{num_classes - 1} nor {ignore_index} "
                         "(ignored)")
    if bool(((prediction[valid] < 0) | (prediction[valid] >= num_classes)).any()):
        raise ValueError(f"prediction values must be classes 0-{num_classes - 1}")
    index = target[valid] * num_classes + prediction[valid]
    return torch.bincount(index, minlength=num_classes * num_classes).view(num_classes, num_classes)


def scores(confusion: torch.Tensor, class_names: Optional[Sequence[str]] = None) -> dict[str, Any]:
    """``miou``, ``pixel_accuracy``, ``mean_accuracy`` (of the classes present in the targets), ``pixels``
    counted and ``per_class_iou`` (class name -> IoU, None where the class is in neither targets nor
    predictions) of an accumulated :func:`confusion_matrix`."""
    if confusion.ndim != 2 or confusion.shape[0] != confusion.shape[1]:
        raise ValueError(f"confusion must be a square matrix, got shape {tuple(confusion.shape)}")
    n = confusion.shape[0]
    names = list(class_names) if class_names is not None else [str(i) for i in range(n)]
    if len(names) != n:
        raise ValueError(f"{len(names)} class names for a {n}-class confusion matrix")
    counts = confusion.double()
    true_positive = counts.diagonal()
    union = counts.sum(dim=1) + counts.sum(dim=0) - true_positive
    per_row = counts.sum(dim=1)
    pixels = float(counts.sum())
    if pixels == 0:
        raise ValueError("no pixels counted: every target pixel was ignored or the split is empty")
    iou = [float(tp / u) if u > 0 else math.nan for tp, u in zip(true_positive.tolist(), union.tolist())]
    present = [v for v in iou if not math.isnan(v)]
    accuracy = [tp / r for tp, r in zip(true_positive.tolist(), per_row.tolist()) if r > 0]
    return {
        "miou": sum(present) / len(present),
        "pixel_accuracy": float(true_positive.sum()) / pixels,
        "mean_accuracy": sum(accuracy) / len(accuracy),
        "pixels": int(pixels),
        "per_class_iou": {name: (None if math.isnan(v) else v) for name, v in zip(names, iou)},
    }
