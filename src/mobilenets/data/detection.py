"""Detection data: boxes and labels of the Fashion-MNIST scenes, the user's own data in COCO JSON (instances)
format, augmentation through torchvision's transforms v2, and the collate function (docs/detection.md).

Every dataset yields ``(image, target)``: before a transform, a ``tv_tensors.Image`` (uint8, C x H x W) and a
dict with ``boxes`` (``tv_tensors.BoundingBoxes``, XYXY in pixels), ``labels`` (int64, 1..K; 0 is the
background, as torchvision's detectors count) and ``iscrowd`` (int64 0/1: COCO's crowd regions, which the
loss leaves out and the COCO evaluation ignores). ``classes[label]`` names a label; ``classes[0]`` is
``"background"``.
"""

from __future__ import annotations

import json
import math
import os
import warnings
from pathlib import Path
from typing import Any, Optional, Sequence

import torch
from torch.utils.data import Dataset

from ..detection.options import SSDLITE_MEAN, SSDLITE_STD
from .base import DataBundle, TransformedView, held_out, registered_name, training_record_data
from .images import load_image
from .scenes import SCENE_CLASSES, SCENE_COUNTS, SCENE_SIZE, FashionMNISTScenes, scene_splits

__all__ = [
    "DETECTION_DATASETS", "DETECTION_AUGMENTATIONS", "SceneDetection", "CocoDetection", "DetectionTransform",
    "SCENE_COUNTS", "SCENE_SIZE", "build_detection_data", "collate_detection", "detection_dataset_name",
    "detection_checkpoint_data",
]

DETECTION_DATASETS = ("fashion_mnist_scenes", "coco")
# torchvision's detection references (references/detection/presets.py): "ssdlite" is the recipe its
# ssdlite320_mobilenet_v3_large was trained with, "ssd" adds photometric distortion and zoom-out (SSD paper)
DETECTION_AUGMENTATIONS = ("ssdlite", "ssd", "flip", "none")
COCO_SPLITS = (("train", "train2017"), ("val", "val2017"))


def _target(boxes: torch.Tensor, labels: torch.Tensor, iscrowd: torch.Tensor, height: int, width: int) -> dict:
    from torchvision import tv_tensors

    return {
        "boxes": tv_tensors.BoundingBoxes(boxes.float().reshape(-1, 4), format="XYXY", canvas_size=(height, width)),
        "labels": labels.long(),
        "iscrowd": iscrowd.long(),
    }


class SceneDetection(Dataset):
    """The boxes and labels of :class:`~mobilenets.data.scenes.FashionMNISTScenes` (the same generator as the
    segmentation masks): each garment's tight box around its visible pixels, labels 1..10
    (:data:`~mobilenets.data.scenes.SCENE_CLASSES`)."""

    def __init__(self, scenes: FashionMNISTScenes) -> None:
        self.scenes = scenes
        self.classes = list(SCENE_CLASSES)

    def __len__(self) -> int:
        return len(self.scenes)

    def __getitem__(self, index: int) -> tuple[Any, dict]:
        from torchvision import tv_tensors

        scene = self.scenes.scene(index)
        size = scene.mask.shape
        # the exclusive pixel ends of the scene's boxes are the continuous XYXY corners of the pixels covered
        return tv_tensors.Image(scene.image), _target(scene.boxes, scene.labels, torch.zeros_like(scene.labels),
                                                     *size)


def _require(condition: bool, path: Path, message: str) -> None:
    if not condition:
        raise ValueError(f"{path}: {message}")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


