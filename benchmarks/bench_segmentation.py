"""Segmentation deployment (issue #23, item 7): latency of our LR-ASPP beside torchvision's, and the mIoU a
trained checkpoint keeps through ONNX Runtime and INT8, in one run.

**Latency** (unless ``--skip-latency``): batch 1 at ``--resolution`` (512x512), ``--threads`` threads (2), our
``lraspp_mobilenet_v3_large`` and torchvision's (both 21 classes, random weights: torchvision's is built
locally with ``weights=None, weights_backbone=None``), timed interleaved in one run
(:func:`mobilenets.deploy.bench.time_interleaved`: every round runs every runner, in a shuffled order, so load
from other processes hits all alike):

* ours: ``eager`` (batch norm folded, channels-last), ``onnxruntime`` (our export) and, unless ``--no-int8``,
  ``onnxruntime-int8`` (our QDQ file, calibrated on random batches: they time it faithfully, its accuracy is
  measured below);
* torchvision's: ``eager`` (the module as built, under ``torch.inference_mode``) and ``onnxruntime`` (its
  ``torch.onnx.export`` file, made here, batch norm left to ONNX Runtime to fold, ``out`` as the output).

Reported: median and 90th percentile of single calls, MACs and parameters (``mobilenets.profile``, the same
count for both), and the ratios ours / torchvision's per backend and INT8 / fp32 for ours.

**mIoU** (with ``--checkpoint``, a segmentation checkpoint of ``mobilenets train``, e.g. on
``fashion_mnist_scenes``): mIoU and pixel accuracy on its dataset's test split (the scene test set:
1000 scenes from the Fashion-MNIST test images) of the checkpoint in PyTorch, its ONNX export on ONNX Runtime,
and its INT8 file (``onnxruntime-int8``, and ``openvino-int8`` where OpenVINO is installed) calibrated on
the validation scenes (held-out garments, never test scenes); the drop is fp32 PyTorch minus INT8, in points.
Scores come from :func:`mobilenets.train.evaluate.evaluate_checkpoint` (``mobilenets evaluate CKPT --backend
B``), whose scoring training's validation uses too.

The run (rows, ratios, mIoU) is appended to ``benchmarks/results/segmentation.json`` (``--results`` names
another file) and its tables are printed in Markdown; ``--write-docs`` also puts them, with the date, machine
and command, between the ``bench_segmentation`` markers of docs/segmentation.md.

    .venv/bin/python benchmarks/bench_segmentation.py --threads 2 --rounds 20 --iters 5 --checkpoint runs/seg/best.safetensors --write-docs
    .venv/bin/python benchmarks/bench_segmentation.py --rounds 1 --iters 1 --no-int8 --results /tmp/x.json   # smoke
"""

from __future__ import annotations

import argparse
import importlib.util
import statistics
import tempfile
from pathlib import Path
from typing import Callable, Optional

import torch
from torch import nn

import mobilenets
from _results import add_results_option, add_timing_options, append_run, write_docs
from mobilenets.deploy import export_onnx, make_predictor, onnxruntime_predictor
from mobilenets.deploy.bench import time_interleaved
from mobilenets.deploy.predictor import Predictor

ARCH = "lraspp_mobilenet_v3_large"
NUM_CLASSES = 21  # torchvision's (VOC's 20 classes and background) and our registry default
OPENVINO = importlib.util.find_spec("openvino") is not None
DOCS = Path(__file__).resolve().parent.parent / "docs" / "segmentation.md"
BEGIN, END = "<!-- bench_segmentation: begin -->", "<!-- bench_segmentation: end -->"


