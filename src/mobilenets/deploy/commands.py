"""``mobilenets export`` and ``mobilenets benchmark``."""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path
from typing import Optional, Sequence

import torch
from torch.utils.data import DataLoader, Subset

from ..argtypes import non_negative_float, positive_int, resolution, resolution_hw
from ..api import load
from ..checkpoint import atomic_write, check_output_path, read_metadata
from ..cli import CLIError
from ..data.checkpoint_data import calibration_batches, calibration_split, checkpoint_data
from ..data.segmentation_bundle import segmentation_checkpoint_data
from ..segmentation import SegmentationModel
from ..segmentation.metrics import confusion_matrix, scores
from .bench import IMPLEMENTATIONS, available_implementations, run_benchmark
from .onnx_export import (
    DEFAULT_OPSET, DEFAULT_TOLERANCE, MAX_OPSET, MIN_OPSET, ExportVerificationError, export_detector_onnx,
    export_onnx, export_torchscript, is_detector, verify_detector_onnx, verify_onnx, verify_torchscript,
)
from .mobile import (
    COREML_PRECISIONS, coreml_program, executorch_predictor, export_coreml, export_executorch, export_tflite,
    litert_predictor, remove_export, verify_executorch, verify_tflite,
)
from .quantize import export_int8_source, quantize_onnx
from .runtime import BACKENDS, onnxruntime_predictor

FORMATS = ("onnx", "torchscript", "executorch", "tflite", "coreml")
INT8_FORMATS = ("onnx", "executorch", "tflite")


def _csv(kind: type, accepted: Sequence[str] = ()):
    def parse(text: str):
        items = [t.strip() for t in text.split(",") if t.strip()]
        if not items:
            raise argparse.ArgumentTypeError("expected a comma-separated list")
        if kind is int:
            try:
                values = [int(t) for t in items]
            except ValueError:
                raise argparse.ArgumentTypeError(f"expected integers, got {text!r}") from None
            if any(v < 1 for v in values):
                raise argparse.ArgumentTypeError(f"values must be >= 1, got {text!r}")
            return values
        bad = [t for t in items if t not in accepted]
        if bad:
            raise argparse.ArgumentTypeError(f"unknown {', '.join(bad)}; accepted: {', '.join(accepted)}")
        return items

    return parse


def _int8_check(model, predict, images: torch.Tensor, labels: torch.Tensor) -> dict:
    """Top-1 agreement of the INT8 file with the fp32 checkpoint, and both accuracies, on labelled images."""
    with torch.inference_mode():
        ref = torch.cat([model(x) for x in images.split(64)]).argmax(1)
    got = torch.cat([predict(x) for x in images.split(64)]).argmax(1)
    return {
        "images": len(labels),
        "agreement": (got == ref).float().mean().item(),
        "top1_fp32": (ref == labels).float().mean().item(),
        "top1_int8": (got == labels).float().mean().item(),
    }


def _int8_segmentation_check(model, predict, batches, class_names: list[str], size: tuple) -> dict:
    """Per-pixel agreement of the INT8 file with the fp32 checkpoint, and the mIoU and pixel accuracy of both
    (:mod:`mobilenets.segmentation.metrics`), on batches of test images and their masks."""
    n = len(class_names)
    confusion = {"fp32": torch.zeros(n, n, dtype=torch.int64), "int8": torch.zeros(n, n, dtype=torch.int64)}
    agree = pixels = images = 0
    for x, masks in batches:
        if tuple(x.shape[1:]) != size:
            raise ValueError(f"a test image comes as {tuple(x.shape[1:])}; the INT8 file takes {size} only")
        with torch.inference_mode():
            ref = model(x).argmax(1)
        got = predict(x).argmax(1)
        agree += int((got == ref).sum())
        pixels += got.numel()
        images += len(x)
        confusion["fp32"] += confusion_matrix(ref, masks, n)
        confusion["int8"] += confusion_matrix(got, masks, n)
    fp32, int8 = (scores(confusion[k], class_names) for k in ("fp32", "int8"))
    return {"images": images, "agreement": agree / pixels, "miou_fp32": fp32["miou"], "miou_int8": int8["miou"],
            "pixel_accuracy_fp32": fp32["pixel_accuracy"], "pixel_accuracy_int8": int8["pixel_accuracy"]}


