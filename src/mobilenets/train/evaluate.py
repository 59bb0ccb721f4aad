"""Accuracy of a model on a dataset split: top-1, top-5, per-class accuracy, confusion matrix (and its PNG)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import Dataset

from ..checkpoint import CheckpointError, load, read_metadata
from ..data.checkpoint_data import calibration_batches, calibration_split, checkpoint_data
from ..data.detection import detection_checkpoint_data
from ..data.segmentation_bundle import segmentation_checkpoint_data
from ..deploy.runtime import BACKENDS as INFERENCE_BACKENDS
from ..deploy.runtime import INT8_BACKENDS, make_predictor
from ..detection.options import DetectionOptions
from ..segmentation import SegmentationModel
from .detection_eval import run_detection_eval
from .distributed import DistInfo, all_reduce_sum
from .eval_common import ShardSampler, eval_batches
from .plots import plot_confusion
from .segmentation_eval import run_segmentation_eval
from .state import is_training_state, state_weights

# "pytorch": the model as loaded; the others are mobilenets.deploy backends (BN folded, compiled, ONNX Runtime)
EVAL_BACKENDS = ("pytorch", *INFERENCE_BACKENDS)
# INT8 needs calibration images, which a list of files to label does not provide
PREDICT_BACKENDS = tuple(b for b in EVAL_BACKENDS if b not in INT8_BACKENDS)

__all__ = ["EvalResult", "ShardSampler", "run_eval", "evaluate_checkpoint", "load_checkpoint"]


@dataclass
class EvalResult:
    loss: float
    top1: float
    top5: float
    count: int
    confusion: torch.Tensor  # (num_classes, num_classes) int64, rows = true class, columns = predicted

    def scalars(self) -> dict[str, float]:
        """The numbers an epoch's record keeps (prefixed ``val_`` there)."""
        return {"loss": self.loss, "top1": self.top1, "top5": self.top5}

    def per_class(self) -> list[float]:
        totals = self.confusion.sum(dim=1).clamp(min=1)
        return (self.confusion.diagonal() / totals).tolist()

    def to_dict(self, class_names: Optional[list[str]] = None) -> dict[str, Any]:
        names = class_names or [str(i) for i in range(self.confusion.shape[0])]
        return {
            "loss": self.loss,
            "top1": self.top1,
            "top5": self.top5,
            "images": self.count,
            "per_class": {n: acc for n, acc in zip(names, self.per_class())},
        }


@torch.no_grad()
def run_eval(
    model: nn.Module,
    dataset: Dataset,
    num_classes: int,
    *,
    device: torch.device = torch.device("cpu"),
    batch_size: int = 256,
    workers: int = 0,
    limit_batches: Optional[int] = None,
    amp_dtype: Optional[torch.dtype] = None,
    channels_last: bool = False,
    info: DistInfo = DistInfo(),
    progress: bool = False,
    desc: str = "eval",
    forward: Optional[Callable[[torch.Tensor], torch.Tensor]] = None,
) -> EvalResult:
    """Evaluate ``model`` on ``dataset``; under DDP each rank takes a shard and the counts are summed.

    ``forward`` replaces ``model(images)``: an inference backend from :func:`mobilenets.deploy.make_predictor`.
    """
    confusion = torch.zeros(num_classes, num_classes, dtype=torch.int64, device=device)
    sums = torch.zeros(3, dtype=torch.float64, device=device)  # loss sum, top-5 hits, count
    for logits, labels in eval_batches(
            model, dataset, device=device, batch_size=batch_size, workers=workers, limit_batches=limit_batches,
            amp_dtype=amp_dtype, channels_last=channels_last, info=info, progress=progress, desc=desc, forward=forward):
        sums[0] += F.cross_entropy(logits, labels, reduction="sum")
        k = min(5, num_classes)
        sums[1] += (logits.topk(k, dim=1).indices == labels[:, None]).any(dim=1).sum()
        sums[2] += labels.numel()
        confusion += torch.bincount(
            labels * num_classes + logits.argmax(dim=1), minlength=num_classes * num_classes
        ).view(num_classes, num_classes)
    all_reduce_sum(confusion, info)
    all_reduce_sum(sums, info)
    count = int(sums[2].item())
    if count == 0:
        raise ValueError("nothing to evaluate: the split holds no images")
    return EvalResult(
        loss=float(sums[0] / count),
        top1=float(confusion.diagonal().sum().item() / count),
        top5=float(sums[1].item() / count),
        count=count,
        confusion=confusion.cpu(),
    )


