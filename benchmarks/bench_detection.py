"""Detection latency (issue #24, item 8, latency half): our SSDLite beside torchvision's
``ssdlite320_mobilenet_v3_large`` at 320x320, batch 1, in one run.

Timed interleaved (:func:`mobilenets.deploy.bench.time_interleaved`: every round runs every runner, in a shuffled
order, so load from other processes hits all alike), ``--threads`` threads (2) for PyTorch and ONNX Runtime:

* ``mobilenets``: ``create_model("ssdlite_mobilenet_v3_large", num_classes=91)``, the papers' layout (full tail,
  three default boxes on the first map: 2034 boxes);
* ``mobilenets, tv layout`` (unless ``--no-torchvision-layout``): ours with ``reduced_tail=True,
  reduce_boxes_in_lowest_layer=False``, the network torchvision builds (3234 boxes, the same MACs and
  parameters), so the ratio to torchvision's compares implementations, not architectures;
* ``torchvision``: ``ssdlite320_mobilenet_v3_large(weights=None, weights_backbone=None)``, random weights built
  locally (91 classes).

Random weights as built leave activations shrinking layer after layer (the heads' outputs are around 1e-8 for
ours and 1e-14 for torchvision's), so every score is 1/91, every box its default box, and an absolute check of
the exports tests nothing. Every model's batch norm statistics are therefore first measured on its own
activations for random images, as training would leave them (the weights stay random): the outputs are then of
order 1. Each is then timed three ways, all under ``torch.inference_mode`` with the modules as
built (batch norm not folded in eager, for any):

* ``eager, end to end``: ``model([image])`` on one 3x320x320 image in [0, 1]: resizing and normalisation, the
  network, box decoding, score threshold, top-k and per-class NMS (torchvision's code in both);
* ``eager, raw heads``: the network alone on the preprocessed batch (ours ``forward_raw``; torchvision's
  ``head(backbone(x))``);
* ``onnxruntime, raw heads``: the same network exported to ONNX at opset 18 (ours through
  ``export_detector_onnx``, the file ``mobilenets export`` writes, batch norm folded; torchvision's backbone and
  head exported here with ``torch.onnx.export`` the same way, batch norm left to ONNX Runtime to fold), both
  checked against eager on the benchmark's input (max difference <= 1e-4).

**Fair post-processing.** With random weights the class scores, and so how many boxes pass the score threshold
and reach NMS, depend on the weights, not the implementation. All models therefore run with ``score_thresh=0``:
every class keeps its ``topk_candidates`` (300) best boxes, 90 x 300 = 27000 candidates into NMS per image for
each, the most the default post-processing can get (a trained model at the default 0.001 usually passes fewer,
so the end-to-end times are an upper bound). The script counts the candidates from each model's raw outputs and
refuses to time models that would post-process different numbers. The boxes themselves, and so how many NMS
keeps (at most ``detections_per_img``, 300), still follow each model's random weights.

Reported: median and 90th percentile of single calls, MACs and parameters (``mobilenets.profile``, up to the raw
head outputs, the same count for all), and the ratios of each of ours to torchvision's per mode. The run is
appended to ``benchmarks/results/detection.json`` (``--results`` names another file) and its table printed in
Markdown; ``--write-docs`` also puts it, with the date, machine and command, between the ``bench_detection``
markers of docs/detection.md.

    .venv/bin/python benchmarks/bench_detection.py --threads 2 --rounds 60 --iters 5 --write-docs
    .venv/bin/python benchmarks/bench_detection.py --rounds 2 --iters 1 --results /tmp/x.json   # smoke
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import warnings
from pathlib import Path
from typing import Callable

import torch
from torch import nn

import mobilenets
from _results import add_results_option, add_timing_options, append_run, write_docs
from mobilenets.checkpoint import atomic_write
from mobilenets.deploy import onnxruntime_session
from mobilenets.deploy.bench import time_interleaved
from mobilenets.deploy.onnx_export import DETECTOR_OUTPUTS, INPUT_NAME, export_detector_onnx

ARCH = "ssdlite_mobilenet_v3_large"
NUM_CLASSES = 91  # COCO with the background, as torchvision counts
SIZE = 320
OPSET = 18
SCORE_THRESH = 0.0  # every class keeps topk_candidates boxes: the same NMS input for every model (docstring)
TOLERANCE = 1e-4
DOCS = Path(__file__).resolve().parent.parent / "docs" / "detection.md"
BEGIN, END = "<!-- bench_detection: begin -->", "<!-- bench_detection: end -->"
MODES = ("eager, end to end", "eager, raw heads", "onnxruntime, raw heads")
OURS_TV = "mobilenets, tv layout"


class _TorchvisionRaw(nn.Module):
    """torchvision's SSD up to its raw head outputs, as our ``forward_raw``: (cls_logits, bbox_regression)."""

    def __init__(self, ssd: nn.Module) -> None:
        super().__init__()
        self.backbone, self.head = ssd.backbone, ssd.head

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        out = self.head(list(self.backbone(x).values()))
        return out["cls_logits"], out["bbox_regression"]


