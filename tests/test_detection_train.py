"""Detection through the trainer (issue #24, item 6): `mobilenets train` on the Fashion-MNIST scenes with an SSDLite
model, then `evaluate --json` (COCO mAP) and `predict` (a PNG with the boxes drawn), resume, and bad inputs."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from mobilenets.cli import main

FMNIST = Path("/usr/share/datasets/fashion-mnist")
pytestmark = [pytest.mark.skipif(not FMNIST.is_dir(), reason="needs Debian's dataset-fashion-mnist (make data)"),
              pytest.mark.usefixtures("restore_threads")]

# V3-Small x0.35 at 96 px: 0.26M parameters; 4 steps of 8 scenes an epoch, 16 scenes to validate and to test
ARGS = ["--model", "ssdlite_mobilenet_v3_small", "--width-mult", "0.35", "--dataset", "fashion-mnist-scenes",
        "--image-size", "96", "--batch-size", "8", "--limit-train-batches", "4", "--limit-val-batches", "2",
        "--threads", "1", "--opt", "adamw", "--lr", "0.003", "--no-progress", "--no-tensorboard",
        "--data-dir", str(FMNIST)]


def _train(out: Path, *extra: str) -> int:
    return main(["train", *ARGS, "--output", str(out), *extra])


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("det") / "run"
    assert _train(out, "--epochs", "2") == 0
    return out


def test_train_records_map_and_keeps_the_best(run, capsys):
    history = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in history] == [1, 2]
    for record in history:
        assert 0.0 <= record["val_map"] <= record["val_map50"] <= 1.0
        assert record["train_loss"] > 0 and "train_top1" not in record
    results = json.loads((run / "results.json").read_text())
    best = max(history, key=lambda r: r["val_map50"])
    assert results["best_epoch"] == best["epoch"] and results["best_val_map50"] == best["val_map50"]
    assert 0.0 <= results["test_map"] <= results["test_map50"] <= 1.0
    assert set(results["per_class_ap"]) == {"T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal",
                                            "Shirt", "Sneaker", "Bag", "Ankle boot"}
    assert (run / "curves.png").is_file() and (run / "best.safetensors").is_file()


def test_evaluate_json_gives_coco_map(run, capsys):
    results = json.loads((run / "results.json").read_text())
    capsys.readouterr()
    assert main(["evaluate", str(run), "--json", "--limit-batches", "2", "--batch-size", "8", "--threads", "1"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["arch"] == "ssdlite_mobilenet_v3_small" and report["dataset"] == "fashion_mnist_scenes"
    assert report["images"] == 16 and report["objects"] > 16
    # the run's test figures, from the checkpoint alone (the same test scenes, the same best weights; the run
    # evaluated channels-last, which rounds its convolutions differently: a near-tie of scores may swap)
    assert report["map50"] == pytest.approx(results["test_map50"], rel=0.02)
    assert report["map"] == pytest.approx(results["test_map"], rel=0.02)
    assert set(report["per_class"]) == set(report["per_class_ap50"]) == set(results["per_class_ap"])
    assert main(["evaluate", str(run), "--limit-batches", "1", "--batch-size", "8"]) == 0
    text = capsys.readouterr().out
    assert "mAP@[.5:.95]" in text and "per-class AP@[.5:.95] / AP@.5:" in text
    assert main(["evaluate", str(run), "--backend", "onnxruntime", "--limit-batches", "1"]) == 2
    assert "detectors are evaluated with --backend pytorch, not 'onnxruntime'" in capsys.readouterr().err
    assert main(["evaluate", str(run), "--confusion", str(run / "c.png"), "--limit-batches", "1"]) == 2
    assert "a detector has no confusion matrix" in capsys.readouterr().err


def test_predict_draws_boxes(run, tmp_path, capsys):
    scene = np.zeros((96, 120), dtype=np.uint8)
    scene[20:70, 30:80] = 200  # a bright block, whatever the model makes of it
    Image.fromarray(scene).save(tmp_path / "scene.png")
    capsys.readouterr()
    assert main(["predict", str(run), str(tmp_path / "scene.png"), "--score-threshold", "0", "--json",
                 "--output-dir", str(tmp_path / "drawn")]) == 0
    (item,) = json.loads(capsys.readouterr().out)
    drawn = Path(item["output"])
    assert drawn == tmp_path / "drawn" / "scene_detections.png"
    picture = np.array(Image.open(drawn))
    assert picture.shape == (96, 120, 3) and item["detections"]
    # the boxes are drawn in red where the grey input has none
    red = (picture[..., 0] > 200) & (picture[..., 1] < 50)
    assert red.any()
    first = item["detections"][0]
    assert set(first) == {"class", "label", "score", "box"} and first["score"] >= max(
        d["score"] for d in item["detections"])
    # no box scores 1: the picture is the image as it is (and text output names it)
    assert main(["predict", str(run), str(tmp_path / "scene.png"), "--score-threshold", "1",
                 "--output-dir", str(tmp_path / "none")]) == 0
    assert capsys.readouterr().out.endswith(f"scene.png: no boxes; {tmp_path / 'none' / 'scene_detections.png'}\n")
    plain = np.array(Image.open(tmp_path / "none" / "scene_detections.png"))
    assert (plain == scene[..., None]).all()
    assert main(["predict", str(run), str(tmp_path / "scene.png"), "--top-k", "3"]) == 2
    assert "--top-k ranks the classes of a whole image" in capsys.readouterr().err
    assert main(["predict", str(run), str(tmp_path / "scene.png"), "--score-threshold", "1.5"]) == 2
    assert "--score-threshold must be in [0, 1], got 1.5" in capsys.readouterr().err


def test_stop_mid_epoch_and_resume_matches_the_uninterrupted_run(run, tmp_path):
    """Stopped (as by Ctrl-C) in the middle of epoch 2 and resumed: the same weights and validation mAP as the
    run that was not stopped (the IoU crops are seeded by sample and epoch)."""
    from mobilenets.cli import build_parser
    from mobilenets.train.cli import config_from_args
    from mobilenets.train.trainer import Trainer, train

    config = config_from_args(build_parser().parse_args(
        ["train", *ARGS, "--epochs", "2", "--output", str(tmp_path / "stopped")]))
    trainer = Trainer(config, log=lambda message: None)

    def stop(t) -> None:
        if t.epoch == 1 and t.step_in_epoch == 2:
            t._stop_requested = True

    trainer.on_step = stop
    with pytest.raises(KeyboardInterrupt):
        trainer.fit()
    state = torch.load(tmp_path / "stopped" / "last.pt", weights_only=True)
    assert (state["epoch"], state["step_in_epoch"]) == (1, 2)
    config.resume = True
    train(config, log=lambda message: None)
    straight = torch.load(run / "last.pt", weights_only=True)
    resumed = torch.load(tmp_path / "stopped" / "last.pt", weights_only=True)
    for key, value in straight["model"].items():
        assert torch.equal(value, resumed["model"][key]), key
    assert [r["val_map50"] for r in straight["history"]] == [r["val_map50"] for r in resumed["history"]]


@pytest.mark.parametrize("extra, error", [
    (["--label-smoothing", "0.1"], "--label-smoothing applies to cross-entropy on labels"),
    (["--dataset", "cifar10"], "dataset cifar10 is for classification models"),
    (["--progressive-sizes", "64,96"], "--progressive-sizes is a classification option"),
    (["--dataset", "coco", "--data-dir", "/nonexistent"], "no annotations/instances_train.json"),
])
def test_bad_inputs(tmp_path, extra, error, capsys):
    assert _train(tmp_path / "bad", "--epochs", "1", *extra) == 2
    assert error in capsys.readouterr().err
    assert not (tmp_path / "bad").exists()


def _coco_split(root: Path, split: str, count: int) -> None:
    """``count`` 64x80 RGB images, each with a bright rectangle (a 'box' object) and, on the first, a crowd region."""
    (root / split).mkdir(parents=True)
    (root / "annotations").mkdir(exist_ok=True)
    rng = np.random.default_rng(len(split))
    images, annotations = [], []
    for k in range(count):
        pixels = rng.integers(0, 60, (64, 80, 3), dtype=np.uint8)
        x, y = int(rng.integers(0, 40)), int(rng.integers(0, 24))
        pixels[y:y + 30, x:x + 36] = 230
        Image.fromarray(pixels).save(root / split / f"{k}.png")
        images.append({"id": k, "file_name": f"{k}.png", "height": 64, "width": 80})
        annotations.append({"id": 2 * k, "image_id": k, "category_id": 4, "bbox": [x, y, 36, 30], "iscrowd": 0})
        if k == 0:
            annotations.append({"id": 2 * k + 1, "image_id": k, "category_id": 9, "bbox": [0, 0, 20, 20],
                                "iscrowd": 1})
    (root / "annotations" / f"instances_{split}.json").write_text(json.dumps(
        {"images": images, "annotations": annotations,
         "categories": [{"id": 4, "name": "box"}, {"id": 9, "name": "crowd of boxes"}]}))


def test_coco_folder_trains_evaluates_and_keeps_category_names(tmp_path, capsys):
    """Three-channel COCO data with a crowd region (left out of the loss) through train and evaluate."""
    _coco_split(tmp_path / "data", "train", 10)
    _coco_split(tmp_path / "data", "val", 4)
    out = tmp_path / "run"
    assert main(["train", "--model", "ssdlite_mobilenet_v3_small", "--width-mult", "0.35", "--dataset", "coco",
                 "--data-dir", str(tmp_path / "data"), "--image-size", "64", "--batch-size", "4", "--epochs", "1",
                 "--val-fraction", "0.2", "--threads", "1", "--no-progress", "--no-tensorboard",
                 "--output", str(out)]) == 0
    results = json.loads((out / "results.json").read_text())
    assert results["test_images"] == 4 and set(results["per_class_ap"]) == {"box", "crowd of boxes"}
    assert results["per_class_ap"]["crowd of boxes"] is None  # a crowd region is no object to find
    capsys.readouterr()
    assert main(["evaluate", str(out), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["dataset"] == "coco" and report["objects"] == 4 and report["images"] == 4


def test_crowd_regions_stay_out_of_the_loss():
    from mobilenets.train.tasks import DetectionTask

    target = {"boxes": torch.tensor([[0.0, 0, 10, 10], [5, 5, 30, 30]]), "labels": torch.tensor([1, 2]),
              "iscrowd": torch.tensor([1, 0])}
    images, targets, count = DetectionTask().to_device(([torch.zeros(3, 32, 32)], [target]), torch.device("cpu"),
                                                       channels_last=False)
    assert count == 1 and set(targets[0]) == {"boxes", "labels"}
    assert targets[0]["boxes"].tolist() == [[5, 5, 30, 30]] and targets[0]["labels"].tolist() == [2]