def resolve_checkpoint(path: Path) -> Path:
    """A .safetensors file or a training state (``last.pt``/``best.pt``), or a training output folder (its
    best.safetensors)."""
    if path.is_dir():
        best = path / "best.safetensors"
        if not best.is_file():
            raise FileNotFoundError(f"{path}: a folder without best.safetensors; pass the .safetensors file itself")
        return best
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such checkpoint file")
    return path


def load_checkpoint(path: Path, map_location: str = "cpu") -> tuple[Any, dict[str, Any]]:
    """``(model, metadata)`` of what ``evaluate`` and ``predict`` accept (after :func:`resolve_checkpoint`).

    A ``.safetensors`` checkpoint is :func:`mobilenets.load`-ed. A training state (``last.pt`` or ``best.pt`` of a
    run folder, any epoch) gives its EMA weights (its model weights when the run kept no EMA), which is what the
    trainer validates; the architecture and the metadata (classes, input size, mean/std, dataset) come from the
    ``best.safetensors`` of the same run folder, which every run writes after its first epoch.
    """
    path = Path(path)
    if path.suffix.lower() != ".pt":
        return load(path, map_location=map_location), read_metadata(path)
    try:
        state = torch.load(str(path), map_location=map_location, weights_only=True)
    except Exception as exc:
        raise CheckpointError(f"{path}: cannot be read as a weights-only PyTorch file ({exc})") from None
    if not is_training_state(state):
        raise CheckpointError(
            f"{path}: not a mobilenets training state (last.pt/best.pt); evaluate and predict take a mobilenets "
            ".safetensors checkpoint, a run folder or a training state (bring other weights in with "
            "`mobilenets convert`)"
        )
    sibling = path.parent / "best.safetensors"
    if not sibling.is_file():
        raise CheckpointError(
            f"{path}: a training state takes its architecture and metadata from the run's best.safetensors, and "
            f"{sibling} is missing"
        )
    model = load(sibling, map_location=map_location)
    meta = read_metadata(sibling)
    which = "EMA" if state.get("ema") is not None else "model"
    weights = state_weights(state, ema=which == "EMA")
    try:
        model.load_state_dict(weights, strict=True)
    except RuntimeError as exc:
        raise CheckpointError(f"{path}: its weights do not fit {sibling} ({str(exc).splitlines()[0]})") from None
    when = f"after epoch {state['epoch']}"
    if state.get("step_in_epoch"):  # saved by Ctrl-C inside an epoch
        when += f" and {state['step_in_epoch']} steps of the next"
    meta["weights"] = f"{which} weights of {path.name}, {when}"
    return model, meta


