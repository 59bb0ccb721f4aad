"""Export's bad-input and bad-model errors: one line naming the path given, no file left that failed."""

import pytest
import torch

import mobilenets
from mobilenets.cli import main
from mobilenets.deploy import ExportVerificationError, export_onnx, export_torchscript, verify_onnx, verify_torchscript

pytest.importorskip("onnxruntime")
pytestmark = pytest.mark.usefixtures("one_thread")
SIZE = (3, 32, 32)


def _model(poison: float = 0.0) -> mobilenets.MobileNet:
    model = mobilenets.create_model("mobilenet_v3_small", width_mult=0.35, num_classes=4).eval()
    model.info = model.info.updated(input_size=SIZE)
    if poison:
        with torch.no_grad():
            model.classifier.weight[1, 0] = poison  # one class's logit: NaN or inf for every input
    return model


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return mobilenets.save(_model(), tmp_path_factory.mktemp("ckpt") / "m.safetensors")


@pytest.mark.parametrize("poison", [float("nan"), float("inf")])
def test_non_finite_outputs_fail_verification(tmp_path, poison):
    """Before: NaN on both sides compared as a difference of 0 and the export was "verified"."""
    model = _model(poison)
    onnx_path = export_onnx(model, tmp_path / "m.onnx")
    with pytest.raises(ExportVerificationError) as exc:
        verify_onnx(model, onnx_path)
    message = str(exc.value)
    assert "1 of the PyTorch model's 4 outputs on random inputs are NaN or infinite" in message
    assert "the weights hold 1 NaN/infinite values (first in classifier.weight)" in message
    ts_path = export_torchscript(model, tmp_path / "m.pt")
    with pytest.raises(ExportVerificationError, match="4 outputs on random inputs are NaN or infinite"):
        verify_torchscript(model, ts_path, batch_sizes=(1,))


def test_cli_non_finite_export_fails_and_removes_the_file(tmp_path, capsys):
    path = mobilenets.save(_model(float("nan")), tmp_path / "nan.safetensors")
    out = tmp_path / "nan.onnx"
    assert main(["export", str(path), "--output", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "NaN or infinite" in err and f"{out} removed" in err
    assert not out.exists()


def test_verify_label_names_the_file_the_user_asked_for(tmp_path):
    model = _model(float("nan"))
    path = export_onnx(model, tmp_path / "intermediate.onnx")
    with pytest.raises(ExportVerificationError, match="^the fp32 graph of out.onnx not verified"):
        verify_onnx(model, path, label="the fp32 graph of out.onnx")


@pytest.mark.parametrize("fmt", ["onnx", "torchscript"])
def test_output_that_cannot_be_a_file(tmp_path, checkpoint, capsys, fmt):
    folder = tmp_path / "exports"
    folder.mkdir()
    assert main(["export", str(checkpoint), "--format", fmt, "--output", str(folder)]) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"mobilenets export: error: {folder}: is a directory; give the path of the file to write"
    nested = checkpoint.parent / "m.safetensors" / "m.onnx"  # under a file
    assert main(["export", str(checkpoint), "--format", fmt, "--output", str(nested)]) == 2
    err = capsys.readouterr().err
    assert f"{nested}: {checkpoint} is a file, not a folder" in err and ".tmp" not in err
    assert list(folder.iterdir()) == []


def test_export_of_a_training_state_says_what_to_export(tmp_path, capsys):
    from mobilenets.train.trainer import STATE_FORMAT

    state = tmp_path / "last.pt"
    torch.save({"format": STATE_FORMAT, "model": _model().state_dict(), "ema": None, "optimizer": {}}, state)
    assert main(["export", str(state), "--output", str(tmp_path / "m.onnx")]) == 2
    err = capsys.readouterr().err
    assert "a mobilenets training state" in err and str(tmp_path / "best.safetensors") in err
    assert "header" not in err
