"""`mobilenets train/evaluate/predict` end to end on real Fashion-MNIST (a few steps), and prediction preprocessing."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import mobilenets
from mobilenets.cli import build_parser, main

FMNIST = Path("/usr/share/datasets/fashion-mnist")
pytestmark = [
    pytest.mark.skipif(not FMNIST.is_dir(), reason="needs Debian's dataset-fashion-mnist (make data)"),
    pytest.mark.usefixtures("restore_threads"),
]


@pytest.fixture(scope="module")
def fmnist():
    from mobilenets.data import build_data

    return build_data("fashion_mnist", FMNIST)


def _first_test_images(bundle, n: int = 256) -> tuple[torch.Tensor, torch.Tensor]:
    from torch.utils.data import DataLoader

    return next(iter(DataLoader(bundle.test, batch_size=n)))


def test_train_cli_writes_run_on_real_data(fmnist_run, fmnist, capsys):
    results = json.loads((fmnist_run / "results.json").read_text())
    assert results["test_images"] == 256
    # a count of correct images out of 256, and the count the saved model gets on the first 256 test images
    correct = results["test_top1"] * 256
    assert correct == round(correct)
    images, labels = _first_test_images(fmnist)
    model = mobilenets.load(fmnist_run / "best.safetensors").eval()
    with torch.no_grad():
        predicted = model(images).argmax(1)
    assert int((predicted == labels).sum()) == round(correct)
    assert len(predicted.unique()) >= 3, predicted.bincount()  # not one class for everything
    meta = mobilenets.read_metadata(fmnist_run / "best.safetensors")
    assert meta["class_names"][0] == "T-shirt/top" and meta["input_size"] == [1, 28, 28]
    assert meta["options"]["small_input"] is True and meta["options"]["in_chans"] == 1
    assert meta["training"]["dataset"] == "fashion_mnist" and meta["training"]["data_dir"] == str(FMNIST)
    # a second run into the same folder is refused with exit status 2 and a one-line reason
    assert main(["train", "--epochs", "1", "--output", str(fmnist_run), "--no-progress"]) == 2
    assert "already holds a run" in capsys.readouterr().err


def test_evaluate_json_matches_the_training_report(fmnist_run, tmp_path, capsys):
    png = tmp_path / "cm.png"
    assert main(["evaluate", str(fmnist_run), "--json", "--limit-batches", "1", "--confusion", str(png)]) == 0
    result = json.loads(capsys.readouterr().out)
    training = json.loads((fmnist_run / "results.json").read_text())
    # same 256 test images, same weights: the same accuracy as the training run's final test pass
    assert result["images"] == 256 and result["top1"] == pytest.approx(training["test_top1"])
    assert 0.0 <= result["top1"] <= result["top5"] <= 1.0
    confusion = torch.tensor(result["confusion"])
    assert confusion.sum() == 256 and confusion.diagonal().sum() / 256 == pytest.approx(result["top1"])
    assert list(result["per_class"]) == mobilenets.read_metadata(fmnist_run / "best.safetensors")["class_names"]
    assert png.read_bytes()[:4] == b"\x89PNG"


def test_evaluate_text_report_and_bad_checkpoint(fmnist_run, tmp_path, capsys):
    assert main(["evaluate", str(fmnist_run / "best.safetensors"), "--limit-batches", "1", "--split", "val"]) == 0
    out = capsys.readouterr().out
    assert "top-1" in out and "Ankle boot" in out and (fmnist_run / "confusion_val.png").is_file()
    assert main(["evaluate", str(tmp_path / "missing.safetensors")]) == 2
    assert "no such checkpoint" in capsys.readouterr().err


def test_evaluate_and_predict_take_a_training_state(fmnist_run, tmp_path, capsys):
    """last.pt/best.pt: the state's EMA weights, in the architecture and metadata of the run's best.safetensors."""
    import shutil

    assert main(["evaluate", str(fmnist_run / "last.pt"), "--json", "--limit-batches", "1"]) == 0
    result = json.loads(capsys.readouterr().out)
    training = json.loads((fmnist_run / "results.json").read_text())
    # one epoch: the last state is the best one, whose EMA weights the run tested
    assert result["top1"] == pytest.approx(training["test_top1"])
    assert result["weights"] == "EMA weights of last.pt, after epoch 1"
    # the weights come from the state, not from best.safetensors: a state whose classifier favours class 3
    # predicts class 3 for every image
    run = tmp_path / "run"
    run.mkdir()
    shutil.copy(fmnist_run / "best.safetensors", run / "best.safetensors")
    state = torch.load(fmnist_run / "last.pt", map_location="cpu", weights_only=True)
    state["ema"]["module.classifier.bias"][3] += 1e4
    torch.save(state, run / "last.pt")
    assert main(["evaluate", str(run / "last.pt"), "--json", "--limit-batches", "1"]) == 0
    result = json.loads(capsys.readouterr().out)
    confusion = torch.tensor(result["confusion"])
    assert confusion[:, 3].sum() == 256 and result["top1"] == pytest.approx(confusion[3, 3].item() / 256)
    image = tmp_path / "x.png"
    Image.fromarray(_test_image(1)).save(image)
    assert main(["predict", str(run / "last.pt"), str(image), "--top-k", "1", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)[0]["predictions"][0]["index"] == 3
    # what is refused: a state without its run's best.safetensors, a .pt that is not a training state
    (run / "best.safetensors").unlink()
    assert main(["evaluate", str(run / "last.pt")]) == 2
    assert "best.safetensors is missing" in capsys.readouterr().err
    torch.save({"weight": torch.zeros(2)}, tmp_path / "plain.pt")
    assert main(["evaluate", str(tmp_path / "plain.pt")]) == 2
    assert "not a mobilenets training state" in capsys.readouterr().err


def _test_image(index: int = 0) -> np.ndarray:
    from mobilenets.data.fashion_mnist import read_idx

    return read_idx(FMNIST / "t10k-images-idx3-ubyte.gz")[index]


def test_predict_matches_the_evaluation_pipeline_for_any_image_mode(fmnist_run, fmnist, tmp_path):
    from mobilenets.train.predict import predict_files

    pixels = _test_image(0)
    paths = {
        "gray8": tmp_path / "gray8.png",
        "gray16": tmp_path / "gray16.png",
        "rgb": tmp_path / "rgb.jpg",
        "rgba_big": tmp_path / "rgba_big.png",
    }
    Image.fromarray(pixels, mode="L").save(paths["gray8"])
    Image.fromarray(pixels.astype(np.uint16) * 257).save(paths["gray16"])  # 16-bit: same image, full range
    Image.fromarray(np.stack([pixels] * 3, axis=-1)).save(paths["rgb"], quality=100)
    rgba = np.zeros((280, 420, 4), dtype=np.uint8)
    rgba[..., 3] = 255
    rgba[:, :, :3] = 90
    Image.fromarray(rgba, mode="RGBA").save(paths["rgba_big"])
    results = predict_files(fmnist_run, list(paths.values()), top_k=3)
    by_name = {Path(r["image"]).stem: r["predictions"] for r in results}
    assert all(len(p) == 3 for p in by_name.values())
    assert all(p[0]["probability"] >= p[1]["probability"] >= p[2]["probability"] for p in by_name.values())
    # reference: the model on the test split's tensor of the same image
    model = mobilenets.load(fmnist_run / "best.safetensors").eval()
    bundle = fmnist
    with torch.no_grad():
        expected = model(bundle.test[0][0][None]).softmax(1)[0]
    top = by_name["gray8"][0]
    assert top["class"] == bundle.class_names[int(expected.argmax())]
    assert top["probability"] == pytest.approx(float(expected.max()), abs=1e-5)
    assert by_name["gray16"] == by_name["gray8"]
    assert by_name["rgb"][0]["class"] == top["class"]
    # opaque grey RGBA at 15x the size: luminance 90 everywhere once converted, resized and cropped to 28x28
    meta = mobilenets.read_metadata(fmnist_run / "best.safetensors")
    grey = (torch.full((1, 1, 28, 28), 90 / 255) - meta["mean"][0]) / meta["std"][0]
    with torch.no_grad():
        grey_probs = model(grey).softmax(1)[0]
    assert not torch.allclose(grey_probs, expected, atol=1e-3)  # another image, other probabilities
    values, indices = grey_probs.topk(3)
    assert [p["index"] for p in by_name["rgba_big"]] == indices.tolist()
    assert [p["class"] for p in by_name["rgba_big"]] == [bundle.class_names[i] for i in indices.tolist()]
    for p, value in zip(by_name["rgba_big"], values.tolist()):
        assert p["probability"] == pytest.approx(value, abs=1e-5)


def test_predict_cli_json_and_errors(fmnist_run, fmnist, tmp_path, capsys):
    from mobilenets.train.predict import predict_files

    image = tmp_path / "x.png"
    Image.fromarray(_test_image(1), mode="L").save(image)
    assert main(["predict", str(fmnist_run / "best.safetensors"), str(image), "--top-k", "2", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out[0]["image"] == str(image)
    # the two most probable classes of the model on the test split's tensor of that image, by name and index
    model = mobilenets.load(fmnist_run / "best.safetensors").eval()
    with torch.no_grad():
        values, indices = model(fmnist.test[1][0][None]).softmax(1)[0].topk(2)
    predictions = out[0]["predictions"]
    assert [p["index"] for p in predictions] == indices.tolist()
    assert [p["class"] for p in predictions] == [fmnist.class_names[i] for i in indices.tolist()]
    assert [p["probability"] for p in predictions] == pytest.approx(values.tolist(), abs=1e-5)
    assert predictions == predict_files(fmnist_run, [image], top_k=2)[0]["predictions"]  # as the Python API
    bogus = tmp_path / "bogus.png"
    bogus.write_text("not an image")
    assert main(["predict", str(fmnist_run), str(bogus)]) == 2
    assert "not a readable image" in capsys.readouterr().err
    assert main(["predict", str(fmnist_run), str(tmp_path / "absent.png")]) == 2
    assert "no such image file" in capsys.readouterr().err


def _int8_min_agreement() -> float:
    """The top-1 agreement with fp32 below which `mobilenets export --int8` refuses its file (the default of
    --min-agreement): the INT8 quality the library promises."""
    return build_parser().parse_args(["export", "m.safetensors", "--output", "m.onnx"]).min_agreement


def test_evaluate_and_predict_on_exported_backends(fmnist_run, fmnist, tmp_path, capsys):
    pytest.importorskip("onnxruntime")
    # the 256 images evaluate measures on: how close to a tie fp32 puts each one's top two classes
    model = mobilenets.load(fmnist_run / "best.safetensors").eval()
    with torch.no_grad():
        top2 = model(_first_test_images(fmnist)[0]).topk(2, dim=1).values
    # an fp32 runtime within export's tolerance (1e-4 per logit) of PyTorch can only swap the top two classes of an
    # image whose margin is under 2e-4 (none here); INT8 may change up to the share the library accepts, 25 of
    # 256 (here 8 on ONNX Runtime, 9 on OpenVINO)
    near_ties = int((top2[:, 0] - top2[:, 1] < 2e-4).sum())
    int8_changes = int((1 - _int8_min_agreement()) * 256)
    reference = None
    openvino = ("openvino", "openvino-int8") if importlib.util.find_spec("openvino") else ()
    for backend in ("pytorch", "onnxruntime", "onnxruntime-int8", *openvino):
        assert main(["evaluate", str(fmnist_run), "--json", "--limit-batches", "1", "--backend", backend]) == 0
        result = json.loads(capsys.readouterr().out)
        assert result["backend"] == backend and result["images"] == 256
        assert result.get("calibration_split") == ("val" if backend.endswith("int8") else None)
        confusion = torch.tensor(result["confusion"])
        if reference is None:
            reference = confusion
            # predictions spread over several classes, else equal confusion matrices would say nothing
            assert (reference.sum(0) > 0).sum() >= 3, reference.sum(0)
            continue
        assert torch.equal(confusion.sum(1), reference.sum(1))  # the same images, the same labels
        # an image whose prediction changes moves one count between two columns of its row: the entries' absolute
        # differences sum to at most twice the changed images, and top-1 moves by at most 1/256 per changed image
        changed = (confusion - reference).abs().sum().item() / 2
        top1_moved = abs(result["top1"] - reference.diagonal().sum().item() / 256) * 256
        allowed = int8_changes if backend.endswith("int8") else near_ties
        assert changed <= allowed and top1_moved <= allowed + 1e-6, (backend, allowed, confusion - reference)
    assert main(["evaluate", str(fmnist_run), "--split", "val", "--backend", "onnxruntime-int8"]) == 2
    assert "must not measure on it" in capsys.readouterr().err

    image = tmp_path / "x.png"
    Image.fromarray(_test_image(2), mode="L").save(image)
    outputs = {}
    for backend in ("pytorch", "onnxruntime", *openvino[:1]):
        assert main(["predict", str(fmnist_run), str(image), "--json", "--backend", backend]) == 0
        outputs[backend] = json.loads(capsys.readouterr().out)[0]["predictions"]
    for backend in ("onnxruntime", *openvino[:1]):
        assert [p["index"] for p in outputs[backend]] == [p["index"] for p in outputs["pytorch"]]
        for a, b in zip(outputs[backend], outputs["pytorch"]):
            assert a["probability"] == pytest.approx(b["probability"], abs=1e-5)
