"""The task seam of the trainer: what differs between classification, segmentation (and detection) in a run.

The trainer (:mod:`.trainer`, :mod:`.loop`, :mod:`.fit`) owns everything that is the same for every task:
the output folder, checkpoints and exact resume, the optimizer, schedules and time budget, EMA, DDP, AMP,
progress bars, the best model and the test report. A :class:`Task`, chosen from the registry's ``task`` of
the model (:func:`task_for_model`), owns the rest. Its contract:

- ``name``: the registry's task (``"classification"``, ``"segmentation"``).
- ``default_dataset`` and :meth:`dataset_name`: the datasets it trains on (``--dataset`` as users write it to
  the registered name; an unknown one refused listing the accepted).
- :meth:`check_config`: refuse the options of a :class:`~.config.TrainConfig` that make no sense for it,
  naming the option (called by ``TrainConfig.validate``, before anything is read or written).
- :meth:`build_data`: the :class:`~mobilenets.data.DataBundle` (train/val/test datasets, class names, the
  input size, mean and std the checkpoint records).
- :meth:`model_options`: options of the model beyond the data's classes and channels (a detector's
  ``image_size``).
- :meth:`bind`: called once with the resolved :class:`~.config.Settings`; makes ``criterion`` (a module, or
  None for a model that computes its own losses).
- ``collate_fn``: how the training and evaluation loaders batch samples (None: torch's default).
- :meth:`to_device`: a batch from the loader -> ``(inputs, targets, images)``: on the device (channels-last
  when asked), ``images`` the number of images in it (what img/s and the mean loss count).
- :meth:`step`: called under autocast with the training model (the DDP/compiled wrapper) in train mode;
  returns a :class:`StepOutput`: the scalar loss to back-propagate, the outputs (logits; what distillation
  reads, None where there are none) and the step's training statistic as ``(hits, total)`` counts (top-1,
  pixel accuracy; ``(0, 0)`` for none).
- ``train_statistic``: the name of that statistic (``"top1"``, ``"pixel_accuracy"``) or None; an epoch's
  record keeps it as ``train_<name>`` when there is one.
- :meth:`evaluate`: the model (in eval mode for the call) on a dataset split -> a result with ``scalars()``
  (``{"loss": ..., "top1": ...}``: the record keeps them as ``val_<key>``), ``to_dict(class_names)`` (the JSON
  report) and ``confusion`` (a (C, C) tensor, or None).
- ``selection_metric``: the key of an epoch's record the best model is chosen by, higher is better
  (``"val_top1"``, ``"val_miou"``); ``best.pt`` and ``best.safetensors`` hold that epoch.
- ``label_smoothing``, ``ema_decay``: the defaults when the recipe's are not wanted (None: the recipe's).
- :meth:`test_scalars`, :meth:`per_class`, :meth:`epoch_summary`, :meth:`test_summary`, :meth:`test_title`,
  ``curves`` (:class:`~.plots.Curves`): the reports.

A new task subclasses :class:`Task`, is added to :data:`TASKS` under the registry's task name, and refuses
what it cannot do in :meth:`check_config` (progressive sizes and distillation are classification's).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Optional

import torch
from torch import nn

from ..data import DATASETS, SEGMENTATION_DATASETS, DataBundle, build_data, dataset_name
from ..data.detection import DETECTION_DATASETS, build_detection_data, collate_detection, detection_dataset_name
from ..data.segmentation import segmentation_dataset_name
from ..data.segmentation_bundle import build_segmentation_bundle
from ..registry import get_entry
from ..segmentation.metrics import IGNORE_INDEX
from .detection_eval import DetectionResult, run_detection_eval
from .evaluate import EvalResult, run_eval
from .plots import TOP1_CURVES, Curves
from .segmentation_eval import SegmentationResult, collate_segmentation, run_segmentation_eval

__all__ = ["StepOutput", "Task", "ClassificationTask", "SegmentationTask", "DetectionTask", "TASKS", "task_for_model",
           "task_name_of"]


@dataclass
class StepOutput:
    loss: torch.Tensor  # scalar, what is back-propagated
    outputs: Optional[torch.Tensor]  # logits (for distillation), or None
    hits: torch.Tensor | int  # the training statistic's numerator over this batch
    total: torch.Tensor | int  # and its denominator (0: the task has none)


class Task:
    """The base: what every task must say (see the module's docstring for the contract)."""

    name: str = ""
    default_dataset: str = ""
    datasets: tuple[str, ...] = ()
    selection_metric: str = ""
    metric_label: str = ""  # how the selection metric is named in reports and plots ("top-1", "mIoU")
    train_statistic: Optional[str] = None
    collate_fn: Optional[Callable[[list[Any]], Any]] = None
    label_smoothing: Optional[float] = None
    ema_decay: Optional[float] = None
    curves: Curves = TOP1_CURVES

    def __init__(self) -> None:
        self.criterion: Optional[nn.Module] = None

    def dataset_name(self, name: str) -> str:
        raise NotImplementedError

    def check_config(self, config: Any) -> None:
        """Refuse what this task cannot train with; the base refuses the classification-only options."""
        refused = (
            ("--progressive-sizes", bool(config.progressive_sizes), "it resizes a batch's images, not their targets"),
            ("--teacher", bool(config.teachers), "it distils one class distribution per image"),
            (f"--augment {config.augment}", config.augment != "none",
             "a policy for whole-image labels: its geometric operations would move images away from their targets"),
            ("--random-erasing", bool(config.random_erasing), "it erases image pixels and leaves their targets"),
        )
        for flag, given, why in refused:
            if given:
                raise ValueError(f"{flag} is a classification option ({why}); {config.model} is a {self.name} model")

    def build_data(self, config: Any) -> DataBundle:
        raise NotImplementedError

    def model_options(self, bundle: DataBundle) -> dict[str, Any]:
        return {}

    def bind(self, settings: Any) -> None:
        raise NotImplementedError

    def to_device(self, batch: Any, device: torch.device, channels_last: bool) -> tuple[Any, Any, int]:
        images, targets = batch
        images = images.to(device, non_blocking=True)
        if channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        return images, targets.to(device, non_blocking=True), int(images.shape[0])

    def step(self, model: nn.Module, inputs: Any, targets: Any) -> StepOutput:
        raise NotImplementedError

    def evaluate(self, model: nn.Module, dataset: Any, bundle: DataBundle, **options: Any) -> Any:
        """``options``: those of :func:`~.evaluate.run_eval` (device, batch_size, workers, limit_batches,
        amp_dtype, channels_last, info, progress, desc, forward)."""
        raise NotImplementedError

    def eval_batch_size(self, train_batch_size: int) -> int:
        return train_batch_size

    def test_scalars(self, result: Any) -> dict[str, float]:
        """The test numbers results.json and the training record keep (``test_<key>``)."""
        return {f"test_{k}": v for k, v in result.scalars().items()}

    def per_class(self, result: Any, class_names: list[str]) -> dict[str, Any]:
        """The per-class figures results.json keeps."""
        raise NotImplementedError

    def epoch_summary(self, record: dict[str, Any]) -> str:
        """The part of an epoch's log line after the loss: training statistic and validation metric."""
        raise NotImplementedError

    def test_summary(self, results: dict[str, Any]) -> str:
        """The first part of ``mobilenets train``'s closing line, from results.json's numbers."""
        raise NotImplementedError

    def test_title(self, arch: str, dataset: str, split: str, result: Any) -> str:
        """The confusion plot's title."""
        raise NotImplementedError


class ClassificationTask(Task):
    name = "classification"
    default_dataset = "fashion_mnist"
    datasets = DATASETS
    selection_metric = "val_top1"
    metric_label = "top-1"
    train_statistic = "top1"

    def dataset_name(self, name: str) -> str:
        return dataset_name(name)

    def check_config(self, config: Any) -> None:
        if config.classes is not None:
            raise ValueError("--classes names the mask values of a segmentation mask folder; classification "
                             "takes its classes from the data")

    def build_data(self, config: Any) -> DataBundle:
        return build_data(
            config.dataset, config.data_dir, val_fraction=config.val_fraction, seed=config.seed,
            image_size=config.image_size, augment=config.augment, random_erasing=config.random_erasing,
            allow_download=config.allow_download,
        )

    def bind(self, settings: Any) -> None:
        self.criterion = nn.CrossEntropyLoss(label_smoothing=settings.label_smoothing)

    def step(self, model: nn.Module, inputs: torch.Tensor, targets: torch.Tensor) -> StepOutput:
        logits = model(inputs)
        loss = self.criterion(logits.float(), targets)
        hits = (logits.detach().argmax(dim=1) == targets).sum()
        return StepOutput(loss, logits, hits, targets.numel())

    def evaluate(self, model: nn.Module, dataset: Any, bundle: DataBundle, **options: Any) -> EvalResult:
        return run_eval(model, dataset, bundle.num_classes, **options)

    def eval_batch_size(self, train_batch_size: int) -> int:
        return max(256, train_batch_size)

    def test_scalars(self, result: EvalResult) -> dict[str, float]:
        return {"test_top1": result.top1, "test_top5": result.top5}

    def per_class(self, result: EvalResult, class_names: list[str]) -> dict[str, Any]:
        return {"per_class": result.to_dict(class_names)["per_class"]}

    def epoch_summary(self, record: dict[str, Any]) -> str:
        shown = f", val top-1 {record['val_top1']:.2%}" if "val_top1" in record else ""
        return f"train top-1 {record['train_top1']:.2%}{shown}"

    def test_summary(self, results: dict[str, Any]) -> str:
        return f"test top-1 {results['test_top1']:.2%}, top-5 {results['test_top5']:.2%}"

    def test_title(self, arch: str, dataset: str, split: str, result: EvalResult) -> str:
        return f"{arch} on {dataset} {split}: top-1 {result.top1:.2%}"


class SegmentationTask(Task):
    """Per-pixel cross-entropy, :data:`IGNORE_INDEX` (255) pixels left out; the model is chosen by validation
    mIoU (:mod:`mobilenets.segmentation.metrics`)."""

    name = "segmentation"
    default_dataset = "fashion_mnist_scenes"
    datasets = SEGMENTATION_DATASETS
    selection_metric = "val_miou"
    metric_label = "mIoU"
    train_statistic = "pixel_accuracy"
    collate_fn = staticmethod(collate_segmentation)
    label_smoothing = 0.0  # the recipes' 0.1 is for classification; torchvision's segmentation references use none
    curves = Curves("%", (("train_pixel_accuracy", "train pixel accuracy (augmented)"),
                          ("val_pixel_accuracy", "validation pixel accuracy"), ("val_miou", "validation mIoU")))

    def dataset_name(self, name: str) -> str:
        return segmentation_dataset_name(name)

    def check_config(self, config: Any) -> None:
        super().check_config(config)
        if config.classes is not None and config.dataset != "mask_folder":
            raise ValueError(f"--classes names the mask values of a mask_folder dataset; {config.dataset} has its "
                             "own classes")

    def build_data(self, config: Any) -> DataBundle:
        return build_segmentation_bundle(config.dataset, config.data_dir, val_fraction=config.val_fraction,
                                         seed=config.seed, image_size=config.image_size, classes=config.classes)

    def bind(self, settings: Any) -> None:
        self.criterion = nn.CrossEntropyLoss(ignore_index=IGNORE_INDEX, label_smoothing=settings.label_smoothing)

    def step(self, model: nn.Module, inputs: torch.Tensor, targets: torch.Tensor) -> StepOutput:
        logits = model(inputs)
        loss = self.criterion(logits.float(), targets)
        scored = targets != IGNORE_INDEX
        hits = ((logits.detach().argmax(dim=1) == targets) & scored).sum()
        return StepOutput(loss, logits, hits, scored.sum())

    def evaluate(self, model: nn.Module, dataset: Any, bundle: DataBundle, **options: Any) -> SegmentationResult:
        return run_segmentation_eval(model, dataset, bundle.class_names, **options)

    def per_class(self, result: SegmentationResult, class_names: list[str]) -> dict[str, Any]:
        report = result.to_dict(class_names)
        return {"per_class_iou": report["per_class_iou"], "test_mean_accuracy": report["mean_accuracy"]}

    def epoch_summary(self, record: dict[str, Any]) -> str:
        shown = f", val mIoU {record['val_miou']:.2%}" if "val_miou" in record else ""
        return f"train pixel accuracy {record['train_pixel_accuracy']:.2%}{shown}"

    def test_summary(self, results: dict[str, Any]) -> str:
        return f"test mIoU {results['test_miou']:.2%}, pixel accuracy {results['test_pixel_accuracy']:.2%}"

    def test_title(self, arch: str, dataset: str, split: str, result: SegmentationResult) -> str:
        return f"{arch} on {dataset} {split} (pixels): mIoU {result.miou:.2%}"


class DetectionTask(Task):
    """SSDLite's own losses (torchvision's SSD: smooth-L1 box regression and hard-negative-mined
    cross-entropy, summed), crowd regions left out of them; the model is chosen by validation mAP@.5 (COCO's,
    :mod:`mobilenets.detection.metrics`)."""

    name = "detection"
    default_dataset = "fashion_mnist_scenes"
    datasets = DETECTION_DATASETS
    selection_metric = "val_map50"
    metric_label = "mAP@.5"
    collate_fn = staticmethod(collate_detection)
    label_smoothing = 0.0  # none: the loss is torchvision's SSD loss, which takes no smoothing
    # no EMA unless asked, as torchvision's detection references: in a run of a few thousand steps the recipes'
    # 0.999 average still holds much of the untrained start, and scores below the raw weights
    ema_decay = 0.0
    curves = Curves("COCO mAP (%)", (("val_map50", "validation mAP@.5"), ("val_map", "validation mAP@[.5:.95]")),
                    "train (box regression + classification)")

    def dataset_name(self, name: str) -> str:
        return detection_dataset_name(name)

    def check_config(self, config: Any) -> None:
        super().check_config(config)
        if config.classes is not None:
            raise ValueError("--classes names mask values of a segmentation mask folder; detection data names its "
                             "classes (COCO's categories)")
        if config.label_smoothing is not None:
            raise ValueError("--label-smoothing applies to cross-entropy on labels; SSDLite's loss is torchvision's "
                             "SSD loss, without smoothing")

    def build_data(self, config: Any) -> DataBundle:
        return build_detection_data(config.dataset, config.data_dir, val_fraction=config.val_fraction,
                                    seed=config.seed, image_size=config.image_size)

    def model_options(self, bundle: DataBundle) -> dict[str, Any]:
        return {"image_size": bundle.image_size}

    def bind(self, settings: Any) -> None:
        self.criterion = None  # the detector computes its losses

    def to_device(self, batch: Any, device: torch.device, channels_last: bool) -> tuple[Any, Any, int]:
        images, targets = batch
        images = [image.to(device, non_blocking=True) for image in images]
        kept = []
        for target in targets:
            # crowd regions are not objects to regress to (torchvision's references drop them too)
            solo = target["iscrowd"] == 0 if "iscrowd" in target else slice(None)
            kept.append({"boxes": target["boxes"][solo].to(device, non_blocking=True),
                         "labels": target["labels"][solo].to(device, non_blocking=True)})
        return images, kept, len(images)

    def step(self, model: nn.Module, inputs: Any, targets: Any) -> StepOutput:
        losses = model(inputs, targets)
        return StepOutput(sum(losses.values()), None, 0, 0)

    def evaluate(self, model: nn.Module, dataset: Any, bundle: DataBundle, **options: Any) -> DetectionResult:
        return run_detection_eval(model, dataset, bundle.class_names, **options)

    def test_scalars(self, result: DetectionResult) -> dict[str, float]:
        return {"test_map": result.map, "test_map50": result.map50, "test_map75": result.metrics["map75"]}

    def per_class(self, result: DetectionResult, class_names: list[str]) -> dict[str, Any]:
        return {"per_class_ap": result.metrics["per_class"], "per_class_ap50": result.metrics["per_class_ap50"]}

    def epoch_summary(self, record: dict[str, Any]) -> str:
        if "val_map50" not in record:
            return "no validation split"
        return f"val mAP@.5 {record['val_map50']:.2%}, mAP@[.5:.95] {record['val_map']:.2%}"

    def test_summary(self, results: dict[str, Any]) -> str:
        return f"test mAP@.5 {results['test_map50']:.2%}, mAP@[.5:.95] {results['test_map']:.2%}"

    def test_title(self, arch: str, dataset: str, split: str, result: DetectionResult) -> str:
        return f"{arch} on {dataset} {split}: mAP@.5 {result.map50:.2%}"


TASKS: dict[str, type[Task]] = {"classification": ClassificationTask, "segmentation": SegmentationTask,
                                "detection": DetectionTask}


def task_name_of(model: str) -> str:
    """The registry's task of ``model``; a name the registry does not know is classification's (a run given its
    own module names it freely; an unknown model to build is refused when it is built)."""
    try:
        return get_entry(model).task
    except ValueError:
        return "classification"


def task_for_model(model: str) -> Task:
    """A new :class:`Task` for the registered model ``model``."""
    name = task_name_of(model)
    if name not in TASKS:
        raise ValueError(f"{model} is a {name} model; mobilenets train takes {', '.join(TASKS)} models")
    return TASKS[name]()
