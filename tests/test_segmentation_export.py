"""Segmentation models deployed (issue #23, item 6): ONNX files at a fixed and at symbolic sizes compute what
PyTorch computes, logits at the input's size; INT8 files agree with fp32 and report the mIoU they keep."""

import re

import pytest
import torch
from torch import nn

import mobilenets
from mobilenets.cli import main
from mobilenets.deploy import ExportVerificationError, export_onnx, onnxruntime_predictor, verify_onnx
from mobilenets.deploy.onnx_export import other_sizes

ort = pytest.importorskip("onnxruntime")

SIZE = (1, 64, 64)
CLASSES = 11
pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def seg_model():
    """A tiny LR-ASPP (V3-Large x0.35, one channel) with non-trivial batch-norm statistics, so that export
    mistakes show in its logits (test_export.trained_like)."""
    from test_export import trained_like

    gen = torch.Generator().manual_seed(0)
    model = trained_like("lraspp_mobilenet_v3_large", inputs=[torch.randn(8, *SIZE, generator=gen) for _ in range(2)],
                         in_chans=1, num_classes=CLASSES)
    with torch.no_grad():
        logits = model(torch.randn(2, *SIZE, generator=gen))
    # precondition: logits of order 1 that vary over pixels, so 1e-4 is a real bound and argmax means something
    assert logits.abs().max() > 0.5 and logits.argmax(1).unique().numel() > 1
    return model


@pytest.fixture(scope="module")
def seg_checkpoint(seg_model, tmp_path_factory):
    path = tmp_path_factory.mktemp("seg") / "lraspp.safetensors"
    mobilenets.save(seg_model, path, input_size=list(SIZE))
    return path


def _run(path, x: torch.Tensor) -> torch.Tensor:
    return onnxruntime_predictor(path, threads=1)(x)


