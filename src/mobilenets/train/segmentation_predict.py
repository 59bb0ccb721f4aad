"""Segmentation masks for image files: ``mobilenets predict`` with a segmentation checkpoint.

Each image is preprocessed as the evaluation split of its training run (:class:`~mobilenets.data.segmentation.
JointTransform` with ``train=False``: the shorter side resized to the input size, bilinear and antialiased,
normalised with the checkpoint's mean/std), the logits are resized back to the image's own size (bilinear) and
their argmax is the mask. Two PNGs are written per image: ``NAME_mask.png``, the class indices as a palette
PNG (VOC's palette and layout: :func:`mobilenets.data.segmentation.read_mask` reads it back), and
``NAME_overlay.png``, the image with each pixel's class colour blended over it at :data:`OVERLAY_ALPHA` and a
legend of the classes found, with their names and shares of the pixels, on the right.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw

from ..checkpoint import atomic_write
from ..data.images import CHANNELS, load_image
from ..deploy.runtime import make_predictor

__all__ = ["OVERLAY_ALPHA", "SEGMENTATION_PREDICT_BACKENDS", "palette", "overlay", "predict_masks"]

OVERLAY_ALPHA = 0.5
# images of any size: the backends that run a module at whatever size it is given
SEGMENTATION_PREDICT_BACKENDS = ("pytorch", "eager", "compile")
_SWATCH = 14  # legend: side of a colour square, in pixels
_LEGEND_WIDTH = 180


def palette() -> np.ndarray:
    """(256, 3) uint8: Pascal VOC's colour of each class index (bits of the index spread over R, G and B)."""
    colours = np.zeros((256, 3), dtype=np.uint8)
    for index in range(256):
        value, r, g, b = index, 0, 0, 0
        for bit in range(8):
            r |= ((value >> 0) & 1) << (7 - bit)
            g |= ((value >> 1) & 1) << (7 - bit)
            b |= ((value >> 2) & 1) << (7 - bit)
            value >>= 3
        colours[index] = (r, g, b)
    return colours


def overlay(image: np.ndarray, mask: np.ndarray, alpha: float = OVERLAY_ALPHA) -> np.ndarray:
    """``image`` (H, W, 3) uint8 with each pixel's class colour (``mask`` (H, W) class indices) blended over it:
    ``round((1 - alpha) * image + alpha * colour)``."""
    if image.shape[:2] != mask.shape:
        raise ValueError(f"image {image.shape[:2]} and mask {mask.shape} differ in size")
    colours = palette()[mask]
    blended = (1.0 - alpha) * image.astype(np.float64) + alpha * colours.astype(np.float64)
    return np.clip(np.rint(blended), 0, 255).astype(np.uint8)


def _legend(height: int, shares: list[tuple[int, str, float]]) -> Image.Image:
    rows = max(height, 8 + (_SWATCH + 6) * len(shares))
    panel = Image.new("RGB", (_LEGEND_WIDTH, rows), (255, 255, 255))
    draw = ImageDraw.Draw(panel)
    colours = palette()
    for row, (index, name, share) in enumerate(shares):
        top = 6 + row * (_SWATCH + 6)
        draw.rectangle((6, top, 6 + _SWATCH, top + _SWATCH), fill=tuple(int(c) for c in colours[index]),
                       outline=(0, 0, 0))
        draw.text((12 + _SWATCH, top + 1), f"{name} {share:.1%}", fill=(0, 0, 0))
    return panel


def _save_png(image: Image.Image, path: Path) -> None:
    atomic_write(path, lambda tmp: image.save(tmp, format="PNG"))


@torch.no_grad()
def predict_masks(
    model: torch.nn.Module, meta: dict[str, Any], images: Sequence[Path], output_dir: Path,
    backend: str = "pytorch", threads: Optional[int] = None,
) -> list[dict[str, Any]]:
    """Write ``NAME_mask.png`` and ``NAME_overlay.png`` into ``output_dir`` for each image; return, per image,
    the files written and the share of its pixels of each class found (largest first)."""
    from torchvision.transforms import v2

    if backend not in SEGMENTATION_PREDICT_BACKENDS:
        raise ValueError(f"backend {backend!r}: segmentation predict takes images of any size and runs on "
                         f"{', '.join(SEGMENTATION_PREDICT_BACKENDS)}; measure other backends with `mobilenets "
                         "evaluate --backend`")
    in_chans = int(meta["input_size"][0])
    if in_chans not in CHANNELS:
        raise ValueError(f"the model takes {in_chans} channels; image files give 1 or 3")
    stems = [Path(p).stem for p in images]
    repeated = sorted({s for s in stems if stems.count(s) > 1})
    if repeated:
        raise ValueError(f"images with the same name would write the same PNGs: {', '.join(repeated)}")
    output_dir = Path(output_dir)
    if output_dir.exists() and not output_dir.is_dir():
        raise ValueError(f"--output-dir {output_dir} is a file; give a folder")
    names = meta.get("class_names") or [str(i) for i in range(model.num_classes)]
    size = int(meta["input_size"][-1])
    preprocess = v2.Compose([v2.ToImage(), v2.Resize(size, antialias=True), v2.ToDtype(torch.float32, scale=True),
                             v2.Normalize(list(meta["mean"]), list(meta["std"]))])
    model.eval()
    run = model if backend == "pytorch" else make_predictor(model, backend, threads=threads)
    decoded = [load_image(path, channels=in_chans) for path in images]  # every file read before any is written
    output_dir.mkdir(parents=True, exist_ok=True)
    results = []
    for path, picture in zip(images, decoded):
        logits = run(preprocess(picture)[None]).float()
        logits = F.interpolate(logits, size=(picture.height, picture.width), mode="bilinear", align_corners=False)
        mask = logits[0].argmax(dim=0).to(torch.uint8).numpy()
        counts = np.bincount(mask.ravel(), minlength=len(names))
        shares = [(int(i), names[i], float(counts[i] / mask.size)) for i in np.argsort(-counts, kind="stable")
                  if counts[i]]
        mask_png = Image.frombytes("P", (mask.shape[1], mask.shape[0]), mask.tobytes())
        mask_png.putpalette(palette().ravel().tolist())
        rgb = np.asarray(picture.convert("RGB"))
        combined = Image.new("RGB", (rgb.shape[1] + _LEGEND_WIDTH, max(rgb.shape[0], 8 + (_SWATCH + 6) * len(shares))),
                             (255, 255, 255))
        combined.paste(Image.fromarray(overlay(rgb, mask)), (0, 0))
        combined.paste(_legend(rgb.shape[0], shares), (rgb.shape[1], 0))
        stem = Path(path).stem
        mask_path, overlay_path = output_dir / f"{stem}_mask.png", output_dir / f"{stem}_overlay.png"
        _save_png(mask_png, mask_path)
        _save_png(combined, overlay_path)
        results.append({"image": str(path), "mask_png": str(mask_path), "overlay_png": str(overlay_path),
                        "classes": {name: share for _, name, share in shares}})
    return results