def _calibrate_batchnorm_(model: nn.Module, raw: Callable, generator: torch.Generator) -> None:
    """Set every batch norm's running statistics to those of the raw network on random images, in place.

    Freshly built, the networks keep the init statistics (mean 0, variance 1) behind small random weights, so
    activations shrink layer after layer (module docstring); statistics measured on the network's own
    activations keep every layer near unit scale, as training does."""
    norms = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    momenta = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # a cumulative average over the calibration batches
    model.train()
    with torch.no_grad():
        for _ in range(2):
            raw(torch.rand((4, 3, SIZE, SIZE), generator=generator) * 2 - 1)
    for m, momentum in zip(norms, momenta):
        m.momentum = momentum
    model.eval()


def _export_raw(module: nn.Module, path: Path) -> Path:
    """``module``'s raw outputs as ONNX, with the exporter and names of ``export_detector_onnx``."""
    example = torch.randn((1, 3, SIZE, SIZE))

    def write(tmp: str) -> None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", category=DeprecationWarning)
            warnings.simplefilter("ignore", category=FutureWarning)
            torch.onnx.export(module, (example,), tmp, dynamo=True, external_data=False, opset_version=OPSET,
                              input_names=[INPUT_NAME], output_names=list(DETECTOR_OUTPUTS))

    atomic_write(path, write)
    return path


def _nms_candidates(cls_logits: torch.Tensor, topk: int) -> int:
    """The boxes torchvision's ``SSD.postprocess_detections`` hands to NMS for image 0: per foreground class,
    those scoring above ``SCORE_THRESH``, at most ``topk``."""
    scores = torch.softmax(cls_logits[0], dim=-1)[:, 1:]
    return int((scores > SCORE_THRESH).sum(0).clamp(max=topk).sum())


def _models(torchvision_layout: bool) -> dict[str, nn.Module]:
    from torchvision.models.detection import ssdlite320_mobilenet_v3_large

    models = {"mobilenets": mobilenets.create_model(ARCH, num_classes=NUM_CLASSES, score_thresh=SCORE_THRESH)}
    if torchvision_layout:
        models[OURS_TV] = mobilenets.create_model(ARCH, num_classes=NUM_CLASSES, score_thresh=SCORE_THRESH,
                                                  reduced_tail=True, reduce_boxes_in_lowest_layer=False)
    # weights_backbone=None: its default fetches ImageNet weights, and latency does not depend on them. Its
    # builder passes extra keywords to the backbone too, so score_thresh is set on the built SSD.
    theirs = ssdlite320_mobilenet_v3_large(weights=None, weights_backbone=None, num_classes=NUM_CLASSES)
    theirs.score_thresh = SCORE_THRESH
    models["torchvision"] = theirs
    return {name: m.eval() for name, m in models.items()}


