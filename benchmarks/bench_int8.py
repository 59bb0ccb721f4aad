"""INT8 on Fashion-MNIST: accuracy drop and speedup of ONNX Runtime static quantization and of PT2E
quantization compiled by Inductor, with quantization-aware fine-tuning where ONNX Runtime's post-training
quantization drops more than the goal.

For every checkpoint: test-set top-1 of fp32 PyTorch (batch norm folded), fp32 ONNX Runtime, INT8 ONNX Runtime
(QDQ, per-channel, calibrated on held-out *training* images, never test images), INT8 PT2E (``inductor-int8``,
same calibration images; ``--no-inductor`` skips it), and, if the ONNX Runtime INT8 drop exceeds ``--goal``
points, INT8 after ``--qat-steps`` of quantization-aware fine-tuning on the training split.
The INT8 file is made as ``make_predictor`` makes it (expanded widths padded with ``pad_expanded_channels``).
For models whose graph ``integer_friendly`` rewrites (V3: h-swish, h-sigmoid), the INT8 file quantized as
exported (no padding, no rewrite) is measured beside it (``onnxruntime-int8-as-exported``).
Latency: fp32 vs INT8 on ONNX Runtime, and fp32 ``compile`` (Inductor, frozen) vs ``inductor-int8``, timed
interleaved at batch 1 and 64, ``--threads`` threads. Checkpoints to quantize: any Fashion-MNIST
``best.safetensors`` of ``mobilenets train``, or the short ones ``benchmarks/bench_train_fmnist.py`` trains.
Each checkpoint's row is printed as a JSON line; the run (every row) is appended to
``benchmarks/results/int8.json`` (``--results`` names another file).

    .venv/bin/python benchmarks/bench_int8.py runs/fmnist/*/best.safetensors --threads 2
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import onnx
import torch
from torch.utils.data import DataLoader, Subset

import mobilenets
from _results import add_results_option, append_run
from mobilenets.data import build_data
from mobilenets.deploy import export_onnx, make_predictor, onnxruntime_predictor, quantize_onnx
from mobilenets.deploy.bench import time_interleaved
from mobilenets.deploy.qat import qat_finetune
from mobilenets.deploy.quantize import export_int8_onnx, integer_friendly


def stack(dataset, limit: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    n = len(dataset) if limit is None else min(limit, len(dataset))
    images, labels = next(iter(DataLoader(Subset(dataset, range(n)), batch_size=n)))
    return images, labels


def top1(predict, images: torch.Tensor, labels: torch.Tensor, batch: int = 500) -> float:
    correct = 0
    with torch.inference_mode():
        for i in range(0, len(images), batch):
            correct += (predict(images[i : i + batch]).argmax(1) == labels[i : i + batch]).sum().item()
    return correct / len(images)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoints", nargs="+")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--calibration-images", type=int, default=512)
    parser.add_argument("--goal", type=float, default=1.0, help="max acceptable INT8 drop, points")
    parser.add_argument("--qat-steps", type=int, default=100)
    parser.add_argument("--qat-batch", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=10)
    add_results_option(parser, "int8")
    parser.add_argument("--no-inductor", action="store_true",
                        help="leave out compile and inductor-int8 (each compiles once per batch size)")
    parser.add_argument("--skip-eager-accuracy", action="store_true",
                        help="test-set accuracy on ONNX Runtime only (the export check already ties it to PyTorch)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    rows = []
    for ckpt in args.checkpoints:
        model = mobilenets.load(ckpt).eval()
        meta = mobilenets.read_metadata(ckpt)
        training = meta.get("training") or {}
        bundle = build_data("fashion_mnist", seed=int(training.get("seed", 0)), random_erasing=0.0)
        if tuple(bundle.mean) != tuple(meta["mean"]) or tuple(bundle.std) != tuple(meta["std"]):
            sys.exit(f"{ckpt}: normalisation {meta['mean']}/{meta['std']} differs from the dataset's {bundle.mean}/{bundle.std}")
        test_x, test_y = stack(bundle.test)
        cal_x, _ = stack(bundle.val, args.calibration_images)
        calibration = list(cal_x.split(64))
        size = tuple(model.info.input_size)
        arch = meta["arch"]
        with tempfile.TemporaryDirectory() as tmp:
            fp32_path = export_onnx(model, Path(tmp) / "fp32.onnx", size, dynamic_batch=True)
            # the INT8 file as make_predictor and `mobilenets export --int8` make it: expanded widths padded
            int8_path = export_int8_onnx(model, Path(tmp) / "fp32_padded.onnx", Path(tmp) / "int8.onnx", calibration, size)
            eager = make_predictor(model, "eager")
            ort32 = onnxruntime_predictor(fp32_path, args.threads)
            ort8 = onnxruntime_predictor(int8_path, args.threads)
            acc = {"onnxruntime": top1(ort32, test_x, test_y), "onnxruntime-int8": top1(ort8, test_x, test_y)}
            acc["eager"] = None if args.skip_eager_accuracy else top1(eager, test_x, test_y)
            runners = {("fp32",): ort32, ("int8",): ort8, ("eager",): eager}
            if integer_friendly(onnx.load(str(fp32_path))):
                plain8 = onnxruntime_predictor(
                    quantize_onnx(fp32_path, Path(tmp) / "int8_plain.onnx", calibration, integer_activations=False),
                    args.threads,
                )
                acc["onnxruntime-int8-as-exported"] = top1(plain8, test_x, test_y)
                runners[("int8-as-exported",)] = plain8
            if not args.no_inductor:
                start = time.time()
                pt2e8 = make_predictor(model, "inductor-int8", calibration=calibration)
                acc["inductor-int8"] = top1(pt2e8, test_x, test_y)
                runners[("compile",)] = make_predictor(model, "compile")
                runners[("inductor-int8",)] = pt2e8
                print(f"  {arch} inductor-int8 quantized, compiled and evaluated in {time.time() - start:.0f} s",
                      file=sys.stderr)
            row = {"checkpoint": ckpt, "model": arch, "width_mult": meta["options"]["width_mult"],
                   "resolution": size[-1], "threads": args.threads, "top1": acc,
                   "int8_drop_points": 100 * (acc["onnxruntime"] - acc["onnxruntime-int8"])}
            if "inductor-int8" in acc:
                row["inductor_int8_drop_points"] = 100 * (acc["onnxruntime"] - acc["inductor-int8"])
            if row["int8_drop_points"] > args.goal and args.qat_steps > 0:
                loader = DataLoader(bundle.train, batch_size=args.qat_batch, shuffle=True,
                                    generator=torch.Generator().manual_seed(0))
                start = time.time()
                tuned = qat_finetune(model, loader, args.qat_steps, log=lambda m: print(f"  {arch} {m}", file=sys.stderr))
                qat8 = export_int8_onnx(tuned, Path(tmp) / "qat_fp32.onnx", Path(tmp) / "qat_int8.onnx", calibration, size)
                acc["onnxruntime-int8-qat"] = top1(onnxruntime_predictor(qat8, args.threads), test_x, test_y)
                row["qat"] = {"steps": args.qat_steps, "batch": args.qat_batch, "seconds": round(time.time() - start)}
                row["int8_qat_drop_points"] = 100 * (acc["onnxruntime"] - acc["onnxruntime-int8-qat"])
            for batch in (1, 64):
                x = test_x[:batch]
                samples = time_interleaved(runners, x, args.rounds, 5)
                med = {k[0]: statistics.median(v) * 1e3 for k, v in samples.items()}
                row[f"latency_ms_b{batch}"] = med
                row[f"int8_speedup_b{batch}"] = med["fp32"] / med["int8"]
                if "inductor-int8" in med:
                    # against the fastest fp32 path measured, not only its own fp32 counterpart
                    best_fp32 = min(med["fp32"], med["compile"], med["eager"])
                    row[f"inductor_int8_speedup_b{batch}"] = best_fp32 / med["inductor-int8"]
        rows.append(row)
        print(json.dumps(row), flush=True)
    print(f"\n{'model':<22} {'fp32':>7} {'ORT fp32':>8} {'INT8':>7} {'drop':>6} {'QAT INT8':>8} {'QAT drop':>8} "
          f"{'b1 fp32 ms':>10} {'b1 int8 ms':>10} {'speedup b1':>10} {'speedup b64':>11}")
    print("(INT8 = ONNX Runtime QDQ; PT2E rows below)")
    for r in rows:
        a = r["top1"]
        qat = f"{100 * a['onnxruntime-int8-qat']:>8.2f} {r['int8_qat_drop_points']:>8.2f}" if "qat" in r else f"{'-':>8} {'-':>8}"
        eager = f"{100 * a['eager']:>7.2f}" if a["eager"] is not None else f"{'-':>7}"
        print(f"{r['model']:<22} {eager} {100 * a['onnxruntime']:>8.2f} {100 * a['onnxruntime-int8']:>7.2f} "
              f"{r['int8_drop_points']:>6.2f} {qat} {r['latency_ms_b1']['fp32']:>10.3f} {r['latency_ms_b1']['int8']:>10.3f} "
              f"{r['int8_speedup_b1']:>10.2f} {r['int8_speedup_b64']:>11.2f}")
    plain = [r for r in rows if "onnxruntime-int8-as-exported" in r["top1"]]
    if plain:
        print(f"\n{'model':<22} {'INT8 as exported':>16} {'drop':>6} {'b1 ms':>7} {'b64 ms':>8}  (against INT8 rewritten: b1 ms, b64 ms)")
        for r in plain:
            a = r["top1"]
            drop = 100 * (a["onnxruntime"] - a["onnxruntime-int8-as-exported"])
            print(f"{r['model']:<22} {100 * a['onnxruntime-int8-as-exported']:>16.2f} {drop:>6.2f} "
                  f"{r['latency_ms_b1']['int8-as-exported']:>7.3f} {r['latency_ms_b64']['int8-as-exported']:>8.3f}"
                  f"  ({r['latency_ms_b1']['int8']:.3f}, {r['latency_ms_b64']['int8']:.3f})")
    pt2e = [r for r in rows if "inductor-int8" in r["top1"]]
    if pt2e:
        print(f"\n{'model':<22} {'PT2E INT8':>9} {'drop':>6} {'b1 compile ms':>13} {'b1 int8 ms':>10} "
              f"{'vs best fp32 b1':>15} {'b64':>6}")
        for r in pt2e:
            print(f"{r['model']:<22} {100 * r['top1']['inductor-int8']:>9.2f} {r['inductor_int8_drop_points']:>6.2f} "
                  f"{r['latency_ms_b1']['compile']:>13.3f} {r['latency_ms_b1']['inductor-int8']:>10.3f} "
                  f"{r['inductor_int8_speedup_b1']:>15.2f} {r['inductor_int8_speedup_b64']:>6.2f}")
    print(f"\nappended to {append_run(args.results, rows)}")


if __name__ == "__main__":
    main()