def _int8_data(args: argparse.Namespace, model, size: tuple):
    """Calibration batches from the checkpoint's validation images (training images for a run without a
    validation split), and test images to check the INT8 file on (never the calibration ones): one batch of
    images and labels, or for a segmentation model batches of images and masks (a mask per image is large)."""
    if args.min_agreement > 1:
        raise ValueError(f"--min-agreement is a fraction in [0, 1], got {args.min_agreement}")
    if args.resolution is not None and tuple(args.resolution) != tuple(size[1:]):
        raise ValueError(f"--int8 calibrates on the checkpoint's {_hw(*size[1:])} px images; leave out --resolution "
                         f"{_hw(*args.resolution)}")
    segmentation = isinstance(model, SegmentationModel)
    if segmentation:
        bundle, name = segmentation_checkpoint_data(Path(args.checkpoint), model, read_metadata(args.checkpoint),
                                                    args.dataset, args.data_dir, with_train=True)
    else:
        bundle, name = checkpoint_data(Path(args.checkpoint), model, args.dataset, args.data_dir, with_train=True)
    source = {"val": "validation", "train": "training"}[calibration_split(bundle)]
    try:
        calibration = calibration_batches(bundle, args.calibration_batches, args.calibration_batch_size)
    except RuntimeError as exc:  # torch's collate: images of several sizes (VOC, mask folders keep aspect)
        raise ValueError(f"{name}: its {source} images could not be batched at the checkpoint's size "
                         f"{_hw(*size[1:])} ({str(exc).splitlines()[0]}); --int8 calibrates and checks at one "
                         "size") from None
    if not calibration:
        raise ValueError(f"{name}: the {source} split is empty, nothing to calibrate on")
    if tuple(calibration[0].shape[1:]) != size:
        raise ValueError(
            f"{args.checkpoint}: {name} images come as {tuple(calibration[0].shape[1:])}, the checkpoint's input "
            f"size is {size}"
        )
    if bundle.test is None:
        raise ValueError(f"{name} has no test split here to check the INT8 file on")
    n_check = min(args.check_images, len(bundle.test))
    check = Subset(bundle.test, range(n_check))
    checks = DataLoader(check, batch_size=16) if segmentation else next(iter(DataLoader(check, batch_size=n_check)))
    seen = sum(len(b) for b in calibration)
    return calibration, checks, f"calibrated on {seen} {name} {source} images", name, bundle.class_names


