"""What every converter shares: the description of a source model and the build-then-fill step."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping, Optional

from ..models.base import IMAGENET_MEAN, IMAGENET_STD, MobileNet
from ..registry import create_model, get_entry
from ..segmentation.models import SegmentationModel
from ._mapping import ConversionError, Queues, QueueFor, copy_into, count, target_layers

__all__ = ["SourceSpec", "build_converted", "INCEPTION_MEAN", "INCEPTION_STD", "width_from_suffix"]

# TensorFlow models take inputs in [-1, 1]: x / 127.5 - 1 = (x / 255 - 0.5) / 0.5
INCEPTION_MEAN = (0.5, 0.5, 0.5)
INCEPTION_STD = (0.5, 0.5, 0.5)


@dataclass(frozen=True)
class SourceSpec:
    """A source model resolved to ours: which architecture, width and options reproduce it exactly.

    ``options`` are :class:`~mobilenets.ModelOptions` overrides (stored in the checkpoint by ``save``);
    ``mean``/``std`` the preprocessing the source's weights expect, on inputs scaled to [0, 1].
    """

    library: str
    source_arch: str
    arch: str
    width_mult: float
    options: Mapping[str, Any] = field(default_factory=dict)
    mean: tuple[float, ...] = IMAGENET_MEAN
    std: tuple[float, ...] = IMAGENET_STD

    @property
    def what(self) -> str:
        return f"{self.arch} width_mult={self.width_mult:g}"


def width_from_suffix(digits: str) -> float:
    """timm / Keras-file width suffix: "075" -> 0.75, "140" -> 1.4."""
    return int(digits) / 100


def _infer_in_chans(spec: SourceSpec, probe: MobileNet, queues: Queues, queue_for: QueueFor, label: str) -> int:
    stem = target_layers(probe)[0][1]
    queue = queues.get(queue_for(stem, queues), [])
    if not queue:
        raise ConversionError(f"{label}: holds no convolution weights; it is not a {spec.library} model file")
    weight = queue[0].tensors.get("weight")
    if weight is None or weight.ndim != 4:
        raise ConversionError(f"{label}: the first layer {queue[0].describe()} is not the stem convolution")
    return int(weight.shape[1])


def _infer_num_classes(spec: SourceSpec, probe: MobileNet, queues: Queues, queue_for: QueueFor, label: str) -> int:
    targets = target_layers(probe)
    have, need = count(queues), len(targets)
    if have == need:
        classifier = targets[-1][1]
        last = queues[queue_for(classifier, queues)][-1]
        return int(last.tensors["weight"].shape[0])
    if have == need - 1:
        return 0  # saved without a classifier (include_top=False, num_classes=0)
    if have == need - 2 and probe.head_hidden_size != probe.num_features:
        raise ConversionError(
            f"{label}: holds {have} layers, {spec.what} has {need}: the source lacks the classifier *and* the "
            f"pooled {probe.head_hidden_size}-wide head layer (Keras include_top=False drops both); convert a "
            "file saved with its top"
        )
    raise ConversionError(
        f"{label}: holds {have} weight layers but {spec.what} has {need} ({need - 1} without classifier); "
        f"it is a different architecture (given: {spec.library} {spec.source_arch})"
    )


def build_converted(
    spec: SourceSpec, queues: Queues, queue_for: QueueFor, label: str, file: Optional[str] = None
) -> MobileNet:
    """Build the model ``spec`` describes, sized from the source (input channels, classes), and fill it.

    ``label`` names the source in errors; ``file`` (the source file's name, None for an in-memory state dict)
    goes into the ``converted_from`` metadata.
    """
    if get_entry(spec.arch).task == "segmentation":
        return _finish(spec, _build_segmentation(spec, queues, queue_for, label), file)
    if get_entry(spec.arch).task == "detection":
        return _finish(spec, _build_detection(spec, queues, queue_for, label), file)
    # layer count and order do not depend on in_chans: one probe sizes both ends
    probe = create_model(spec.arch, width_mult=spec.width_mult, num_classes=1, **spec.options)
    in_chans = _infer_in_chans(spec, probe, queues, queue_for, label)
    num_classes = _infer_num_classes(spec, probe, queues, queue_for, label)
    if in_chans == probe.options.in_chans:
        model = probe  # every weight is overwritten below; only the classifier changes size
        model.reset_classifier(num_classes)
    else:
        model = create_model(
            spec.arch, width_mult=spec.width_mult, num_classes=num_classes, in_chans=in_chans, **spec.options
        )
    copy_into(model, queues, queue_for, label, spec.what)
    return _finish(spec, model, file)


def _build_segmentation(spec: SourceSpec, queues: Queues, queue_for: QueueFor, label: str) -> SegmentationModel:
    """A segmentation model sized from the source: input channels from its first conv, classes from its last
    layer (a classifier, of the head or of the auxiliary head), ``aux_head`` when it has ``aux_classifier``."""
    layers = [layer for queue in queues.values() for layer in queue]
    if not layers or layers[0].kind != "conv" or layers[-1].kind != "conv":
        raise ConversionError(f"{label}: does not start and end with a convolution; it is not a {spec.library} "
                              f"{spec.source_arch}")
    aux = any("aux_classifier" in layer.name.split(".") for layer in layers)
    model = create_model(
        spec.arch, width_mult=spec.width_mult, num_classes=int(layers[-1].tensors["weight"].shape[0]),
        in_chans=int(layers[0].tensors["weight"].shape[1]), aux_head=aux, **spec.options,
    )
    copy_into(model, queues, queue_for, label, spec.what)
    return model


def _build_detection(spec: SourceSpec, queues: Queues, queue_for: QueueFor, label: str) -> Any:
    """A detector sized from the source: input channels from its first conv, classes from the last layers of
    its heads (torchvision's SSD: ``num_classes x boxes`` and ``4 x boxes`` outputs on the last map)."""
    layers = [layer for queue in queues.values() for layer in queue]
    heads = {part: [layer for layer in layers if part in layer.name.split(".")]
             for part in ("classification_head", "regression_head")}
    if not layers or not all(heads.values()):
        raise ConversionError(f"{label}: has no classification_head and regression_head; it is not a "
                              f"{spec.library} {spec.source_arch}")
    boxes = int(heads["regression_head"][-1].tensors["weight"].shape[0]) // 4
    model = create_model(
        spec.arch, num_classes=int(heads["classification_head"][-1].tensors["weight"].shape[0]) // boxes,
        in_chans=int(layers[0].tensors["weight"].shape[1]), width_mult=spec.width_mult, **spec.options,
    )
    copy_into(model, queues, queue_for, label, spec.what)
    return model


def _finish(spec: SourceSpec, model: Any, file: Optional[str]) -> Any:
    """Eval mode, the source's preprocessing and where the weights came from, in the model's info."""
    num_classes = model.num_classes
    model.eval()
    extra: dict[str, Any] = {
        "converted_from": {"library": spec.library, "arch": spec.source_arch, "file": file}
    }
    if num_classes == 1001:
        # TensorFlow-slim heads: logit 0 is "background", ImageNet class i is logit i + 1
        extra["background_class"] = True
    model.info = model.info.updated(mean=spec.mean, std=spec.std, extra=extra)
    return model
