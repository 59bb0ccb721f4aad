"""Segmentation measured on a dataset split: loss, mIoU, pixel accuracy, per-class IoU (from the pixel confusion
matrix of :func:`mobilenets.segmentation.metrics.confusion_matrix`), and the batches of images of several sizes."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import Dataset

from ..segmentation.metrics import IGNORE_INDEX, confusion_matrix, scores
from .distributed import DistInfo, all_reduce_sum
from .eval_common import eval_batches

__all__ = ["SegmentationResult", "collate_segmentation", "run_segmentation_eval", "format_segmentation_report"]


def collate_segmentation(samples: Sequence[tuple[torch.Tensor, torch.Tensor]]) -> tuple[torch.Tensor, torch.Tensor]:
    """A batch of (image, mask) pairs of any sizes: each padded at the bottom and right to the largest, images
    with 0 (the mean after normalisation) and masks with :data:`IGNORE_INDEX`, so padding is never scored."""
    height = max(image.shape[-2] for image, _ in samples)
    width = max(image.shape[-1] for image, _ in samples)
    images = samples[0][0].new_zeros((len(samples), samples[0][0].shape[0], height, width))
    masks = torch.full((len(samples), height, width), IGNORE_INDEX, dtype=torch.int64)
    for i, (image, mask) in enumerate(samples):
        if image.shape[-2:] != mask.shape[-2:]:
            raise ValueError(f"sample {i}: image {tuple(image.shape[-2:])} and mask {tuple(mask.shape)} differ in size")
        images[i, :, : image.shape[-2], : image.shape[-1]] = image
        masks[i, : mask.shape[-2], : mask.shape[-1]] = mask
    return images, masks


@dataclass
class SegmentationResult:
    loss: float  # mean cross-entropy per scored pixel
    count: int  # images
    confusion: torch.Tensor  # (num_classes, num_classes) int64 pixel counts, rows = true class
    class_names: list[str]

    def __post_init__(self) -> None:
        self._scores = scores(self.confusion, self.class_names)

    @property
    def miou(self) -> float:
        return self._scores["miou"]

    @property
    def pixel_accuracy(self) -> float:
        return self._scores["pixel_accuracy"]

    def scalars(self) -> dict[str, float]:
        """The numbers an epoch's record keeps (prefixed ``val_``/``test_`` there)."""
        return {"loss": self.loss, "miou": self.miou, "pixel_accuracy": self.pixel_accuracy}

    def to_dict(self, class_names: Optional[list[str]] = None) -> dict[str, Any]:
        report = dict(scores(self.confusion, class_names or self.class_names))
        return {"loss": self.loss, "images": self.count, **report}


@torch.no_grad()
def run_segmentation_eval(
    model: nn.Module,
    dataset: Dataset,
    class_names: Sequence[str],
    *,
    device: torch.device = torch.device("cpu"),
    batch_size: int = 16,
    workers: int = 0,
    limit_batches: Optional[int] = None,
    amp_dtype: Optional[torch.dtype] = None,
    channels_last: bool = False,
    info: DistInfo = DistInfo(),
    progress: bool = False,
    desc: str = "eval",
    forward: Optional[Callable[[torch.Tensor], torch.Tensor]] = None,
) -> SegmentationResult:
    """Evaluate ``model`` (logits (N, C, H, W) at input size) on ``dataset`` of (image, mask) pairs; under DDP
    each rank takes a shard and the counts are summed. ``forward`` replaces ``model(images)`` (an inference
    backend of :func:`mobilenets.deploy.make_predictor`)."""
    num_classes = len(class_names)
    confusion = torch.zeros(num_classes, num_classes, dtype=torch.int64, device=device)
    sums = torch.zeros(2, dtype=torch.float64, device=device)  # loss sum over scored pixels, images
    for logits, masks in eval_batches(
            model, dataset, device=device, batch_size=batch_size, workers=workers, limit_batches=limit_batches,
            amp_dtype=amp_dtype, channels_last=channels_last, info=info, progress=progress, desc=desc, forward=forward,
            collate_fn=collate_segmentation):
        if logits.shape[-2:] != masks.shape[-2:] or logits.shape[1] != num_classes:
            raise ValueError(f"the model gave logits {tuple(logits.shape)} for masks {tuple(masks.shape)} and "
                             f"{num_classes} classes")
        sums[0] += F.cross_entropy(logits, masks, ignore_index=IGNORE_INDEX, reduction="sum")
        sums[1] += logits.shape[0]
        confusion += confusion_matrix(logits.argmax(dim=1), masks, num_classes)
    all_reduce_sum(confusion, info)
    all_reduce_sum(sums, info)
    if int(sums[1].item()) == 0:
        raise ValueError("nothing to evaluate: the split holds no images")
    pixels = int(confusion.sum().item())
    return SegmentationResult(loss=float(sums[0] / max(1, pixels)), count=int(sums[1].item()),
                              confusion=confusion.cpu(), class_names=list(class_names))


def format_segmentation_report(result: dict[str, Any]) -> str:
    """``mobilenets evaluate``'s text for a segmentation model (``result``: its JSON object)."""
    lines = [
        f"{result['arch']} on {result['dataset']} ({result['split']}, {result['images']} images, "
        f"{result['pixels']} pixels scored): mIoU {result['miou']:.2%}, pixel accuracy "
        f"{result['pixel_accuracy']:.2%}, mean class accuracy {result['mean_accuracy']:.2%}, loss {result['loss']:.4f}",
    ]
    if "weights" in result:
        lines.append(f"weights: {result['weights']}")
    lines.append("per-class IoU:")
    width = max(len(n) for n in result["per_class_iou"])
    lines += [f"  {name:<{width}}  " + ("-  (in neither targets nor predictions)" if iou is None else f"{iou:.2%}")
              for name, iou in result["per_class_iou"].items()]
    if "confusion_png" in result:
        lines.append(f"confusion matrix: {result['confusion_png']}")
    return "\n".join(lines)
