"""`mobilenets train/evaluate/predict` for segmentation models (issue #23, item 5): the pixel confusion matrix
and its scores by hand, a tiny run on real Fashion-MNIST scenes (64 px, a few steps) with exact resume, evaluate
against an independent count, predict's PNGs against the model's own mask, a mask-folder run through the
command line, and the options refused."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from mobilenets.segmentation.metrics import IGNORE_INDEX, confusion_matrix, scores
from mobilenets.train.config import TrainConfig

FMNIST = Path("/usr/share/datasets/fashion-mnist")
COUNTS = {"train": 32, "val": 8, "test": 8}


def quiet(_: str) -> None:
    pass


# -- the metric, by hand ---------------------------------------------------------------------------------------

def test_confusion_matrix_and_scores_of_a_known_case():
    target = torch.tensor([[0, 0, 1], [1, 2, IGNORE_INDEX]])
    prediction = torch.tensor([[0, 1, 1], [1, 1, 0]])
    confusion = confusion_matrix(prediction, target, 4)
    # rows: true class; the ignored pixel (predicted 0) counts nowhere; class 3 is in neither
    assert confusion.tolist() == [[1, 1, 0, 0], [0, 2, 0, 0], [0, 1, 0, 0], [0, 0, 0, 0]]
    result = scores(confusion, ["bg", "a", "b", "c"])
    # IoU = TP / (TP + FP + FN): bg 1/(1+0+1), a 2/(2+2+0), b 0/(0+0+1); c has none and is left out of the mean
    assert result["per_class_iou"] == {"bg": 0.5, "a": 0.5, "b": 0.0, "c": None}
    assert result["miou"] == pytest.approx(1 / 3)
    assert result["pixel_accuracy"] == pytest.approx(3 / 5)
    assert result["mean_accuracy"] == pytest.approx((1 / 2 + 2 / 2 + 0 / 1) / 3)
    assert result["pixels"] == 5


def test_the_metric_refuses_what_it_cannot_count():
    with pytest.raises(ValueError, match=r"target values \[7\] are neither classes 0-3 nor 255"):
        confusion_matrix(torch.zeros(2, 2, dtype=torch.long), torch.tensor([[0, 7], [1, 255]]), 4)
    with pytest.raises(ValueError, match="must have one shape"):
        confusion_matrix(torch.zeros(1, 3, 2, 2), torch.zeros(1, 2, 2, dtype=torch.long), 3)
    with pytest.raises(ValueError, match="no pixels counted"):
        scores(confusion_matrix(torch.zeros(2, 2), torch.full((2, 2), IGNORE_INDEX), 3))


def test_batches_of_several_sizes_are_padded_with_ignored_pixels():
    from mobilenets.train.segmentation_eval import collate_segmentation

    images, masks = collate_segmentation([(torch.ones(1, 2, 3), torch.ones(2, 3, dtype=torch.long)),
                                          (torch.ones(1, 3, 2), torch.zeros(3, 2, dtype=torch.long))])
    assert images.shape == (2, 1, 3, 3) and masks.shape == (2, 3, 3)
    assert masks[0, 2].tolist() == [IGNORE_INDEX] * 3 and masks[1, :, 2].tolist() == [IGNORE_INDEX] * 3
    assert images[0, 0, 2].tolist() == [0.0] * 3 and int((masks != IGNORE_INDEX).sum()) == 12


# -- a run on the scenes ---------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def scenes64():
    from mobilenets.data.segmentation_bundle import build_segmentation_bundle

    if not FMNIST.is_dir():
        pytest.skip("needs Debian's dataset-fashion-mnist (make data)")
    return build_segmentation_bundle("fashion_mnist_scenes", FMNIST, image_size=64, scene_counts=COUNTS)


def _config(output: Path, **overrides) -> TrainConfig:
    # AdamW: the default recipe's SGD at this batch barely moves a random LR-ASPP in a few steps
    options = dict(model="lraspp_mobilenet_v3_small", width_mult=0.35, image_size=64, output=str(output), epochs=2,
                   batch_size=8, opt="adamw", lr=0.01, ema_decay=0.0, threads=1, progress=False, tensorboard=False,
                   data_dir=str(FMNIST))
    options.update(overrides)
    return TrainConfig(**options)


@pytest.fixture(scope="module")
def seg_run(scenes64, tmp_path_factory, restore_threads):
    from mobilenets.train.trainer import train

    out = tmp_path_factory.mktemp("seg") / "run"
    results = train(_config(out), scenes64, log=quiet)
    return out, results


def _history(folder: Path) -> list[dict]:
    timing = ("seconds", "per_s")
    return [{k: v for k, v in json.loads(line).items() if not any(t in k for t in timing)}
            for line in (folder / "metrics.jsonl").read_text().splitlines()]


def test_a_run_writes_the_segmentation_report(seg_run):
    import mobilenets
    from mobilenets.segmentation import SegmentationModel

    out, results = seg_run
    history = _history(out)
    assert [r["epoch"] for r in history] == [1, 2]
    assert {"train_loss", "train_pixel_accuracy", "val_loss", "val_miou", "val_pixel_accuracy"} <= set(history[0])
    assert "train_top1" not in history[0] and "val_top1" not in history[0]
    best = max(history, key=lambda r: r["val_miou"])
    assert results["best_epoch"] == best["epoch"] and results["best_val_miou"] == best["val_miou"]
    assert results["test_images"] == COUNTS["test"]
    assert 0.0 < results["test_miou"] <= results["test_pixel_accuracy"] <= 1.0
    assert list(results["per_class_iou"])[0] == "background" and len(results["per_class_iou"]) == 11
    present = [v for v in results["per_class_iou"].values() if v is not None]
    assert results["test_miou"] == pytest.approx(sum(present) / len(present))
    assert json.loads((out / "results.json").read_text())["test_miou"] == results["test_miou"]
    for name in ("curves.png", "confusion.png", "best.pt", "last.pt"):
        assert (out / name).stat().st_size > 0
    model = mobilenets.load(out / "best.safetensors")
    assert isinstance(model, SegmentationModel) and model.info.input_size == (1, 64, 64)
    assert model.info.extra["training"]["best_val_miou"] == results["best_val_miou"]
    assert model.info.extra["training"]["test_miou"] == results["test_miou"]
    assert model(torch.zeros(1, 1, 64, 64)).shape == (1, 11, 64, 64)


def test_resume_mid_epoch_ends_exactly_like_the_uninterrupted_run(seg_run, scenes64, tmp_path):
    from mobilenets.train.trainer import Trainer, train

    reference, _ = seg_run
    cfg = _config(tmp_path / "run")
    trainer = Trainer(cfg, scenes64, log=quiet)
    trainer.on_step = lambda t: t.request_stop() if (t.epoch, t.step_in_epoch) == (1, 2) else None
    with pytest.raises(KeyboardInterrupt):
        trainer.fit()
    trainer.close()
    state = torch.load(tmp_path / "run" / "last.pt", weights_only=True)
    assert (state["epoch"], state["step_in_epoch"]) == (1, 2) and state["sums"]["images"] == 16
    cfg.resume = True
    train(cfg, scenes64, log=quiet)
    assert _history(tmp_path / "run") == _history(reference)
    ours = torch.load(tmp_path / "run" / "last.pt", weights_only=True)["model"]
    theirs = torch.load(reference / "last.pt", weights_only=True)["model"]
    assert all(torch.equal(ours[k], theirs[k]) for k in theirs)


def test_evaluate_counts_what_an_independent_count_finds(seg_run, scenes64, capsys):
    import mobilenets
    from mobilenets.cli import main

    out, results = seg_run
    assert main(["evaluate", str(out), "--limit-batches", "1", "--batch-size", "8", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    # the first 8 test scenes are the run's test split: evaluate repeats its numbers
    assert report["images"] == 8 and report["miou"] == pytest.approx(results["test_miou"], abs=1e-12)
    # counted again here with numpy, from the model's logits and the raw scenes downsized as evaluation does
    model = mobilenets.load(out / "best.safetensors").eval()
    expected = np.zeros((11, 11), dtype=np.int64)
    for i in range(8):
        image, mask = scenes64.test[i]
        predicted = model(image[None]).argmax(dim=1)[0].numpy()
        np.add.at(expected, (mask.numpy().ravel(), predicted.ravel()), 1)
    assert report["confusion"] == expected.tolist()
    iou = [expected[c, c] / (expected[c].sum() + expected[:, c].sum() - expected[c, c]) for c in range(11)
           if expected[c].sum() + expected[:, c].sum() > 0]
    assert report["miou"] == pytest.approx(float(np.mean(iou)))
    assert report["pixel_accuracy"] == pytest.approx(np.trace(expected) / expected.sum())
    assert report["pixels"] == 8 * 64 * 64
    assert main(["evaluate", str(out), "--limit-batches", "1", "--batch-size", "8"]) == 0
    text = capsys.readouterr().out
    assert f"mIoU {report['miou']:.2%}" in text and "per-class IoU:" in text and "background" in text
    assert main(["evaluate", str(out), "--dataset", "cifar10"]) == 2
    assert "unknown segmentation dataset 'cifar10'" in capsys.readouterr().err


def test_predict_writes_the_mask_and_the_overlay(seg_run, tmp_path, capsys):
    import mobilenets
    from mobilenets.cli import main
    from mobilenets.data.fashion_mnist import load_fashion_mnist
    from mobilenets.data.scenes import FashionMNISTScenes
    from mobilenets.data.segmentation import read_mask
    from mobilenets.train.segmentation_predict import overlay

    out, _ = seg_run
    _, test, _ = load_fashion_mnist(FMNIST, allow_download=False)
    scene = FashionMNISTScenes(test, 1, seed=9, size=96).scene(0)  # another size than the model's 64
    Image.fromarray(scene.image[0].numpy()).save(tmp_path / "scene.png")
    assert main(["predict", str(out), str(tmp_path / "scene.png"), "--output-dir", str(tmp_path / "pred"),
                 "--json"]) == 0
    [item] = json.loads(capsys.readouterr().out)
    # the model's own mask, preprocessed as evaluation does: shorter side to 64, logits back to 96 px
    model = mobilenets.load(out / "best.safetensors").eval()
    meta = model.info
    from torchvision.transforms.v2 import functional as TF

    x = TF.resize(scene.image, [64], antialias=True)[None].float() / 255  # resized as uint8, as evaluation does
    x = (x - meta.mean[0]) / meta.std[0]
    with torch.no_grad():
        logits = torch.nn.functional.interpolate(model(x), size=(96, 96), mode="bilinear", align_corners=False)
    expected = logits[0].argmax(dim=0)
    written = read_mask(Path(item["mask_png"]), 11)
    assert torch.equal(written, expected)
    names = meta.extra["class_names"]
    shares = {names[c]: float((written == c).float().mean()) for c in torch.unique(written).tolist()}
    assert item["classes"] == pytest.approx(shares) and math.isclose(sum(item["classes"].values()), 1.0)
    picture = np.asarray(Image.open(item["overlay_png"]).convert("RGB"))
    assert picture.shape[0] >= 96 and picture.shape[1] > 96  # the legend on the right
    rgb = np.repeat(scene.image[0].numpy()[..., None], 3, axis=2)
    assert np.array_equal(picture[:96, :96], overlay(rgb, written.numpy().astype(np.uint8)))
    assert main(["predict", str(out), str(tmp_path / "scene.png"), "--output-dir", str(tmp_path / "pred")]) == 0
    assert "_overlay.png" in capsys.readouterr().out


def test_predict_refuses_what_does_not_apply(seg_run, tmp_path, capsys):
    from mobilenets.cli import main

    out, _ = seg_run
    Image.new("L", (70, 50)).save(tmp_path / "a.png")
    assert main(["predict", str(out), str(tmp_path / "a.png"), "--top-k", "2"]) == 2
    assert "--top-k ranks the classes of a whole image" in capsys.readouterr().err
    assert main(["predict", str(out), str(tmp_path / "a.png"), "--backend", "onnxruntime"]) == 2
    assert "segmentation predict takes images of any size" in capsys.readouterr().err
    (tmp_path / "b").mkdir()
    Image.new("L", (70, 50)).save(tmp_path / "b" / "a.png")
    assert main(["predict", str(out), str(tmp_path / "a.png"), str(tmp_path / "b" / "a.png"),
                 "--output-dir", str(tmp_path / "p")]) == 2
    assert "images with the same name would write the same PNGs: a" in capsys.readouterr().err
    assert not (tmp_path / "p").exists()


# -- the user's own data, through the command line ---------------------------------------------------------------

def _mask_folder(root: Path, count: int) -> None:
    """Grey squares (class 1) and bright discs (class 2) on black, 255 around the border."""
    rng = np.random.default_rng(0)
    for split in ("train", "val"):
        (root / split / "images").mkdir(parents=True)
        (root / split / "masks").mkdir(parents=True)
        for i in range(count):
            mask = np.zeros((48, 56), dtype=np.uint8)
            y, x = rng.integers(4, 24, size=2)
            mask[y:y + 16, x:x + 16] = 1
            yy, xx = np.ogrid[:48, :56]
            mask[(yy - 30) ** 2 + (xx - 40) ** 2 < 64] = 2
            image = np.stack([mask * 100] * 3, axis=-1).astype(np.uint8)
            mask[0, :] = IGNORE_INDEX
            Image.fromarray(image).save(root / split / "images" / f"{i}.jpg")
            Image.fromarray(mask, mode="L").save(root / split / "masks" / f"{i}.png")


def test_train_on_a_mask_folder_from_the_command_line(tmp_path, capsys, restore_threads):
    from mobilenets.cli import main

    _mask_folder(tmp_path / "data", 6)
    args = ["train", "--model", "lraspp_mobilenet_v3_small", "--width-mult", "0.35", "--dataset", "mask-folder",
            "--data-dir", str(tmp_path / "data"), "--classes", "background,square,disc", "--image-size", "48",
            "--epochs", "1", "--batch-size", "2", "--val-fraction", "0.34", "--threads", "1", "--no-progress",
            "--no-tensorboard", "--output", str(tmp_path / "run")]
    assert main(args) == 0
    text = capsys.readouterr().out
    assert "test mIoU" in text and "pixel accuracy" in text and "(6 images;" in text
    results = json.loads((tmp_path / "run" / "results.json").read_text())
    assert list(results["per_class_iou"]) == ["background", "square", "disc"]
    training = json.loads((tmp_path / "run" / "metrics.jsonl").read_text().splitlines()[0])
    assert training["val_miou"] >= 0
    assert main(["evaluate", str(tmp_path / "run"), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    # the border row is 255 in every mask: never counted
    assert report["dataset"] == "mask_folder" and report["pixels"] == 6 * 47 * 56
    assert report["miou"] == pytest.approx(results["test_miou"])
    # a mask folder's classes are required to read it
    assert main(args[:9] + args[11:-1] + [str(tmp_path / "other")]) == 2
    assert "dataset mask_folder needs the class names (--classes" in capsys.readouterr().err


# -- options that make no sense for segmentation ------------------------------------------------------------------

@pytest.mark.parametrize("overrides, message", [
    (dict(progressive_sizes=[32, 64]), "--progressive-sizes is a classification option"),
    (dict(teachers=["t.safetensors"]), "--teacher is a classification option"),
    (dict(augment="randaugment"), "--augment randaugment is a classification option"),
    (dict(random_erasing=0.25), "--random-erasing is a classification option"),
    (dict(dataset="cifar10"), "dataset cifar10 is for classification models and lraspp_mobilenet_v3_small is a "
                              "segmentation model; its datasets: fashion_mnist_scenes, voc, mask_folder"),
    (dict(dataset="voc", classes=["a", "b"]), "--classes names the mask values of a mask_folder dataset"),
    (dict(classes=["only"]), "--classes must name at least two classes"),
])
def test_segmentation_refuses_classification_options(tmp_path, overrides, message):
    options = dict(model="lraspp_mobilenet_v3_small", output=str(tmp_path / "run"))
    options.update(overrides)
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace("[", r"\[")):
        TrainConfig(**options)
    assert not (tmp_path / "run").exists()


def test_the_task_picks_the_defaults(tmp_path):
    segmentation = TrainConfig(model="deeplabv3_mobilenet_v2")
    assert segmentation.dataset == "fashion_mnist_scenes" and segmentation.random_erasing is None
    assert TrainConfig(model="lraspp_mobilenet_v2", dataset="Fashion-MNIST-Scenes", random_erasing=0).dataset == \
        "fashion_mnist_scenes"
    classification = TrainConfig(model="mobilenet_v2")
    assert classification.dataset == "fashion_mnist" and classification.random_erasing == 0.25
    with pytest.raises(ValueError, match="dataset fashion_mnist_scenes is for segmentation models"):
        TrainConfig(model="mobilenet_v2", dataset="fashion_mnist_scenes")
    with pytest.raises(ValueError, match="--classes names the mask values of a segmentation mask folder"):
        TrainConfig(model="mobilenet_v2", classes=["a", "b"])
