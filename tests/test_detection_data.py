"""Detection data (issue #24, items 4-5): scene boxes, COCO JSON folders, v2 augmentation of boxes, collate, and
COCO metrics through pycocotools on hand-made cases with known average precision."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from mobilenets.data.detection import (
    CocoDetection, DetectionTransform, build_detection_data, collate_detection, detection_dataset_name,
)
from mobilenets.detection.metrics import evaluate_detections

FMNIST = Path("/usr/share/datasets/fashion-mnist")
needs_fmnist = pytest.mark.skipif(not FMNIST.is_dir(), reason="needs Debian's dataset-fashion-mnist (make data)")


@pytest.fixture(scope="module")
def scenes():
    if not FMNIST.is_dir():
        pytest.skip("needs Debian's dataset-fashion-mnist (make data)")
    return build_detection_data("fashion-mnist-scenes", FMNIST, scene_counts={"train": 40, "val": 8, "test": 8})


def _tight_box(pixels: torch.Tensor) -> list[float]:
    ys, xs = torch.nonzero(pixels, as_tuple=True)
    return [float(xs.min()), float(ys.min()), float(xs.max() + 1), float(ys.max() + 1)]


@needs_fmnist
def test_scene_boxes_are_the_segmentation_generators(scenes):
    """The detection split draws the same scenes as the segmentation masks (one generator): each box is the
    tight box of the mask pixels of its garment, and the labels are the mask's classes."""
    raw = scenes.test.base
    for index in range(len(raw)):
        image, target = raw[index]
        scene = raw.scenes.scene(index)
        assert torch.equal(image.as_subclass(torch.Tensor), scene.image)
        assert target["boxes"].canvas_size == (128, 128) and target["boxes"].format.name == "XYXY"
        assert torch.equal(target["labels"], scene.labels) and target["iscrowd"].sum() == 0
        assert set(target["labels"].tolist()) == set(torch.unique(scene.mask).tolist()) - {0}
        for box, label in zip(target["boxes"].tolist(), target["labels"].tolist()):
            x0, y0, x1, y1 = map(int, box)
            inside = scene.mask[y0:y1, x0:x1] == label
            # every edge of a tight box touches a pixel of its class
            assert inside[0].any() and inside[-1].any() and inside[:, 0].any() and inside[:, -1].any()


@needs_fmnist
def test_scene_splits_hold_out_garments(scenes):
    assert scenes.class_names[0] == "background" and len(scenes.class_names) == 11 and scenes.in_chans == 1
    assert (scenes.image_size, scenes.mean, scenes.std, scenes.small_input) == (128, (0.5,), (0.5,), False)
    train_src, val_src = scenes.train.base.scenes.source, scenes.val.base.scenes.source
    assert len(train_src) + len(val_src) == 60000 and len(val_src) == 6000
    # the validation garments are held out of the training scenes: together they are the training set, once
    from mobilenets.data.fashion_mnist import load_fashion_mnist

    full = load_fashion_mnist(FMNIST, allow_download=False)[0].images.flatten(1)
    together = torch.cat([train_src.images.flatten(1), val_src.images.flatten(1)])
    assert torch.equal(torch.unique(together, dim=0), torch.unique(full, dim=0))


@needs_fmnist
def test_flip_moves_boxes_with_pixels(scenes):
    """Augmented boxes follow the pixels: on a flipped or unflipped scene each single-garment box is the tight
    box of its ink (> 32 of 255) in the transformed image."""
    flip = DetectionTransform(train=True, augment="flip")
    flipped = checked = 0
    for index in range(len(scenes.train)):
        raw_image, raw_target = scenes.train.base[index]
        if len(raw_target["labels"]) != 1:
            continue
        torch.manual_seed(index)
        image, target = flip(raw_image, raw_target)
        assert image.dtype == torch.float32 and 0.0 <= image.min() and image.max() <= 1.0
        assert type(target["boxes"]) is torch.Tensor  # plain tensors after the pipeline
        assert target["boxes"].tolist() == [_tight_box(image[0] > 32 / 255)]
        flipped += target["boxes"].tolist() != raw_target["boxes"].tolist()
        checked += 1
    assert checked >= 5 and 0 < flipped < checked