class CocoDetection(Dataset):
    """Images in ``images_dir`` with the boxes of a COCO instances file (``annotations``: its ``images``,
    ``annotations`` and ``categories``; segmentations are not read).

    Categories become labels 1..K in the order of their ids (COCO's ids have gaps: 1..90 for 80 classes), so
    ``classes`` is ``["background", <names by id>]``; ``class_names`` (a trained model's) makes a file whose
    categories differ an error. ``bbox`` is COCO's [x, y, width, height] in pixels; ``iscrowd`` 1 marks a crowd
    region (kept in the target as such). A box of zero width or height (COCO has a few) cannot be learned from
    nor matched: it is left out, with a warning, and listed in ``dropped`` as ``(annotation id, reason)``.
    Every listed image file must exist."""

    def __init__(self, images_dir: str | os.PathLike, annotations: str | os.PathLike, channels: int = 3,
                 class_names: Optional[Sequence[str]] = None) -> None:
        images_dir, path = Path(images_dir), Path(annotations)
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no such annotation file (COCO instances JSON)")
        if not images_dir.is_dir():
            raise FileNotFoundError(f"{images_dir}: no such image folder")
        try:
            data = json.loads(path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise ValueError(f"{path}: not a JSON file ({exc})") from None
        _require(isinstance(data, dict) and all(isinstance(data.get(k), list)
                                                for k in ("images", "annotations", "categories")),
                 path, "a COCO instances file is an object with lists 'images', 'annotations' and 'categories'")
        self.channels = channels
        self.classes = ["background"] + self._read_categories(data["categories"], path)
        if class_names is not None and list(class_names) != self.classes:
            raise ValueError(f"{path}: categories {self.classes[1:]} differ from the classes expected "
                             f"{list(class_names)[1:]} (the test split's, or the model's)")
        self.files, self.sizes, index_of = self._read_images(data["images"], images_dir, path)
        boxes: list[list[list[float]]] = [[] for _ in self.files]
        labels: list[list[int]] = [[] for _ in self.files]
        crowd: list[list[int]] = [[] for _ in self.files]
        self.dropped: list[tuple[Any, str]] = []
        for ann in data["annotations"]:
            _require(isinstance(ann, dict), path, f"annotation {ann!r} is not an object")
            ann_id = ann.get("id")
            _require(ann.get("image_id") in index_of, path,
                     f"annotation {ann_id!r} refers to image_id {ann.get('image_id')!r}, which 'images' does not list")
            _require(ann.get("category_id") in self._label_of, path,
                     f"annotation {ann_id!r} has category_id {ann.get('category_id')!r}; the categories are ids "
                     f"{sorted(self._label_of)}")
            bbox = ann.get("bbox")
            _require(isinstance(bbox, list) and len(bbox) == 4 and all(
                isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in bbox)
                and bbox[2] >= 0 and bbox[3] >= 0, path,
                f"annotation {ann_id!r} has bbox {bbox!r}; COCO's bbox is [x, y, width, height], finite, "
                "width and height >= 0")
            iscrowd = ann.get("iscrowd", 0)
            _require(iscrowd in (0, 1), path, f"annotation {ann_id!r} has iscrowd {iscrowd!r}; 0 or 1")
            if bbox[2] == 0 or bbox[3] == 0:
                self.dropped.append((ann_id, f"zero-size bbox {bbox}"))
                continue
            k = index_of[ann["image_id"]]
            x, y, w, h = (float(v) for v in bbox)
            boxes[k].append([x, y, x + w, y + h])
            labels[k].append(self._label_of[ann["category_id"]])
            crowd[k].append(int(iscrowd))
        if self.dropped:
            warnings.warn(f"{path}: {len(self.dropped)} zero-size boxes left out, first annotation "
                          f"{self.dropped[0][0]!r}", stacklevel=2)
        self.boxes = [torch.tensor(b, dtype=torch.float32).reshape(-1, 4) for b in boxes]
        self.labels = [torch.tensor(v, dtype=torch.int64) for v in labels]
        self.iscrowd = [torch.tensor(v, dtype=torch.int64) for v in crowd]

    def _read_categories(self, categories: list, path: Path) -> list[str]:
        _require(len(categories) > 0, path, "'categories' is empty; detection needs at least one class")
        by_id: dict[int, str] = {}
        for cat in categories:
            _require(isinstance(cat, dict) and _is_int(cat.get("id")) and isinstance(cat.get("name"), str)
                     and cat["name"].strip() != "", path,
                     f"category {cat!r} needs an integer 'id' and a non-empty 'name'")
            _require(cat["id"] not in by_id, path, f"category id {cat['id']} is listed twice")
            by_id[cat["id"]] = cat["name"]
        names = [by_id[i] for i in sorted(by_id)]
        twice = sorted({n for n in names if names.count(n) > 1})
        _require(not twice, path, f"category names {twice} are used by several ids")
        _require("background" not in names, path, "a category is named 'background', the name of label 0")
        self._label_of = {cat_id: k + 1 for k, cat_id in enumerate(sorted(by_id))}
        self.category_ids = sorted(by_id)  # label k is category_ids[k - 1]
        return names

    def _read_images(self, images: list, images_dir: Path, path: Path) -> tuple[list[Path], list, dict]:
        files, sizes, index_of = [], [], {}
        for entry in images:
            _require(isinstance(entry, dict) and "id" in entry and isinstance(entry.get("file_name"), str), path,
                     f"image entry {entry!r} needs an 'id' and a 'file_name'")
            _require(entry["id"] not in index_of, path, f"image id {entry['id']!r} is listed twice")
            index_of[entry["id"]] = len(files)
            files.append(images_dir / entry["file_name"])
            sizes.append((entry.get("height"), entry.get("width")))
        _require(len(files) > 0, path, "'images' is empty")
        missing = [str(f) for f in files if not f.is_file()]
        if missing:
            raise FileNotFoundError(f"{path}: {len(missing)} of its {len(files)} images are missing from "
                                    f"{images_dir}, first {missing[0]}")
        return files, sizes, index_of

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int) -> tuple[Any, dict]:
        from torchvision import tv_tensors
        from torchvision.transforms.v2.functional import pil_to_tensor

        image = pil_to_tensor(load_image(self.files[index], self.channels))
        height, width = image.shape[-2:]
        listed = self.sizes[index]
        if None not in listed and tuple(listed) != (height, width):
            # boxes are in the listed size's pixels: a resized file would put them in the wrong place
            raise ValueError(f"{self.files[index]}: {height}x{width} pixels, but its annotation file lists "
                             f"{listed[0]}x{listed[1]}")
        return tv_tensors.Image(image), _target(self.boxes[index], self.labels[index], self.iscrowd[index],
                                                height, width)


