"""COCO detection metrics through pycocotools' COCOeval (the reference evaluator, as torchvision's detection
references use it): mAP@[.5:.95], mAP@.5, mAP@.75, recall, and the AP of each class."""

from __future__ import annotations

import contextlib
import io
from typing import Any, Optional, Sequence

import torch

__all__ = ["evaluate_detections"]


def _rows(boxes: Any, name: str, index: int) -> torch.Tensor:
    boxes = torch.as_tensor(boxes, dtype=torch.float64).detach().cpu()
    if boxes.ndim != 2 or boxes.shape[1] != 4:
        raise ValueError(f"{name} {index}: boxes must be (N, 4) XYXY, got shape {tuple(boxes.shape)}")
    return boxes


def _field(entry: Any, key: str, name: str, index: int) -> Any:
    if not isinstance(entry, dict) or key not in entry:
        raise ValueError(f"{name} {index}: a dict with {key!r} is expected, got "
                         f"{sorted(entry) if isinstance(entry, dict) else type(entry).__name__}")
    return entry[key]


def _labels(values: Any, count: int, num_classes: int, name: str, index: int) -> list[int]:
    labels = torch.as_tensor(values).detach().cpu().reshape(-1).tolist()
    if len(labels) != count:
        raise ValueError(f"{name} {index}: {len(labels)} labels for {count} boxes")
    bad = [v for v in labels if not 1 <= v < num_classes]
    if bad:
        raise ValueError(f"{name} {index}: labels {bad[:5]} are not classes 1-{num_classes - 1} (0 is background)")
    return [int(v) for v in labels]


def _coco(images: list[dict], categories: list[dict], annotations: list[dict]) -> Any:
    from pycocotools.coco import COCO

    coco = COCO()
    coco.dataset = {"images": images, "categories": categories, "annotations": annotations}
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
    return coco


def _mean_valid(values: Any) -> Optional[float]:
    """COCOeval's average: -1 marks a cell without ground truth, which does not count."""
    valid = values[values > -1]
    return float(valid.mean()) if valid.size else None


def evaluate_detections(
    predictions: Sequence[dict],
    targets: Sequence[dict],
    class_names: Sequence[str],
) -> dict[str, Any]:
    """COCO's box metrics of ``predictions`` against ``targets``, image by image.

    ``predictions[i]``: ``boxes`` (N, 4) XYXY in pixels, ``scores`` (N,), ``labels`` (N,) (what torchvision's
    detectors return in eval mode); ``targets[i]``: ``boxes`` and ``labels``, optionally ``iscrowd`` (crowd
    regions: a detection on one is neither a hit nor a false positive). ``class_names[label]`` names a label,
    ``class_names[0]`` is the background. COCO's conventions hold: 10 IoU thresholds .5:.05:.95, 101 recall
    points, at most 100 detections per image (the highest scored), areas in pixels of the boxes.

    Returns ``map`` (AP@[.5:.95]), ``map50``, ``map75``, ``mar100`` (recall at 100 detections), ``map_small``,
    ``map_medium``, ``map_large`` (None where no object has that size), ``per_class`` (AP@[.5:.95] by name)
    and ``per_class_ap50`` (None for a class without objects in ``targets``), ``images`` and ``objects``."""
    if len(predictions) != len(targets):
        raise ValueError(f"{len(predictions)} predictions for {len(targets)} images")
    names = list(class_names)
    if len(names) < 2:
        raise ValueError(f"class_names must hold the background and at least one class, got {names}")
    categories = [{"id": k, "name": n} for k, n in enumerate(names) if k > 0]
    images, truth, found = [], [], []
    for i, (pred, target) in enumerate(zip(predictions, targets)):
        gt_boxes = _rows(_field(target, "boxes", "target", i), "target", i)
        gt_labels = _labels(_field(target, "labels", "target", i), len(gt_boxes), len(names), "target", i)
        crowd = torch.as_tensor(target.get("iscrowd", [0] * len(gt_boxes))).reshape(-1).tolist()
        if len(crowd) != len(gt_boxes):
            raise ValueError(f"target {i}: {len(crowd)} iscrowd flags for {len(gt_boxes)} boxes")
        # COCO numbers images from 1; a box is [x, y, width, height]
        images.append({"id": i + 1})
        for box, label, is_crowd in zip(gt_boxes.tolist(), gt_labels, crowd):
            w, h = box[2] - box[0], box[3] - box[1]
            truth.append({"id": len(truth) + 1, "image_id": i + 1, "category_id": label, "iscrowd": int(is_crowd),
                          "bbox": [box[0], box[1], w, h], "area": w * h})
        boxes = _rows(_field(pred, "boxes", "prediction", i), "prediction", i)
        scores = torch.as_tensor(_field(pred, "scores", "prediction", i), dtype=torch.float64).reshape(-1).tolist()
        labels = _labels(_field(pred, "labels", "prediction", i), len(boxes), len(names), "prediction", i)
        if len(scores) != len(boxes):
            raise ValueError(f"prediction {i}: {len(scores)} scores for {len(boxes)} boxes")
        for box, label, score in zip(boxes.tolist(), labels, scores):
            w, h = box[2] - box[0], box[3] - box[1]
            found.append({"id": len(found) + 1, "image_id": i + 1, "category_id": label, "score": score,
                          "bbox": [box[0], box[1], w, h], "area": w * h})
    objects = sum(1 for t in truth if not t["iscrowd"])
    if objects == 0:
        raise ValueError("the targets hold no objects (crowd regions aside): average precision is undefined")
    import numpy as np
    from pycocotools.cocoeval import COCOeval

    evaluator = COCOeval(_coco(images, categories, truth), _coco(images, categories, found), "bbox")
    with contextlib.redirect_stdout(io.StringIO()):
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    stats = [None if s < 0 else float(s) for s in evaluator.stats]
    # precision: [IoU threshold, recall point, class, area range (0: all), max detections (-1: 100)]
    precision = evaluator.eval["precision"][:, :, :, 0, -1]
    at50 = int(np.argmin(np.abs(evaluator.params.iouThrs - 0.5)))
    return {
        "map": stats[0], "map50": stats[1], "map75": stats[2],
        "map_small": stats[3], "map_medium": stats[4], "map_large": stats[5], "mar100": stats[8],
        "per_class": {n: _mean_valid(precision[:, :, k]) for k, n in enumerate(names[1:])},
        "per_class_ap50": {n: _mean_valid(precision[at50, :, k]) for k, n in enumerate(names[1:])},
        "images": len(images), "objects": objects,
    }