@needs_fmnist
def test_ssdlite_augmentation_is_seeded_and_sane(scenes):
    train = scenes.train
    first = [train[i] for i in range(12)]
    again = [train[i] for i in range(12)]
    train.set_epoch(1)
    other = [train[i] for i in range(12)]
    train.set_epoch(0)
    assert all(torch.equal(a[0], b[0]) and torch.equal(a[1]["boxes"], b[1]["boxes"]) for a, b in zip(first, again))
    assert any(a[0].shape != b[0].shape or not torch.equal(a[0], b[0]) for a, b in zip(first, other))
    cropped = 0
    for image, target in first:
        h, w = image.shape[-2:]
        boxes = target["boxes"]
        assert len(boxes) == len(target["labels"]) == len(target["iscrowd"])
        assert (boxes[:, 2:] - boxes[:, :2] >= 1).all()
        assert (boxes[:, :2] >= 0).all() and (boxes[:, 2] <= w).all() and (boxes[:, 3] <= h).all()
        cropped += (h, w) != (128, 128)
    assert cropped > 0  # RandomIoUCrop cut patches


@needs_fmnist
def test_collate_and_loader(scenes):
    loader = torch.utils.data.DataLoader(scenes.test, batch_size=3, collate_fn=collate_detection)
    images, targets = next(iter(loader))
    assert len(images) == len(targets) == 3 and images[0].shape == (1, 128, 128)
    assert set(targets[0]) == {"boxes", "labels", "iscrowd"}


def test_names_and_augmentations():
    assert detection_dataset_name("Fashion-MNIST-Scenes") == "fashion_mnist_scenes"
    with pytest.raises(ValueError, match="accepted: fashion_mnist_scenes, coco"):
        detection_dataset_name("voc")
    with pytest.raises(ValueError, match="unknown detection augmentation 'mosaic'; accepted: ssdlite, ssd"):
        DetectionTransform(train=True, augment="mosaic")


# -- COCO JSON ------------------------------------------------------------------------------------------------

CATEGORIES = [{"id": 7, "name": "dog"}, {"id": 3, "name": "cat"}, {"id": 5, "name": "bird"}]


def _coco_folder(root: Path, split: str, annotations: list, categories=CATEGORIES, sizes=((40, 60), (30, 30))):
    (root / split).mkdir(parents=True, exist_ok=True)
    (root / "annotations").mkdir(exist_ok=True)
    images = []
    for k, (h, w) in enumerate(sizes):
        Image.fromarray(np.full((h, w, 3), 20 * k, dtype=np.uint8)).save(root / split / f"im{k}.png")
        images.append({"id": 100 + k, "file_name": f"im{k}.png", "height": h, "width": w})
    path = root / "annotations" / f"instances_{split}.json"
    path.write_text(json.dumps({"images": images, "annotations": annotations, "categories": categories}))
    return path


ANNOTATIONS = [
    {"id": 1, "image_id": 100, "category_id": 7, "bbox": [10, 5, 20, 15], "iscrowd": 0},
    {"id": 2, "image_id": 100, "category_id": 3, "bbox": [0, 0, 60, 40], "iscrowd": 1},
    {"id": 3, "image_id": 101, "category_id": 5, "bbox": [2.5, 3, 10, 0]},
    {"id": 4, "image_id": 101, "category_id": 5, "bbox": [2.5, 3, 10, 4]},
]


def test_coco_json_labels_boxes_crowd(tmp_path):
    path = _coco_folder(tmp_path, "train", ANNOTATIONS)
    with pytest.warns(UserWarning, match="1 zero-size boxes left out, first annotation 3"):
        data = CocoDetection(tmp_path / "train", path)
    # categories in the order of their ids -> contiguous labels 1..K
    assert data.classes == ["background", "cat", "bird", "dog"] and data.category_ids == [3, 5, 7]
    image, target = data[0]
    assert image.shape == (3, 40, 60) and image.dtype == torch.uint8
    assert target["boxes"].tolist() == [[10, 5, 30, 20], [0, 0, 60, 40]]
    assert target["labels"].tolist() == [3, 1] and target["iscrowd"].tolist() == [0, 1]
    assert target["boxes"].canvas_size == (40, 60)
    _, second = data[1]
    assert second["boxes"].tolist() == [[2.5, 3, 12.5, 7]] and second["labels"].tolist() == [2]
    assert data.dropped == [(3, "zero-size bbox [2.5, 3, 10, 0]")]