def _per_box_fields(inputs: Any) -> tuple[torch.Tensor, ...]:
    """What SanitizeBoundingBoxes must drop together with a box: the target's labels and crowd flags."""
    target = inputs[1]
    return tuple(target[k] for k in ("labels", "iscrowd") if k in target)


class DetectionTransform:
    """One torchvision v2 pipeline for an image and its target: geometry moves the boxes with the pixels
    (``tv_tensors.BoundingBoxes``), boxes left smaller than a pixel are removed with their labels
    (``SanitizeBoundingBoxes``). Returns a float image in [0, 1] (C, H, W) and a target of plain tensors; the
    detector resizes and normalises (as torchvision's do).

    ``augment`` (training only): ``ssdlite`` a random IoU crop (SSD's sampling of patches that overlap the
    objects) and a horizontal flip, ``ssd`` adds photometric distortion and zoom-out (filled with ``fill``,
    0-255, e.g. the mean pixel), ``flip`` the flip alone, ``none`` nothing."""

    joint = True  # TransformedView passes the target along with the image

    def __init__(self, train: bool, augment: str = "ssdlite", fill: float | Sequence[float] = 0) -> None:
        from torchvision import tv_tensors
        from torchvision.transforms import v2

        if augment not in DETECTION_AUGMENTATIONS:
            raise ValueError(f"unknown detection augmentation {augment!r}; accepted: "
                             f"{', '.join(DETECTION_AUGMENTATIONS)}")
        steps: list[Any] = []
        if train and augment == "ssd":
            steps += [v2.RandomPhotometricDistort(), v2.RandomZoomOut(fill={tv_tensors.Image: fill, "others": 0})]
        if train and augment in ("ssd", "ssdlite"):
            steps.append(v2.RandomIoUCrop())
        if train and augment != "none":
            steps.append(v2.RandomHorizontalFlip())
        self.pipeline = v2.Compose([
            *steps,
            v2.ToDtype(torch.float32, scale=True),  # the image only
            v2.ClampBoundingBoxes(),
            v2.SanitizeBoundingBoxes(labels_getter=_per_box_fields),
            v2.ToPureTensor(),
        ])

    def __call__(self, image: Any, target: dict) -> tuple[torch.Tensor, dict]:
        return self.pipeline(image, target)


def collate_detection(batch: Sequence[tuple[torch.Tensor, dict]]) -> tuple[list[torch.Tensor], list[dict]]:
    """A batch as torchvision's detectors take it: a list of images (sizes may differ) and a list of targets."""
    return [image for image, _ in batch], [target for _, target in batch]


def detection_dataset_name(name: str) -> str:
    """The registered name of a detection dataset; case, '-' and '_' do not matter."""
    return registered_name(name, DETECTION_DATASETS, "detection dataset")