def _export_int8(args: argparse.Namespace, model, size: tuple) -> int:
    """Quantize, calibrated as :func:`_int8_data` says, write the file, then check it against the fp32 model on
    test images. ONNX: the fp32 graph is verified between export and quantization."""
    if args.format not in INT8_FORMATS:
        raise ValueError(
            f"--int8 writes {', '.join(INT8_FORMATS)} files, not {args.format}"
            + (" (Core ML: --precision float16 halves the file)" if args.format == "coreml" else "")
        )
    calibration, checks, calibrated, name, class_names = _int8_data(args, model, size)
    segmentation = isinstance(model, SegmentationModel)
    verified = ""
    if args.format == "onnx":
        with tempfile.TemporaryDirectory(prefix="mobilenets-int8-") as tmp:
            # export_int8_onnx's two steps, with the float file verified between them
            fp32 = export_int8_source(model, Path(tmp) / "fp32.onnx", size, opset=args.opset)
            result = _verified(
                lambda: verify_onnx(model, fp32, size, tolerance=args.tolerance, label=f"the fp32 graph of {args.output}")
            )
            path = quantize_onnx(fp32, args.output, calibration)
        predictor = onnxruntime_predictor(path, threads=args.threads)
        what = f"onnx INT8 QDQ, input (N, {', '.join(map(str, size))})"
        verified = f"; fp32 graph verified: {result}"
    elif args.format == "executorch":
        path = export_executorch(model, args.output, size, int8=True, calibration=calibration)
        predictor = executorch_predictor(path)
        what = f"ExecuTorch XNNPACK INT8, float input (1, {', '.join(map(str, size))}) NCHW"
    else:
        path = export_tflite(model, args.output, size, int8=True, calibration=calibration,
                             channels_last_io=args.channels_last_io)
        predictor = litert_predictor(path, threads=args.threads, channels_last_io=args.channels_last_io)
        what = f"LiteRT INT8, INT8 input {_tflite_layout(args, size)} (scale and zero point in the file)"
    with predictor:
        if segmentation:
            check = _int8_segmentation_check(model, predictor, checks, class_names, size)
        else:
            check = _int8_check(model, predictor, *checks)
    print(f"wrote {path} ({what}, {calibrated}){verified}")
    agreement = "pixel agreement" if segmentation else "top-1 agreement"
    if segmentation:
        measured = (f"mIoU fp32 {check['miou_fp32']:.2%}, INT8 {check['miou_int8']:.2%} (drop "
                    f"{100 * (check['miou_fp32'] - check['miou_int8']):.2f} points); pixel accuracy fp32 "
                    f"{check['pixel_accuracy_fp32']:.2%}, INT8 {check['pixel_accuracy_int8']:.2%}")
    else:
        measured = f"top-1 fp32 {check['top1_fp32']:.2%}, INT8 {check['top1_int8']:.2%}"
    print(f"INT8 check on {check['images']} {name} test images: {agreement} with fp32 {check['agreement']:.1%}; "
          f"{measured}")
    if check["agreement"] < args.min_agreement:
        remove_export(path)
        raise ValueError(
            f"INT8 {agreement} {check['agreement']:.1%} is below --min-agreement {args.min_agreement:.1%}; "
            f"{path} removed (try more --calibration-batches, or quantization-aware fine-tuning)"
        )
    return 0


def _hw(height: int, width: int) -> str:
    """A size as ``--resolution`` takes it: ``"28"`` for a square, ``"512x1024"`` otherwise."""
    return str(width) if height == width else f"{height}x{width}"


def _tflite_layout(args: argparse.Namespace, size: tuple) -> str:
    c, h, w = size
    return f"(1, {h}, {w}, {c}) NHWC" if args.channels_last_io else f"(1, {c}, {h}, {w}) NCHW"


def _export_coreml(args: argparse.Namespace, model, size: tuple) -> int:
    """Convert, then check the program: Core ML cannot run here (Apple systems only), so its inputs, outputs
    and ops are read back instead of its outputs compared."""
    path = export_coreml(model, args.output, size, precision=args.precision)
    program = coreml_program(path)
    expected = {"image": (1, *size)}
    if program.inputs != expected or list(program.outputs) != ["logits"]:
        raise CLIError(f"{path}: the converted program has inputs {program.inputs} and outputs {program.outputs}; "
                       f"expected inputs {expected} and one output, logits")
    print(f"wrote {path} (Core ML ML program, iOS 17+, {args.precision}, input image (1, {', '.join(map(str, size))}) "
          f"NCHW, output logits {program.outputs['logits']}); not run: Core ML runs only on Apple systems. "
          f"Program: {program}")
    return 0