def evaluate_checkpoint(
    checkpoint: Path,
    dataset: Optional[str] = None,
    data_dir: Optional[str] = None,
    split: str = "test",
    batch_size: int = 256,
    workers: int = 0,
    limit_batches: Optional[int] = None,
    confusion_png: Optional[Path] = None,
    device: str = "cpu",
    progress: bool = False,
    backend: str = "pytorch",
    threads: Optional[int] = None,
) -> dict[str, Any]:
    """Evaluate a saved model on ``dataset`` (by default the one it was trained on, from its metadata).

    ``backend`` is ``pytorch`` (the model as loaded) or an inference backend of :mod:`mobilenets.deploy`
    (:data:`~mobilenets.deploy.runtime.BACKENDS`: ``eager``, ``compile``, ``onnxruntime``, ``onnxruntime-int8``,
    ``inductor-int8``, ``openvino``, ``openvino-int8``); INT8 calibrates on validation images (the first
    training images for a run that kept none: :func:`calibration_batches`), never on the split being measured.

    A segmentation model gives its loss, mIoU, pixel accuracy, mean class accuracy and per-class IoU
    (:mod:`.segmentation_eval`) instead of top-1/top-5 and per-class accuracy; the confusion matrix counts pixels.
    A detector gives COCO's mAP@[.5:.95], mAP@.5, mAP@.75, recall and per-class AP (:mod:`.detection_eval`), with
    the ``pytorch`` backend only and no confusion matrix (``confusion_png`` must be None).
    """
    checkpoint = resolve_checkpoint(checkpoint)
    model, meta = load_checkpoint(checkpoint, map_location=device)
    arch = model.info.arch
    segmentation = isinstance(model, SegmentationModel)
    detection = isinstance(getattr(model, "options", None), DetectionOptions)
    if detection and backend != "pytorch":
        raise ValueError(f"detectors are evaluated with --backend pytorch, not {backend!r}: an exported detector "
                         "gives the raw head outputs, decoded and NMS-filtered in Python (docs/detection.md)")
    if detection and confusion_png is not None:
        raise ValueError("a detector has no confusion matrix; leave out confusion_png (--confusion)")
    find_data = (detection_checkpoint_data if detection else segmentation_checkpoint_data if segmentation
                 else checkpoint_data)
    bundle, name = find_data(
        checkpoint, model, meta=meta, dataset=dataset, data_dir=data_dir,
        with_train=split != "test" or backend in INT8_BACKENDS,
    )
    target = {"test": bundle.test, "val": bundle.val}.get(split)
    if split not in ("test", "val"):
        raise ValueError(f"unknown split {split!r}; accepted: test, val")
    if target is None:
        raise ValueError(f"{name} has no {split} split here")
    forward = _backend_forward(model, backend, threads, bundle, split, device)
    options = dict(device=torch.device(device), batch_size=batch_size, workers=workers, limit_batches=limit_batches,
                   progress=progress, desc=f"evaluate {split}", forward=forward)
    if detection:
        result = run_detection_eval(model, target, bundle.class_names, **options)
        title = ""
    elif segmentation:
        result = run_segmentation_eval(model, target, bundle.class_names, **options)
        title = f"{arch} on {name} {split} (pixels): mIoU {result.miou:.2%}"
    else:
        result = run_eval(model, target, bundle.num_classes, **options)
        title = f"{arch} on {name} {split}: top-1 {result.top1:.2%}"
    out = {"checkpoint": str(checkpoint), "arch": arch, "dataset": name, "split": split, "backend": backend}
    if backend in INT8_BACKENDS:
        out["calibration_split"] = calibration_split(bundle)
    if "weights" in meta:
        out["weights"] = meta["weights"]
    out.update(result.to_dict(bundle.class_names))
    if confusion_png is not None:
        plot_confusion(result.confusion, bundle.class_names, confusion_png, title=title)
        out["confusion_png"] = str(confusion_png)
    if result.confusion is not None:
        out["confusion"] = result.confusion.tolist()
    return out


def _backend_forward(model, backend: str, threads: Optional[int], bundle, split: str, device: str):
    if backend not in EVAL_BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; accepted: {', '.join(EVAL_BACKENDS)}")
    if backend == "pytorch":
        return None
    if device != "cpu":
        raise ValueError(f"backend {backend!r} runs on the CPU; use --device cpu or --backend pytorch")
    calibration = None
    if backend in INT8_BACKENDS:
        if split == "val":
            raise ValueError("INT8 calibrates on the validation split, so it must not measure on it: use --split test")
        calibration = calibration_batches(bundle)
    return make_predictor(model, backend, threads=threads, calibration=calibration)


def format_report(result: dict[str, Any]) -> str:
    lines = [
        f"{result['arch']} on {result['dataset']} ({result['split']}, {result['images']} images): "
        f"top-1 {result['top1']:.2%}, top-5 {result['top5']:.2%}, loss {result['loss']:.4f}",
    ]
    if "weights" in result:
        lines.append(f"weights: {result['weights']}")
    lines.append("per-class accuracy:")
    width = max(len(n) for n in result["per_class"])
    lines += [f"  {name:<{width}}  {acc:.2%}" for name, acc in result["per_class"].items()]
    if "confusion_png" in result:
        lines.append(f"confusion matrix: {result['confusion_png']}")
    return "\n".join(lines)


def dumps(result: dict[str, Any]) -> str:
    return json.dumps(result)