def build_detection_data(
    name: str,
    data_dir: Optional[str | os.PathLike] = None,
    *,
    augment: str = "ssdlite",
    val_fraction: float = 0.1,
    image_size: Optional[int] = None,
    class_names: Optional[Sequence[str]] = None,
    scene_counts: Optional[dict[str, int]] = None,
    seed: int = 0,
    with_train: bool = True,
) -> DataBundle:
    """The splits of detection dataset ``name`` with their transforms (:class:`DetectionTransform`, ``augment``
    on the training split), as the trainer takes them.

    ``fashion_mnist_scenes`` (128 px, one channel): ``val_fraction`` of the Fashion-MNIST training garments
    (seeded) are held out and the validation scenes drawn from them, the training scenes from the others, the test
    scenes from the test garments; ``scene_counts`` overrides :data:`SCENE_COUNTS`. ``coco``: ``data_dir`` holds
    ``annotations/instances_train.json`` with ``train/`` and ``annotations/instances_val.json`` with ``val/`` (or
    COCO's ``*2017`` names); ``val/`` is the reported (test) split and ``val_fraction`` of the training images
    (seeded) select the model; ``class_names`` (a trained model's) must be the categories' names.
    ``image_size``: the side the detector resizes images to (default 128 for the scenes, their canvas; 320 for
    COCO data, SSDLite's); ``mean`` and ``std`` are SSDLite's (inputs in [-1, 1]). ``with_train=False``
    (evaluation) reads only the test split."""
    name = detection_dataset_name(name)
    if image_size is not None and (isinstance(image_size, bool) or not isinstance(image_size, int) or image_size < 32):
        raise ValueError(f"image_size must be an integer >= 32 for detection, got {image_size!r}")
    if name == "fashion_mnist_scenes":
        if class_names is not None and list(class_names) != list(SCENE_CLASSES):
            raise ValueError(f"fashion_mnist_scenes has its own classes ({', '.join(SCENE_CLASSES)}), not "
                             f"{list(class_names)}")
        train_scenes, val_scenes, test_scenes, folder = scene_splits(data_dir, val_fraction, seed, scene_counts)
        train_set, test_set = SceneDetection(train_scenes), SceneDetection(test_scenes)
        val_set = SceneDetection(val_scenes) if val_scenes is not None else None
        names, in_chans, source, fill = list(SCENE_CLASSES), 1, str(folder), 0
        size = image_size or SCENE_SIZE
        train_rows = val_rows = None
    else:
        if data_dir is None:
            raise ValueError("dataset coco needs data_dir: a folder with annotations/instances_train.json and "
                             "train/, annotations/instances_val.json and val/")
        root = Path(data_dir)
        found = {split: _coco_split(root, split, alternative) for split, alternative in COCO_SPLITS}
        test_set = CocoDetection(*found["val"], class_names=class_names)
        train_set = CocoDetection(*found["train"], class_names=test_set.classes) if with_train else None
        if train_set is not None:
            train_rows, val_rows = held_out(len(train_set), val_fraction, seed)
            val_set = train_set if val_rows else None
        else:
            train_rows, val_rows, val_set = [], None, None
        names, in_chans, source = test_set.classes, 3, str(root)
        fill = (124, 116, 104)  # ImageNet's mean pixel, as torchvision's SSD reference fills its zoom-out
        size = image_size or 320
    evaluation = DetectionTransform(train=False)
    return DataBundle(
        name=name,
        train=TransformedView(train_set if train_set is not None else test_set, train_rows,
                              DetectionTransform(True, augment, fill), seed),
        val=TransformedView(val_set, val_rows, evaluation, seed) if val_set is not None else None,
        test=TransformedView(test_set, None, evaluation, seed),
        class_names=names,
        in_chans=in_chans,
        image_size=size,
        mean=(SSDLITE_MEAN,) * in_chans,  # the model's own default: inputs in [-1, 1]
        std=(SSDLITE_STD,) * in_chans,
        small_input=False,  # SSDLite's maps are at output strides 16 to 512 of the resized image
        eval_resize=size,
        source=source,
    )


def _coco_split(root: Path, split: str, alternative: str) -> tuple[Path, Path]:
    for stem in (split, alternative):
        annotations, images = root / "annotations" / f"instances_{stem}.json", root / stem
        if annotations.is_file():
            if not images.is_dir():
                raise FileNotFoundError(f"{annotations} has no image folder {images}")
            return images, annotations
    raise FileNotFoundError(f"{root}: no annotations/instances_{split}.json (nor instances_{alternative}.json); a "
                            f"COCO folder holds annotations/instances_{split}.json and its images in {split}/")


def detection_checkpoint_data(
    checkpoint: Path, model: Any, meta: dict[str, Any], dataset: Optional[str] = None,
    data_dir: Optional[str] = None, with_train: bool = False,
) -> tuple[DataBundle, str]:
    """``(bundle, dataset name)`` a saved detector is measured on: the dataset its training record names (or
    ``dataset``), split with the run's seed and validation fraction, its classes checked against the
    checkpoint's. The detector resizes and normalises images itself (its ``image_size``, mean and std)."""
    build = lambda name, data_dir, **split: build_detection_data(  # noqa: E731
        name, data_dir, **split, class_names=meta.get("class_names"), with_train=with_train)
    return training_record_data(checkpoint, model, meta, dataset, data_dir, build, detection_dataset_name)