def _export_detector(args: argparse.Namespace, model: torch.nn.Module) -> int:
    # a detector's file holds its raw head outputs; box decoding and NMS stay in Python (docs/detection.md)
    if (args.format != "onnx" or args.int8 or args.dynamic_size or args.resolution is not None
            or args.onnxruntime_layout):
        raise ValueError(f"{model.arch} is a detector: it exports to an fp32 ONNX file of its raw head outputs at "
                         "its image_size (--format onnx, without --int8, --resolution, --dynamic-size or "
                         "--onnxruntime-layout)")
    path = export_detector_onnx(model, args.output, opset=args.opset, dynamic_batch=args.dynamic_batch)
    result = _verified(lambda: verify_detector_onnx(model, path, tolerance=args.tolerance), path)
    print(f"wrote {path} (onnx, input {tuple(model.info.input_size)}, outputs cls_logits and bbox_regression; "
          f"no NMS in the graph); verified: {result}")
    return 0


def _verified(verify, written: Optional[Path] = None):
    """``verify()``'s result; its failure as a one-line CLI error, after removing the ``written`` file that
    failed it."""
    try:
        return verify()
    except ExportVerificationError as exc:
        if written is None:
            raise CLIError(str(exc)) from None
        remove_export(written)
        raise CLIError(f"{exc}; {written} removed") from None


def _cmd_export(args: argparse.Namespace) -> int:
    if args.format != "coreml":  # an .mlpackage is a folder: export_coreml checks it
        check_output_path(args.output)  # before the work, not at the final rename
    if args.onnxruntime_layout and (args.int8 or args.format != "onnx"):
        raise ValueError("--onnxruntime-layout applies to the fp32 ONNX file: use --format onnx without --int8")
    if args.dynamic_size and (args.int8 or args.format != "onnx"):
        raise ValueError("--dynamic-size applies to the fp32 ONNX file: use --format onnx without --int8 (INT8 "
                         "files take the size they were calibrated at)")
    if args.channels_last_io and args.format != "tflite":
        raise ValueError("--channels-last-io applies to LiteRT files: use --format tflite")
    if args.precision is not None and args.format != "coreml":
        raise ValueError("--precision applies to Core ML: use --format coreml (other formats: --int8)")
    args.precision = args.precision or "float32"
    model = load(args.checkpoint)
    size = tuple(model.info.input_size)
    if is_detector(model):
        return _export_detector(args, model.eval())
    if args.int8:
        return _export_int8(args, model.eval(), size)
    if args.resolution is not None:
        size = (size[0], *args.resolution)
    if args.format == "coreml":
        return _export_coreml(args, model.eval(), size)
    if args.format == "executorch":
        path = export_executorch(model, args.output, size)
        result = _verified(lambda: verify_executorch(model, path, size, tolerance=args.tolerance), path)
        size = f"(1, {', '.join(map(str, size))}) NCHW, XNNPACK"
    elif args.format == "tflite":
        path = export_tflite(model, args.output, size, channels_last_io=args.channels_last_io)
        result = _verified(lambda: verify_tflite(model, path, size, tolerance=args.tolerance,
                                                 channels_last_io=args.channels_last_io), path)
        size = _tflite_layout(args, size)
    elif args.format == "onnx":
        path = export_onnx(model, args.output, size, opset=args.opset, dynamic_batch=args.dynamic_batch,
                           expand_gates=args.onnxruntime_layout, dynamic_size=args.dynamic_size)
        result = _verified(lambda: verify_onnx(model, path, size, tolerance=args.tolerance), path)
    else:
        path = export_torchscript(model, args.output, size)
        result = _verified(lambda: verify_torchscript(model, path, size, tolerance=args.tolerance), path)
    print(f"wrote {path} ({args.format}, input {size}); verified: {result}")
    return 0