def latency(threads: int, rounds: int, iters: int, torchvision_layout: bool, workdir: Path) -> dict:
    """Build every runner, check the exports and the post-processing's input, time them interleaved."""
    models = _models(torchvision_layout)
    image = torch.rand((3, SIZE, SIZE), generator=torch.Generator().manual_seed(1))
    runners: dict[tuple[str, str], Callable[[torch.Tensor], object]] = {}
    checks = {}
    for name, model in models.items():
        raw = model.forward_raw if hasattr(model, "forward_raw") else _TorchvisionRaw(model)
        _calibrate_batchnorm_(model, raw, torch.Generator().manual_seed(2))
        # both preprocess with torchvision's GeneralizedRCNNTransform (resize to 320x320, mean and std 0.5)
        batch = model.preprocess([image])[0] if hasattr(model, "preprocess") else model.transform([image])[0].tensors
        path = workdir / f"{name.replace(', ', '-').replace(' ', '_')}.onnx"
        if name == "torchvision":
            _export_raw(raw, path)
        else:
            export_detector_onnx(model, path, opset=OPSET)
        session = onnxruntime_session(path, threads)
        feed = {INPUT_NAME: batch.numpy()}
        with torch.inference_mode():
            expected = raw(batch)
        got = session.run(list(DETECTOR_OUTPUTS), feed)
        diff = max(float((e - torch.from_numpy(g)).abs().max()) for e, g in zip(expected, got))
        if diff > TOLERANCE:
            raise SystemExit(f"{name}: the ONNX file's raw outputs differ from eager by {diff:.2e} > {TOLERANCE}")
        checks[name] = {"anchors": int(expected[0].shape[1]), "onnx_max_abs_diff": diff,
                        "cls_logits_std": float(expected[0].std()),
                        "nms_candidates": _nms_candidates(expected[0], model.topk_candidates)}

        def end_to_end(x: torch.Tensor, model: nn.Module = model) -> object:
            with torch.inference_mode():
                return model([x[0]])

        # the raw runners time the network on their own preprocessed batch (x is the image, unused there)
        def heads(x: torch.Tensor, raw: Callable = raw, batch: torch.Tensor = batch) -> object:
            with torch.inference_mode():
                return raw(batch)

        def onnx(x: torch.Tensor, session=session, feed: dict = feed) -> object:
            return session.run(None, feed)

        runners.update({(name, MODES[0]): end_to_end, (name, MODES[1]): heads, (name, MODES[2]): onnx})
    candidates = {name: c["nms_candidates"] for name, c in checks.items()}
    if len(set(candidates.values())) != 1:
        raise SystemExit(f"the models would hand NMS different numbers of boxes: {candidates}")
    samples = time_interleaved(runners, image[None], rounds, iters)
    counts = {}
    for name, model in models.items():
        counts[name] = mobilenets.profile(model if name != "torchvision" else _TorchvisionRaw(model), (SIZE, SIZE))
    rows = []
    for (name, mode), values in samples.items():
        rows.append({
            "implementation": name, "mode": mode, "batch": 1, "threads": threads, "resolution": [SIZE, SIZE],
            "latency_ms_median": statistics.median(values) * 1e3,
            "latency_ms_p90": statistics.quantiles(values, n=10, method="inclusive")[-1] * 1e3
            if len(values) > 1 else values[0] * 1e3,
            "samples": len(values), "macs": counts[name].macs, "params": counts[name].params,
            "anchors": checks[name]["anchors"],
        })
    median = {(r["implementation"], r["mode"]): r["latency_ms_median"] for r in rows}
    ratios = {f"{name} / torchvision, {mode}": median[(name, mode)] / median[("torchvision", mode)]
              for name in models if name != "torchvision" for mode in MODES}
    return {"model": ARCH, "score_thresh": SCORE_THRESH, "checks": checks, "rows": rows, "ratios": ratios}


def markdown(result: dict) -> str:
    """The table docs/detection.md shows: per model, median (p90) ms per mode; then ours / torchvision's."""
    cell = {(r["implementation"], r["mode"]): r for r in result["rows"]}
    threads = result["rows"][0]["threads"]
    lines = [f"| 320x320, batch 1, {threads} threads | boxes | MACs | params | "
             + " | ".join(f"{mode}, ms" for mode in MODES) + " |", "|---|---|---|---|" + "---|" * len(MODES)]
    for name in result["checks"]:
        first = cell[(name, MODES[0])]
        times = " | ".join(f"{cell[(name, m)]['latency_ms_median']:.1f} ({cell[(name, m)]['latency_ms_p90']:.1f})"
                           for m in MODES)
        lines.append(f"| {name} | {first['anchors']} | {first['macs'] / 1e9:.3f}B | {first['params'] / 1e6:.2f}M | "
                     f"{times} |")
    for name in result["checks"]:
        if name != "torchvision":
            ratios = " | ".join(f"{result['ratios'][f'{name} / torchvision, {m}']:.2f}" for m in MODES)
            lines.append(f"| {name} / torchvision | | | | {ratios} |")
    nms = next(iter(result["checks"].values()))["nms_candidates"]
    lines += ["", f"Median (90th percentile) of single calls. NMS input: {nms} boxes per image for every model "
              f"(score_thresh {result['score_thresh']:g})."]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_timing_options(parser, rounds=60)
    parser.add_argument("--no-torchvision-layout", action="store_true",
                        help="leave out our model built with torchvision's layout")
    parser.add_argument("--write-docs", action="store_true",
                        help="put the table, date, machine and command into docs/detection.md")
    add_results_option(parser, "detection")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory(prefix="bench-detection-") as tmp:
        result = latency(args.threads, args.rounds, args.iters, not args.no_torchvision_layout, Path(tmp))
    for r in result["rows"]:
        print(f"{r['implementation']:<31} {r['mode']:<23} median {r['latency_ms_median']:8.2f} ms  "
              f"p90 {r['latency_ms_p90']:8.2f} ms  ({r['samples']} calls)")
    for name, ratio in result["ratios"].items():
        print(f"  {name:<60} {ratio:.3f}")
    path = append_run(args.results, result)
    table = markdown(result)
    print(f"\n{table}\n\nappended to {path}")
    if args.write_docs:
        write_docs(table, DOCS, BEGIN, END)
        print(f"table written to {DOCS}")


if __name__ == "__main__":
    main()