def test_fixed_size_export_matches_pytorch(seg_model, tmp_path):
    # the TorchScript-based exporter here, the dynamo one below (opset 18, the default) with symbolic sizes
    path = export_onnx(seg_model, tmp_path / "fixed.onnx", SIZE, opset=17)
    session = ort.InferenceSession(str(path))
    assert session.get_inputs()[0].shape == [1, *SIZE]
    assert session.get_outputs()[0].shape == [1, CLASSES, *SIZE[1:]]  # logits at the input's resolution
    x = torch.randn(1, *SIZE, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        expected = seg_model(x)
    assert (_run(path, x) - expected).abs().max() <= 1e-4
    result = verify_onnx(seg_model, path, SIZE)
    assert result.max_abs_diff <= 1e-4 and result.sizes == ((64, 64),)
    assert result.top1_agreement == 1.0  # per pixel
    # a fixed file is verified at its size only, and says so rather than ignore other sizes
    with pytest.raises(ValueError, match="takes inputs of 64x64 only"):
        verify_onnx(seg_model, path, SIZE, sizes=[(96, 96)])


@pytest.mark.parametrize("opset", [17, 18])  # the TorchScript-based exporter and the dynamo one
def test_cli_dynamic_size_export_verified_at_other_sizes(seg_model, seg_checkpoint, tmp_path, capsys, opset):
    out = tmp_path / "dynamic.onnx"
    assert main(["export", str(seg_checkpoint), "--output", str(out), "--dynamic-size", "--dynamic-batch",
                 "--opset", str(opset)]) == 0
    stdout = capsys.readouterr().out
    verified = re.search(r"max \|PyTorch - exported\| = (\S+) \(tolerance 1e-04\) over batches \[1, 3\] at "
                         r"64x64, 33x81, 81x33, top-1 agreement 100\.0%", stdout)
    assert verified, stdout
    assert float(verified.group(1)) <= 1e-4
    session = ort.InferenceSession(str(out))
    assert session.get_inputs()[0].shape == ["batch", 1, "height", "width"]
    # the file on its own, at sizes the command did not check: odd, non-square, under and over the export size
    gen = torch.Generator().manual_seed(4)
    for height, width in [(47, 90), (130, 72)]:
        x = torch.randn(2, 1, height, width, generator=gen)
        with torch.no_grad():
            expected = seg_model(x)
        got = _run(out, x)
        assert got.shape == (2, CLASSES, height, width)
        assert (got - expected).abs().max() <= 1e-4


class _FrozenWidth(nn.Module):
    """Scales by its input's width read as a Python number, which the TorchScript tracer records as a constant:
    a file traced at one width computes something else at another."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * float(x.shape[-1])


def test_dynamic_file_wrong_at_other_sizes_is_caught(tmp_path):
    model = _FrozenWidth()
    with pytest.warns(torch.jit.TracerWarning):
        path = export_onnx(model, tmp_path / "frozen.onnx", SIZE, opset=17, dynamic_size=True)
    assert verify_onnx(model, path, SIZE, sizes=[(32, 64)]).max_abs_diff == 0  # right where it was traced
    with pytest.raises(ExportVerificationError, match="does not match PyTorch"):
        verify_onnx(model, path, SIZE)  # the default: other_sizes, where the width differs


def test_other_sizes_are_odd_non_square_and_above_the_minimum():
    assert other_sizes((3, 512, 512)) == ((257, 641), (641, 257))
    assert other_sizes((1, 40, 40), smallest=32) == ((33, 51), (51, 33))


def test_dynamic_size_errors(seg_checkpoint, tmp_path, capsys):
    out = tmp_path / "x.onnx"
    for extra in (["--int8"], ["--format", "torchscript"]):
        assert main(["export", str(seg_checkpoint), "--output", str(out), "--dynamic-size", *extra]) == 2
        assert "--dynamic-size applies to the fp32 ONNX file" in capsys.readouterr().err
    # ONNX Runtime's layout repeats gates to a known size: refused rather than left undone
    assert main(["export", str(seg_checkpoint), "--output", str(out), "--dynamic-size", "--onnxruntime-layout"]) == 2
    assert "which dynamic_size leaves open" in capsys.readouterr().err
    # the paper's LR-ASPP pool takes its window from H and W: the TorchScript exporter cannot leave them symbolic
    paper = mobilenets.create_model("lraspp_mobilenet_v3_large", width_mult=0.35, in_chans=1, pooling="paper").eval()
    with pytest.raises(ValueError, match="cannot leave height and width symbolic .* use opset >= 18"):
        export_onnx(paper, out, SIZE, opset=17, dynamic_size=True)
    assert not out.exists()


# -- INT8 ----------------------------------------------------------------------------------------------------

FMNIST = "/usr/share/datasets/fashion-mnist"


@pytest.fixture(scope="module")
def scenes_run(tmp_path_factory, restore_threads):
    """A `mobilenets train` run of LR-ASPP (V3-Large x0.35) on real Fashion-MNIST scenes at 64 px: 40 AdamW steps
    of 16 scenes, enough to segment garments from background (about 95% of pixels agree between fp32 and INT8,
    mIoU about 12%), so that INT8's agreement measures quantization, not near-tied logits."""
    import os

    if not os.path.isdir(FMNIST):
        pytest.skip("needs Debian's dataset-fashion-mnist (make data)")
    out = tmp_path_factory.mktemp("scenes") / "run"
    assert main([
        "train", "--model", "lraspp_mobilenet_v3_large", "--width-mult", "0.35", "--dataset", "fashion_mnist_scenes",
        "--data-dir", FMNIST, "--image-size", "64", "--epochs", "1", "--limit-train-batches", "40",
        "--limit-val-batches", "1", "--batch-size", "16", "--threads", "1", "--opt", "adamw", "--lr", "0.01",
        "--bn-momentum", "0.9", "--output", str(out), "--no-progress", "--no-tensorboard",
    ]) == 0
    return out / "best.safetensors"


def test_cli_int8_export_reports_the_miou_it_keeps(scenes_run, tmp_path, capsys):
    from torch.utils.data import Subset

    from mobilenets.data.segmentation_bundle import segmentation_checkpoint_data
    from mobilenets.deploy import onnx_op_types
    from mobilenets.train.segmentation_eval import run_segmentation_eval

    out = tmp_path / "lraspp.int8.onnx"
    assert main(["export", str(scenes_run), "--int8", "--output", str(out), "--opset", "17",
                 "--calibration-batches", "2", "--check-images", "64", "--threads", "1"]) == 0
    stdout = capsys.readouterr().out
    assert "calibrated on 64 fashion_mnist_scenes validation images" in stdout, stdout
    assert "fp32 graph verified: max |PyTorch - exported|" in stdout
    check = re.search(r"INT8 check on 64 fashion_mnist_scenes test images: pixel agreement with fp32 ([\d.]+)%; "
                      r"mIoU fp32 ([\d.]+)%, INT8 ([\d.]+)% \(drop (-?[\d.]+) points\)", stdout)
    assert check, stdout
    agreement, miou_fp32, miou_int8, drop = (float(v) for v in check.groups())
    assert ops_ok(onnx_op_types(out))
    # the printed mIoUs are the ones `mobilenets evaluate`'s scoring gives, fp32 and the INT8 file on its own
    model = mobilenets.load(scenes_run).eval()
    bundle, _ = segmentation_checkpoint_data(scenes_run, model, mobilenets.read_metadata(scenes_run))
    test = Subset(bundle.test, range(64))
    fp32 = run_segmentation_eval(model, test, bundle.class_names)
    int8 = run_segmentation_eval(model, test, bundle.class_names, forward=onnxruntime_predictor(out, threads=1))
    assert fp32.miou * 100 == pytest.approx(miou_fp32, abs=0.006)
    assert int8.miou * 100 == pytest.approx(miou_int8, abs=0.006)
    assert drop == pytest.approx(miou_fp32 - miou_int8, abs=0.011)
    assert int8.miou != fp32.miou  # integer arithmetic, not the fp32 graph
    # export's own gate (--min-agreement 0.9) passed; the model predicts garments, not only background
    assert agreement >= 90.0
    assert fp32.confusion[1:, 1:].diagonal().sum() > 0


def ops_ok(ops: dict) -> bool:
    """An INT8 QDQ graph of a batch-norm-folded model: every conv fed by dequantized tensors."""
    return ops["QuantizeLinear"] > 0 and ops["DequantizeLinear"] >= ops["Conv"] and "BatchNormalization" not in ops