def test_sanitize_keeps_crowd_flags_aligned():
    """A box that leaves the image goes with its label and its crowd flag (not only the labels)."""
    from torchvision import tv_tensors

    target = {"boxes": tv_tensors.BoundingBoxes([[-20, -20, -5, -5], [10, 10, 20, 20], [0, 0, 5, 5]],
                                                format="XYXY", canvas_size=(30, 30)),
              "labels": torch.tensor([1, 2, 3]), "iscrowd": torch.tensor([0, 1, 0])}
    image, out = DetectionTransform(train=False)(tv_tensors.Image(torch.zeros(3, 30, 30, dtype=torch.uint8)), target)
    assert out["boxes"].tolist() == [[10, 10, 20, 20], [0, 0, 5, 5]]
    assert out["labels"].tolist() == [2, 3] and out["iscrowd"].tolist() == [1, 0]


@pytest.mark.parametrize("change, error", [
    (lambda d: d["annotations"].append({"id": 9, "image_id": 100, "category_id": 4, "bbox": [0, 0, 1, 1]}),
     r"annotation 9 has category_id 4; the categories are ids \[3, 5, 7\]"),
    (lambda d: d["annotations"].append({"id": 9, "image_id": 555, "category_id": 3, "bbox": [0, 0, 1, 1]}),
     "annotation 9 refers to image_id 555, which 'images' does not list"),
    (lambda d: d["annotations"].append({"id": 9, "image_id": 100, "category_id": 3, "bbox": [0, 0, -1, 1]}),
     r"annotation 9 has bbox \[0, 0, -1, 1\]; COCO's bbox is \[x, y, width, height\]"),
    (lambda d: d["annotations"].append({"id": 9, "image_id": 100, "category_id": 3, "bbox": [0, 0, 1, 1],
                                        "iscrowd": 2}), "annotation 9 has iscrowd 2; 0 or 1"),
    (lambda d: d["categories"].append({"id": 3, "name": "lion"}), "category id 3 is listed twice"),
    (lambda d: d["categories"].append({"id": 8, "name": "cat"}), r"category names \['cat'\] are used by several ids"),
    (lambda d: d["categories"].append({"id": 8}), "needs an integer 'id' and a non-empty 'name'"),
    (lambda d: d.update(categories=[]), "'categories' is empty"),
    (lambda d: d.pop("annotations"), "lists 'images', 'annotations' and 'categories'"),
    (lambda d: d["images"].append({"id": 100, "file_name": "im1.png"}), "image id 100 is listed twice"),
])
def test_coco_json_errors(tmp_path, change, error):
    path = _coco_folder(tmp_path, "train", ANNOTATIONS[:2])
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data))
    with pytest.raises(ValueError, match=error):
        CocoDetection(tmp_path / "train", path)


def test_coco_missing_files_and_sizes(tmp_path):
    path = _coco_folder(tmp_path, "train", ANNOTATIONS[:1])
    with pytest.raises(FileNotFoundError, match="no such annotation file"):
        CocoDetection(tmp_path / "train", tmp_path / "nope.json")
    (tmp_path / "train" / "im1.png").unlink()
    with pytest.raises(FileNotFoundError, match=r"1 of its 2 images are missing from .*im1.png"):
        CocoDetection(tmp_path / "train", path)
    Image.fromarray(np.zeros((31, 30, 3), dtype=np.uint8)).save(tmp_path / "train" / "im1.png")
    data = CocoDetection(tmp_path / "train", path)
    with pytest.raises(ValueError, match="31x30 pixels, but its annotation file lists 30x30"):
        data[1]
    path.write_text("{not json")
    with pytest.raises(ValueError, match="not a JSON file"):
        CocoDetection(tmp_path / "train", path)


def test_build_coco_data(tmp_path):
    with pytest.raises(FileNotFoundError, match="no annotations/instances_train.json"):
        build_detection_data("coco", tmp_path)
    _coco_folder(tmp_path, "train", [a for a in ANNOTATIONS if a["id"] != 3], sizes=[(40, 60)] * 10)
    _coco_folder(tmp_path, "val", ANNOTATIONS[:1], categories=CATEGORIES[:2])
    expected = r"categories \['cat', 'bird', 'dog'\] differ from the classes expected \['cat', 'dog'\]"
    with pytest.raises(ValueError, match=expected):
        build_detection_data("coco", tmp_path)
    _coco_folder(tmp_path, "val", ANNOTATIONS[:1])
    data = build_detection_data("coco", tmp_path, val_fraction=0.2)
    assert data.class_names == ["background", "cat", "bird", "dog"] and data.in_chans == 3
    assert (data.image_size, data.mean) == (320, (0.5, 0.5, 0.5))
    assert (len(data.train), len(data.val), len(data.test)) == (8, 2, 2)
    assert len(build_detection_data("coco", tmp_path, with_train=False).test) == 2
    assert not set(data.train.indices) & set(data.val.indices)
    image, target = data.val[0]
    assert image.dtype == torch.float32 and set(target) == {"boxes", "labels", "iscrowd"}


