"""Class probabilities for image files, preprocessed the way the checkpoint's metadata says.

Files are decoded by :func:`mobilenets.data.load_image`, the loader ImageFolder training and evaluation use
(16-bit and float ranges, palettes, alpha onto white, CMYK, EXIF orientation), into the model's ``in_chans``
(1: luminance, 3: RGB); then each image is resized so its shorter side is the published weights' ``preprocessing.resize``
(with its interpolation) or the training ``eval_resize``, center-cropped to the input size and normalised with the stored mean/std.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional, Sequence

import torch
from PIL import Image

from ..data.images import CHANNELS, convert_image, load_image
from ..deploy.runtime import make_predictor
from ..detection.options import DetectionOptions
from ..segmentation import SegmentationModel
from .detection_eval import predict_detections
from .evaluate import PREDICT_BACKENDS, load_checkpoint, resolve_checkpoint
from .segmentation_predict import predict_masks

__all__ = ["preprocess", "preprocess_file", "predict_files"]

_INTERPOLATION = ("bilinear", "bicubic", "nearest")


def preprocess(image: Image.Image, meta: dict[str, Any]) -> torch.Tensor:
    from torchvision.transforms import v2

    in_chans, height, width = (int(v) for v in meta["input_size"])
    # published weights carry their source's evaluation preprocessing; trained runs their eval_resize
    published = meta.get("preprocessing") or {}
    resize = int(published.get("resize") or (meta.get("training") or {}).get("eval_resize") or max(height, width))
    interpolation = published.get("interpolation", "bilinear")
    if interpolation not in _INTERPOLATION:
        raise ValueError(
            f"unknown interpolation {interpolation!r} in the checkpoint; accepted: {', '.join(_INTERPOLATION)}"
        )
    pipeline = v2.Compose([
        v2.ToImage(),
        v2.Resize(resize, interpolation=v2.InterpolationMode(interpolation), antialias=True),
        v2.CenterCrop((height, width)),
        v2.ToDtype(torch.float32, scale=True),
        v2.Normalize(list(meta["mean"]), list(meta["std"])),
    ])
    return pipeline(convert_image(image, in_chans))


def preprocess_file(path: str | Path, meta: dict[str, Any]) -> torch.Tensor:
    """The model input for the image file ``path``: what ``predict`` feeds the model."""
    return preprocess(load_image(path, channels=int(meta["input_size"][0])), meta)


@torch.no_grad()
def predict_files(
    checkpoint: Path, images: Sequence[Path], top_k: Optional[int] = None, batch_size: int = 64,
    backend: str = "pytorch", threads: Optional[int] = None, output_dir: Optional[Path] = None,
    score_threshold: Optional[float] = None,
) -> list[dict[str, Any]]:
    """Top-k classes (default 5) of each image. ``backend``: ``pytorch`` (the model as loaded), or ``eager``,
    ``compile``, ``onnxruntime`` from :mod:`mobilenets.deploy` (INT8 needs calibration data: use ``evaluate`` or
    the API). A segmentation checkpoint writes each image's mask and overlay PNGs into ``output_dir`` (default:
    the current folder) instead (:func:`~.segmentation_predict.predict_masks`); a detector writes each image
    with its boxes scored at least ``score_threshold`` (default 0.5) drawn into ``output_dir/NAME_detections.png``
    and returns them (:func:`~.detection_eval.predict_detections`)."""
    if top_k is not None and top_k < 1:
        raise ValueError(f"--top-k must be >= 1, got {top_k}")
    if backend not in PREDICT_BACKENDS:
        raise ValueError(f"unknown backend {backend!r} for predict; accepted: {', '.join(PREDICT_BACKENDS)}")
    checkpoint = resolve_checkpoint(checkpoint)
    model, meta = load_checkpoint(checkpoint)
    model.eval()
    if isinstance(getattr(model, "options", None), DetectionOptions):
        if top_k is not None:
            raise ValueError(f"--top-k ranks the classes of a whole image; {checkpoint} holds a detector, whose "
                             "predict draws its boxes (--score-threshold, --output-dir)")
        if backend != "pytorch":
            raise ValueError(f"detectors predict with --backend pytorch, not {backend!r} (NMS runs in Python)")
        return predict_detections(model, meta, images, Path("." if output_dir is None else output_dir),
                                  0.5 if score_threshold is None else score_threshold)
    if score_threshold is not None:
        raise ValueError(f"--score-threshold selects a detector's boxes; {checkpoint} holds no detector")
    if isinstance(model, SegmentationModel):
        if top_k is not None:
            raise ValueError(f"--top-k ranks the classes of a whole image; {checkpoint} holds a segmentation model, "
                             "whose predict writes masks (--output-dir)")
        return predict_masks(model, meta, images, Path("." if output_dir is None else output_dir), backend, threads)
    if output_dir is not None:
        raise ValueError(f"--output-dir is where a segmentation model's mask PNGs go; {checkpoint} holds a "
                         "classification model, whose predictions are printed")
    top_k = 5 if top_k is None else top_k
    if int(meta["input_size"][0]) not in CHANNELS:
        raise ValueError(f"{checkpoint}: the model takes {meta['input_size'][0]} channels; image files give 1 or 3")
    names = meta.get("class_names") or [str(i) for i in range(model.num_classes)]
    k = min(top_k, len(names))
    tensors = [preprocess_file(p, meta) for p in images]
    run = model
    if backend != "pytorch":
        run = make_predictor(model, backend, threads=threads)
    results: list[dict[str, Any]] = []
    for start in range(0, len(tensors), batch_size):
        batch = torch.stack(tensors[start : start + batch_size])
        probs = run(batch).float().softmax(dim=1)
        top = probs.topk(k, dim=1)
        for offset, (values, indices) in enumerate(zip(top.values, top.indices)):
            results.append({
                "image": str(images[start + offset]),
                "predictions": [
                    {"class": names[i], "index": int(i), "probability": float(v)} for v, i in zip(values, indices)
                ],
            })
    return results
