"""Class probabilities for image files, preprocessed the way the checkpoint's metadata says.

Any size and mode is accepted: 16-bit and 32-bit grayscale are rescaled to 8 bits by their value range,
alpha is composited onto white (a transparent background is not black), palettes and CMYK are converted,
then the image becomes the model's ``in_chans`` (1: luminance, 3: RGB), is resized so its shorter side is
the training ``eval_resize``, center-cropped to the input size and normalised with the stored mean/std.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

__all__ = ["to_model_mode", "preprocess", "predict_files"]


def _to_8bit(image: Image.Image) -> Image.Image:
    """16-bit ("I;16*"), 32-bit integer ("I") and float ("F") images to 8-bit "L" by their dtype's range."""
    array = np.asarray(image)
    if image.mode.startswith("I;16"):
        scale = 65535.0
    elif image.mode == "F":
        scale = 1.0 if float(array.max(initial=0.0)) <= 1.0 else float(array.max())
    else:  # "I": 16-bit PNGs open as "I" in Pillow; use the 16-bit range unless values exceed it
        scale = 65535.0 if int(array.max(initial=0)) <= 65535 else float(array.max())
    scaled = np.clip(array.astype(np.float64) / max(scale, 1e-12) * 255.0 + 0.5, 0, 255).astype(np.uint8)
    return Image.fromarray(scaled, mode="L")


def to_model_mode(image: Image.Image, in_chans: int) -> Image.Image:
    if image.mode.startswith("I") or image.mode == "F":
        image = _to_8bit(image)
    if image.mode == "P":
        image = image.convert("RGBA")
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "RGBa"):
        background = Image.new("RGBA", image.size, (255, 255, 255, 255))
        image = Image.alpha_composite(background, image.convert("RGBA"))
    if in_chans == 1:
        return image.convert("L")
    if in_chans == 3:
        return image.convert("RGB")
    raise ValueError(f"models with in_chans={in_chans} take tensors, not image files; predict supports 1 or 3 channels")


def preprocess(image: Image.Image, meta: dict[str, Any]) -> torch.Tensor:
    from torchvision.transforms import v2

    in_chans, height, width = (int(v) for v in meta["input_size"])
    resize = int((meta.get("training") or {}).get("eval_resize") or max(height, width))
    pipeline = v2.Compose([
        v2.ToImage(),
        v2.Resize(resize, antialias=True),
        v2.CenterCrop((height, width)),
        v2.ToDtype(torch.float32, scale=True),
        v2.Normalize(list(meta["mean"]), list(meta["std"])),
    ])
    return pipeline(to_model_mode(image, in_chans))


def _open(path: Path) -> Image.Image:
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such image file")
    try:
        with Image.open(path) as image:
            image.load()
            return image.copy()
    except (UnidentifiedImageError, OSError, SyntaxError) as exc:
        raise ValueError(f"{path}: not a readable image ({exc})") from None


@torch.no_grad()
def predict_files(
    checkpoint: Path, images: Sequence[Path], top_k: int = 5, batch_size: int = 64, backend: str = "pytorch",
    threads: Optional[int] = None,
) -> list[dict[str, Any]]:
    """Top-k classes of each image. ``backend``: ``pytorch`` (the model as loaded), or ``eager``, ``compile``,
    ``onnxruntime`` from :mod:`mobilenets.deploy` (INT8 needs calibration data: use ``evaluate`` or the API)."""
    from .evaluate import PREDICT_BACKENDS, load_checkpoint, resolve_checkpoint

    if top_k < 1:
        raise ValueError(f"--top-k must be >= 1, got {top_k}")
    if backend not in PREDICT_BACKENDS:
        raise ValueError(f"unknown backend {backend!r} for predict; accepted: {', '.join(PREDICT_BACKENDS)}")
    checkpoint = resolve_checkpoint(checkpoint)
    model, meta = load_checkpoint(checkpoint)
    model.eval()
    names = meta.get("class_names") or [str(i) for i in range(model.num_classes)]
    k = min(top_k, len(names))
    tensors = [preprocess(_open(Path(p)), meta) for p in images]
    run = model
    if backend != "pytorch":
        from ..deploy import make_predictor

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