def _plot(rows: list[dict], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    by_accuracy = any(r["accuracy"] is not None for r in rows)
    fig, ax = plt.subplots(figsize=(7, 5))
    series: dict[tuple, list[dict]] = {}
    for r in rows:
        if by_accuracy and r["accuracy"] is None:
            continue
        series.setdefault((r["implementation"], r["backend"], r["batch"]), []).append(r)
    for (impl, backend, batch), points in sorted(series.items()):
        points.sort(key=lambda r: r["macs"])
        xs = [100 * r["accuracy"] if by_accuracy else r["macs"] / 1e6 for r in points]
        ax.plot(xs, [r["latency_ms_median"] for r in points], marker="o", label=f"{impl} {backend} b{batch}")
        for x, r in zip(xs, points):
            ax.annotate(r["model"], (x, r["latency_ms_median"]), fontsize=7, alpha=0.7)
    ax.set_xlabel("top-1 accuracy (%)" if by_accuracy else "MACs (millions)")
    ax.set_ylabel("latency, median (ms)")
    threads = sorted({r["threads"] for r in rows})
    ax.set_title(f"latency vs {'accuracy' if by_accuracy else 'MACs'}, {threads} threads")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    suffix = Path(path).suffix.lstrip(".") or "png"
    atomic_write(path, lambda tmp: fig.savefig(tmp, format=suffix, dpi=120))
    plt.close(fig)


def _cmd_benchmark(args: argparse.Namespace) -> int:
    implementations = args.implementations or available_implementations()
    rows = [
        r.to_dict()
        for r in run_benchmark(
            args.models, args.backends, args.batch, args.threads, args.resolution, implementations,
            rounds=args.rounds, iters_per_round=args.iters, show_progress=not args.no_progress,
            peer_backends=args.peer_backends,
        )
    ]
    if args.plot:
        _plot(rows, args.plot)
    if args.json:
        print(json.dumps(rows))
        return 0
    width = max([22] + [len(r["model"]) for r in rows])  # checkpoint paths and the longer names fit
    header = (
        f"{'model':<{width}} {'impl':<12} {'backend':<17} {'batch':>5} {'thr':>3} {'median ms':>10} {'p90 ms':>8} "
        f"{'img/s':>8} {'MMACs':>7} {'GFLOP/s':>8}"
    )
    print(header)
    print("-" * len(header))
    for r in rows:
        print(
            f"{r['model']:<{width}} {r['implementation']:<12} {r['backend']:<17} {r['batch']:>5} {r['threads']:>3} "
            f"{r['latency_ms_median']:>10.2f} {r['latency_ms_p90']:>8.2f} {r['throughput_img_s']:>8.1f} "
            f"{r['macs'] / 1e6:>7.1f} {r['gflops']:>8.2f}"
        )
    if args.plot:
        print(f"plot: {args.plot}", file=sys.stderr)
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "export", help="export a checkpoint to ONNX, TorchScript, ExecuTorch, LiteRT or Core ML and verify it"
    )
    p.add_argument("checkpoint", help="a .safetensors checkpoint written by mobilenets.save")
    p.add_argument(
        "--format", choices=FORMATS, default="onnx",
        help="onnx, torchscript; phones (the mobile extra, batch 1): executorch (.pte, XNNPACK), tflite "
        "(LiteRT), coreml (.mlpackage, checked but not run: Core ML runs only on Apple systems)",
    )
    p.add_argument("--channels-last-io", action="store_true", help="tflite: NHWC input (default NCHW)")
    p.add_argument("--precision", choices=COREML_PRECISIONS, default=None, help="coreml: compute precision "
                   "(default float32)")
    p.add_argument("--output", required=True, help="file to write (replaced atomically)")
    p.add_argument(
        "--opset", type=int, choices=range(MIN_OPSET, MAX_OPSET + 1), metavar=f"{{{MIN_OPSET}..{MAX_OPSET}}}",
        default=DEFAULT_OPSET, help=f"ONNX opset (default {DEFAULT_OPSET}; HardSwish is native from 14)",
    )
    p.add_argument("--dynamic-batch", action="store_true", help="leave the ONNX batch dimension symbolic")
    p.add_argument(
        "--dynamic-size", action="store_true",
        help="leave the ONNX height and width symbolic (segmentation: logits at any input size); verified at the "
        "export size and two others",
    )
    p.add_argument(
        "--onnxruntime-layout", action="store_true",
        help="repeat each squeeze-excite gate over H and W (a Resize) so that ONNX Runtime's CPU provider keeps "
        "the gate multiply in its blocked layout: faster there, pointless elsewhere (docs/deployment.md)",
    )
    p.add_argument("--resolution", type=resolution_hw, default=None,
                   help="input size, N or HxW (default: the checkpoint's)")
    p.add_argument(
        "--tolerance", type=float, default=DEFAULT_TOLERANCE,
        help=f"fail when max |PyTorch - exported| exceeds this (default {DEFAULT_TOLERANCE:g})",
    )
    q = p.add_argument_group(
        "INT8", "--int8: static quantization (per-channel INT8 weights) calibrated on the validation split of "
        "the checkpoint's dataset and checked on its test split: ONNX Runtime's (QDQ) for onnx, PT2E with "
        "XNNPACK's quantizer for executorch, with litert-torch's for tflite"
    )
    q.add_argument("--int8", action="store_true", help="write an INT8 file (onnx: symbolic batch dimension)")
    q.add_argument("--calibration-batches", type=positive_int, default=8, help="validation batches (default 8)")
    q.add_argument("--calibration-batch-size", type=positive_int, default=32, help="default 32")
    q.add_argument("--dataset", default=None, help="default: the one in the checkpoint's training record")
    q.add_argument("--data-dir", default=None, help="default: the training record's")
    q.add_argument("--check-images", type=positive_int, default=1000, help="test images to check on (default 1000)")
    q.add_argument(
        "--min-agreement", type=non_negative_float, default=0.9,
        help="fail (and remove the file) when INT8 and fp32 top-1 agree on fewer test images, or pixels for a "
        "segmentation model, whose check also reports both mIoUs (default 0.9)",
    )
    q.add_argument("--threads", type=positive_int, default=None, help="ONNX Runtime or LiteRT threads for the check")
    p.set_defaults(func=_cmd_export)

    p = subparsers.add_parser(
        "benchmark", help="latency/throughput of models on eager, compile and ONNX Runtime (fp32/INT8), beside peers"
    )
    p.add_argument(
        "models", nargs="*", default=["mobilenet_v2", "mobilenet_v3_large"],
        help="registered model names or .safetensors checkpoints (default: mobilenet_v2 mobilenet_v3_large)",
    )
    p.add_argument(
        "--backends", type=_csv(str, BACKENDS), default=["eager", "onnxruntime"],
        help=f"comma-separated, from {','.join(BACKENDS)} (default eager,onnxruntime)",
    )
    p.add_argument(
        "--peer-backends", type=_csv(str, BACKENDS), default=None,
        help="backends for torchvision/timm models, a subset of --backends (default: the same)",
    )
    p.add_argument("--batch", type=_csv(int), default=[1], help="comma-separated batch sizes (default 1)")
    p.add_argument("--threads", type=positive_int, default=None, help="CPU threads (default: torch's)")
    p.add_argument("--resolution", type=resolution, default=None, help="input size (default: the model's)")
    p.add_argument(
        "--implementations", type=_csv(str, IMPLEMENTATIONS), default=None,
        help="comma-separated, from mobilenets,torchvision,timm (default: all installed)",
    )
    p.add_argument("--rounds", type=positive_int, default=10, help="interleaved timing rounds (default 10)")
    p.add_argument("--iters", type=positive_int, default=5, help="timed calls per runner per round (default 5)")
    p.add_argument("--json", action="store_true", help="print a JSON list of rows on stdout")
    p.add_argument("--plot", default=None, help="draw latency against MACs (or accuracy) to this image file")
    p.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    p.set_defaults(func=_cmd_benchmark)
