"""Detection measured on a dataset split (COCO mAP through :func:`mobilenets.detection.metrics.evaluate_detections`),
its text report, and image files with the detections drawn (``mobilenets predict`` for a detector)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Sequence

import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import Dataset

from ..checkpoint import atomic_write
from ..data.detection import collate_detection
from ..data.images import load_image
from ..detection.metrics import evaluate_detections
from .distributed import DistInfo
from .eval_common import eval_batches

__all__ = ["DetectionResult", "run_detection_eval", "format_detection_report", "draw_detections", "predict_detections"]


@dataclass
class DetectionResult:
    count: int  # images
    metrics: dict[str, Any]  # evaluate_detections' report
    class_names: list[str]
    confusion: None = None  # detection has no confusion matrix

    @property
    def map(self) -> float:
        return self.metrics["map"]

    @property
    def map50(self) -> float:
        return self.metrics["map50"]

    def scalars(self) -> dict[str, float]:
        """The numbers an epoch's record keeps (prefixed ``val_``/``test_`` there)."""
        return {"map": self.map, "map50": self.map50, "map75": self.metrics["map75"]}

    def to_dict(self, class_names: Optional[list[str]] = None) -> dict[str, Any]:
        return dict(self.metrics)


def _gather(items: list[Any], info: DistInfo) -> list[Any]:
    """Every rank's ``items`` on every rank, in the order of the dataset (ShardSampler deals them round-robin)."""
    if not info.enabled:
        return items
    parts: list[Any] = [None] * info.world_size
    dist.all_gather_object(parts, items)
    merged: list[Any] = []
    for k in range(max(len(p) for p in parts)):
        merged += [p[k] for p in parts if k < len(p)]
    return merged


@torch.no_grad()
def run_detection_eval(
    model: nn.Module,
    dataset: Dataset,
    class_names: Sequence[str],
    *,
    info: DistInfo = DistInfo(),
    **options: Any,
) -> DetectionResult:
    """COCO box metrics of ``model`` (a torchvision-style detector: a list of images in, one dict of boxes,
    scores and labels per image out) on ``dataset`` of (image, target) pairs; ``options`` are
    :func:`~.eval_common.eval_batches`'. Under DDP each rank takes a shard and the detections are gathered
    before the COCO evaluation."""
    pairs: list[tuple[dict, dict]] = []
    for found, targets in eval_batches(model, dataset, info=info, collate_fn=collate_detection, **options):
        for pred, target in zip(found, targets):
            pairs.append(({k: v.detach().cpu() for k, v in pred.items()}, target))
    pairs = _gather(pairs, info)
    if not pairs:
        raise ValueError("nothing to evaluate: the split holds no images")
    predictions, targets = zip(*pairs)
    metrics = evaluate_detections(predictions, targets, class_names)
    return DetectionResult(count=len(pairs), metrics=metrics, class_names=list(class_names))


def format_detection_report(result: dict[str, Any]) -> str:
    """``mobilenets evaluate``'s text for a detector (``result``: its JSON object)."""
    lines = [
        f"{result['arch']} on {result['dataset']} ({result['split']}, {result['images']} images, {result['objects']} "
        f"objects): mAP@[.5:.95] {result['map']:.2%}, mAP@.5 {result['map50']:.2%}, mAP@.75 {result['map75']:.2%}, "
        f"recall@100 {result['mar100']:.2%}",
    ]
    if "weights" in result:
        lines.append(f"weights: {result['weights']}")
    lines.append("per-class AP@[.5:.95] / AP@.5:")
    width = max(len(n) for n in result["per_class"])
    for name, ap in result["per_class"].items():
        ap50 = result["per_class_ap50"][name]
        lines.append(f"  {name:<{width}}  " + ("-  (no objects of this class)" if ap is None
                                                else f"{ap:.2%} / {ap50:.2%}"))
    return "\n".join(lines)


def draw_detections(image_path: Path, detections: dict[str, torch.Tensor], class_names: Sequence[str],
                    output: Path, score_threshold: float) -> list[dict[str, Any]]:
    """``image_path`` (as RGB) with the boxes of ``detections`` scored at least ``score_threshold`` drawn, each
    labelled with its class and score, written to the PNG ``output`` (atomically); returns those detections."""
    from torchvision.transforms.v2.functional import pil_to_tensor, to_pil_image
    from torchvision.utils import draw_bounding_boxes

    keep = detections["scores"] >= score_threshold
    boxes, scores, labels = detections["boxes"][keep], detections["scores"][keep], detections["labels"][keep]
    shown = [{"class": class_names[int(label)], "label": int(label), "score": float(score),
              "box": [round(float(v), 2) for v in box]} for box, score, label in zip(boxes, scores, labels)]
    canvas = pil_to_tensor(load_image(image_path, 3))
    text = [f"{d['class']} {d['score']:.2f}" for d in shown]
    width = max(1, round(max(canvas.shape[-2:]) / 200))
    # with no box left the image is written as it is (torchvision's drawing would warn and do the same)
    drawn = draw_bounding_boxes(canvas, boxes, labels=text, width=width, colors="red") if shown else canvas
    atomic_write(output, lambda tmp: to_pil_image(drawn).save(tmp, format="PNG"))
    return shown


@torch.no_grad()
def predict_detections(
    model: nn.Module, meta: dict[str, Any], images: Sequence[Path], output_dir: Path, score_threshold: float,
) -> list[dict[str, Any]]:
    """``model``'s boxes on each image file, drawn into ``output_dir/NAME_detections.png``: the detections scored
    at least ``score_threshold``, highest first, each with its class, label, score and box (XYXY pixels of the
    file). The detector takes the file's pixels as they are (in [0, 1]) and resizes and normalises them itself."""
    from torchvision.transforms.v2.functional import pil_to_tensor

    if not 0.0 <= score_threshold <= 1.0:
        raise ValueError(f"--score-threshold must be in [0, 1], got {score_threshold}")
    in_chans = int(meta["input_size"][0])
    names = meta.get("class_names") or ["background"] + [str(i) for i in range(1, model.num_classes)]
    model.eval()
    results: list[dict[str, Any]] = []
    for path in map(Path, images):
        pixels = pil_to_tensor(load_image(path, channels=in_chans)).float() / 255.0
        (found,) = model([pixels])
        output = Path(output_dir) / f"{path.stem}_detections.png"
        shown = draw_detections(path, found, names, output, score_threshold)
        results.append({"image": str(path), "output": str(output), "detections": shown})
    return results