# -- metrics --------------------------------------------------------------------------------------------------

NAMES = ["background", "shirt", "bag"]


def _det(boxes, labels, scores=None):
    out = {"boxes": torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4), "labels": torch.tensor(labels)}
    if scores is not None:
        out["scores"] = torch.tensor(scores)
    return out


def test_map_perfect_and_missed():
    truth = [_det([[0, 0, 100, 100], [200, 200, 250, 260]], [1, 2]), _det([[10, 10, 40, 30]], [1])]
    perfect = [dict(t, scores=torch.tensor([0.9] * len(t["labels"]))) for t in truth]
    result = evaluate_detections(perfect, truth, NAMES)
    assert result["map"] == pytest.approx(1.0) and result["map50"] == pytest.approx(1.0)
    assert result["per_class"] == pytest.approx({"shirt": 1.0, "bag": 1.0})
    assert result["images"] == 2 and result["objects"] == 3
    # one of two shirts found: precision 1 up to recall 0.5, then none -> 51 of COCO's 101 recall points
    truth = [_det([[0, 0, 100, 100], [200, 200, 250, 260]], [1, 1])]
    result = evaluate_detections([_det([[0, 0, 100, 100]], [1], [0.9])], truth, NAMES)
    assert result["map"] == pytest.approx(51 / 101) and result["mar100"] == pytest.approx(0.5)
    assert result["per_class"] == {"shirt": pytest.approx(51 / 101), "bag": None}  # no bag in the targets


def test_map_iou_thresholds_and_false_positives():
    truth = [_det([[0, 0, 100, 100]], [1])]
    # IoU 0.72: a hit at thresholds .50 to .70 (5 of 10)
    result = evaluate_detections([_det([[0, 0, 100, 72]], [1], [0.9])], truth, NAMES)
    assert result["map50"] == pytest.approx(1.0) and result["map75"] == pytest.approx(0.0)
    assert result["map"] == pytest.approx(0.5) and result["per_class_ap50"]["shirt"] == pytest.approx(1.0)
    # a false positive scored above the hit: precision 1/2 at every recall
    preds = [_det([[300, 300, 350, 350], [0, 0, 100, 100]], [1, 1], [0.9, 0.8])]
    assert evaluate_detections(preds, truth, NAMES)["map"] == pytest.approx(0.5)
    # the wrong class is no hit
    assert evaluate_detections([_det([[0, 0, 100, 100]], [2], [0.9])], truth, NAMES)["map"] == 0.0
    assert evaluate_detections([_det([], [], [])], truth, NAMES)["map"] == 0.0


def test_map_crowd_regions_are_ignored():
    truth = _det([[0, 0, 100, 100], [300, 300, 400, 400]], [1, 1])
    preds = [_det([[300, 300, 400, 400], [0, 0, 100, 100]], [1, 1], [0.9, 0.8])]
    truth["iscrowd"] = torch.tensor([0, 1])
    # the higher-scored detection lies on a crowd region: neither hit nor false positive
    result = evaluate_detections(preds, [truth], NAMES)
    assert result["map"] == pytest.approx(1.0) and result["objects"] == 1


def test_metric_errors():
    truth = [_det([[0, 0, 10, 10]], [1])]
    with pytest.raises(ValueError, match="1 predictions for 2 images"):
        evaluate_detections([_det([], [], [])], truth * 2, NAMES)
    with pytest.raises(ValueError, match=r"prediction 0: labels \[3\] are not classes 1-2 \(0 is background\)"):
        evaluate_detections([_det([[0, 0, 10, 10]], [3], [0.5])], truth, NAMES)
    with pytest.raises(ValueError, match="prediction 0: a dict with 'scores' is expected"):
        evaluate_detections([_det([[0, 0, 10, 10]], [1])], truth, NAMES)
    with pytest.raises(ValueError, match=r"target 0: boxes must be \(N, 4\) XYXY"):
        evaluate_detections([_det([], [], [])], [{"boxes": torch.zeros(4), "labels": torch.zeros(1)}], NAMES)
    with pytest.raises(ValueError, match="the targets hold no objects"):
        evaluate_detections([_det([], [], [])], [_det([], [])], NAMES)