class _Out(nn.Module):
    """torchvision's segmentation models return ``{"out": logits}``; a deployment exports the tensor."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)["out"]


def _torchvision_lraspp() -> nn.Module:
    from torchvision.models.segmentation import lraspp_mobilenet_v3_large

    # weights_backbone=None: its default fetches ImageNet weights, and latency does not depend on them
    return _Out(lraspp_mobilenet_v3_large(weights=None, weights_backbone=None, num_classes=NUM_CLASSES)).eval()


def _eager(module: nn.Module) -> Predictor:
    def run(x: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode():
            return module(x)

    return Predictor(run, module=module)


def latency(size: tuple[int, int, int], threads: int, rounds: int, iters: int, int8: bool, workdir: Path) -> dict:
    """Build every runner, check that both models give logits of one shape, time them interleaved."""
    ours = mobilenets.create_model(ARCH, num_classes=NUM_CLASSES).eval()
    theirs = _torchvision_lraspp()
    runners: dict[tuple[str, str], Callable[[torch.Tensor], torch.Tensor]] = {
        ("mobilenets", "eager"): make_predictor(ours, "eager"),
        ("mobilenets", "onnxruntime"): make_predictor(ours, "onnxruntime", threads=threads, input_size=size,
                                                      workdir=workdir),
        ("torchvision", "eager"): _eager(theirs),
        ("torchvision", "onnxruntime"): onnxruntime_predictor(
            export_onnx(theirs, workdir / "torchvision.onnx", size, dynamic_batch=True, optimize=False), threads),
    }
    if int8:
        gen = torch.Generator().manual_seed(0)
        calibration = [torch.randn((2, *size), generator=gen) for _ in range(4)]
        runners[("mobilenets", "onnxruntime-int8")] = make_predictor(
            ours, "onnxruntime-int8", threads=threads, input_size=size, calibration=calibration, workdir=workdir)
    x = torch.randn((1, *size), generator=torch.Generator().manual_seed(1))
    shapes = {key: tuple(run(x).shape) for key, run in runners.items()}
    if len(set(shapes.values())) != 1:
        raise SystemExit(f"the runners disagree on the output shape: {shapes}")
    samples = time_interleaved(runners, x, rounds, iters)
    counts = {impl: mobilenets.profile(module, size[1:]) for impl, module in (("mobilenets", ours),
                                                                            ("torchvision", theirs))}
    rows = []
    for (impl, backend), values in samples.items():
        rows.append({
            "model": ARCH, "implementation": impl, "backend": backend, "batch": 1, "threads": threads,
            "resolution": list(size[1:]), "latency_ms_median": statistics.median(values) * 1e3,
            "latency_ms_p90": statistics.quantiles(values, n=10, method="inclusive")[-1] * 1e3
            if len(values) > 1 else values[0] * 1e3,
            "samples": len(values), "macs": counts[impl].macs, "params": counts[impl].params,
        })
    median = {(r["implementation"], r["backend"]): r["latency_ms_median"] for r in rows}
    ratios = {f"ours / torchvision, {b}": median[("mobilenets", b)] / median[("torchvision", b)]
              for b in ("eager", "onnxruntime")}
    if int8:
        ratios["ours int8 / ours onnxruntime"] = median[("mobilenets", "onnxruntime-int8")] / median[
            ("mobilenets", "onnxruntime")]
    return {"rows": rows, "ratios": ratios}


def miou(checkpoint: Path, threads: int, batch_size: int, limit_batches: Optional[int]) -> dict:
    """mIoU of ``checkpoint`` on its dataset's test split through ``mobilenets evaluate``'s function, on PyTorch,
    ONNX Runtime fp32 and INT8 (and OpenVINO INT8 where installed), INT8 calibrated on the validation split."""
    from mobilenets.train.evaluate import evaluate_checkpoint

    backends = ["pytorch", "onnxruntime", "onnxruntime-int8", *(("openvino-int8",) if OPENVINO else ())]
    scores, reports = {}, {}
    for backend in backends:
        report = evaluate_checkpoint(checkpoint, batch_size=batch_size, limit_batches=limit_batches,
                                     backend=backend, threads=threads)
        reports[backend] = report
        scores[backend] = {"miou": report["miou"], "pixel_accuracy": report["pixel_accuracy"],
                           "per_class_iou": report["per_class_iou"]}
        print(f"{backend:<17} mIoU {report['miou']:.2%}  pixel accuracy {report['pixel_accuracy']:.2%}")
    first = reports["pytorch"]
    training = mobilenets.read_metadata(checkpoint).get("training") or {}
    return {
        "checkpoint": str(checkpoint), "arch": first["arch"], "dataset": first["dataset"], "split": "test",
        "images": first["images"], "calibration_split": reports["onnxruntime-int8"].get("calibration_split"),
        "scores": scores,
        "int8_miou_drop_points": {b: 100 * (scores["pytorch"]["miou"] - scores[b]["miou"])
                                  for b in backends if b.endswith("int8")},
        # what the run was: its length, and the mIoU its own test report gave (PyTorch, the same test split)
        "training": {k: training[k] for k in ("epochs", "best_epoch", "train_seconds", "batch_size", "test_miou")
                     if k in training},
    }


def markdown(latency_result: Optional[dict], miou_result: Optional[dict]) -> str:
    """The tables docs/segmentation.md shows."""
    lines = []
    if latency_result is not None:
        rows = latency_result["rows"]
        h, w = rows[0]["resolution"]
        lines += [f"| {ARCH}, {h}x{w}, batch 1, {rows[0]['threads']} threads | backend | median ms | p90 ms | "
                  "MACs | params |", "|---|---|---|---|---|---|"]
        for r in sorted(rows, key=lambda r: (r["implementation"], r["backend"])):
            lines.append(f"| {r['implementation']} | {r['backend']} | {r['latency_ms_median']:.1f} | "
                         f"{r['latency_ms_p90']:.1f} | {r['macs'] / 1e9:.2f}B | {r['params'] / 1e6:.2f}M |")
        lines.append("")
        lines += [f"- {name}: {ratio:.2f}" for name, ratio in latency_result["ratios"].items()]
        lines.append("")
    if miou_result is not None:
        lines += [f"| {miou_result['arch']} on {miou_result['dataset']} test ({miou_result['images']} images) | "
                  "mIoU | pixel accuracy | mIoU drop (points) |", "|---|---|---|---|"]
        for backend, s in miou_result["scores"].items():
            drop = miou_result["int8_miou_drop_points"].get(backend)
            lines.append(f"| {backend} | {s['miou']:.2%} | {s['pixel_accuracy']:.2%} | "
                         f"{'' if drop is None else f'{drop:.2f}'} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_timing_options(parser, rounds=20)
    parser.add_argument("--resolution", type=int, default=512, help="square input side (default 512)")
    parser.add_argument("--no-int8", action="store_true", help="leave our INT8 file out of the latency table")
    parser.add_argument("--skip-latency", action="store_true", help="measure only the checkpoint's mIoU")
    parser.add_argument("--checkpoint", type=Path, default=None,
                        help="a segmentation checkpoint (best.safetensors): its test mIoU, fp32 and INT8")
    parser.add_argument("--limit-batches", type=int, default=None, help="score only the first N test batches")
    parser.add_argument("--batch-size", type=int, default=16, help="evaluation batch (default 16)")
    parser.add_argument("--write-docs", action="store_true",
                        help="put the tables, date, machine and command into docs/segmentation.md")
    add_results_option(parser, "segmentation")
    args = parser.parse_args()
    if args.skip_latency and args.checkpoint is None:
        parser.error("--skip-latency leaves nothing to do without --checkpoint")
    torch.set_num_threads(args.threads)
    record: dict = {}
    if not args.skip_latency:
        with tempfile.TemporaryDirectory(prefix="bench-segmentation-") as tmp:
            record["latency"] = latency((3, args.resolution, args.resolution), args.threads, args.rounds,
                                        args.iters, not args.no_int8, Path(tmp))
        for r in record["latency"]["rows"]:
            print(f"{r['implementation']:<12} {r['backend']:<17} median {r['latency_ms_median']:8.2f} ms  "
                  f"p90 {r['latency_ms_p90']:8.2f} ms  ({r['samples']} calls)")
        for name, ratio in record["latency"]["ratios"].items():
            print(f"  {name:<32} {ratio:.3f}")
    if args.checkpoint is not None:
        record["miou"] = miou(args.checkpoint, args.threads, args.batch_size, args.limit_batches)
    path = append_run(args.results, record)
    tables = markdown(record.get("latency"), record.get("miou"))
    print(f"\n{tables}\n\nappended to {path}")
    if args.write_docs:
        write_docs(tables, DOCS, BEGIN, END)
        print(f"tables written to {DOCS}")


if __name__ == "__main__":
    main()
