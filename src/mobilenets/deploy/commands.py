"""``mobilenets export`` and ``mobilenets benchmark``."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Sequence

from ..argtypes import positive_int, resolution
from .runtime import BACKENDS


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


def _cmd_export(args: argparse.Namespace) -> int:
    from ..checkpoint import load
    from .onnx_export import export_onnx, export_torchscript, verify_onnx, verify_torchscript

    model = load(args.checkpoint)
    size = tuple(model.info.input_size)
    if args.resolution is not None:
        size = (size[0], args.resolution, args.resolution)
    if args.format == "onnx":
        path = export_onnx(model, args.output, size, opset=args.opset, dynamic_batch=args.dynamic_batch)
        result = verify_onnx(model, path, size, tolerance=args.tolerance)
    else:
        path = export_torchscript(model, args.output, size)
        result = verify_torchscript(model, path, size, tolerance=args.tolerance)
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
    from ..checkpoint import atomic_write

    suffix = Path(path).suffix.lstrip(".") or "png"
    atomic_write(path, lambda tmp: fig.savefig(tmp, format=suffix, dpi=120))
    plt.close(fig)


def _cmd_benchmark(args: argparse.Namespace) -> int:
    from .bench import available_implementations, run_benchmark

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
    header = (
        f"{'model':<22} {'impl':<12} {'backend':<17} {'batch':>5} {'thr':>3} {'median ms':>10} {'p90 ms':>8} "
        f"{'img/s':>8} {'MMACs':>7} {'GFLOP/s':>8}"
    )
    print(header)
    print("-" * len(header))
    for r in rows:
        print(
            f"{r['model']:<22} {r['implementation']:<12} {r['backend']:<17} {r['batch']:>5} {r['threads']:>3} "
            f"{r['latency_ms_median']:>10.2f} {r['latency_ms_p90']:>8.2f} {r['throughput_img_s']:>8.1f} "
            f"{r['macs'] / 1e6:>7.1f} {r['gflops']:>8.2f}"
        )
    if args.plot:
        print(f"plot: {args.plot}", file=sys.stderr)
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    from .onnx_export import DEFAULT_OPSET, DEFAULT_TOLERANCE, MAX_OPSET, MIN_OPSET

    p = subparsers.add_parser(
        "export", help="export a checkpoint to ONNX or TorchScript and verify it against PyTorch"
    )
    p.add_argument("checkpoint", help="a .safetensors checkpoint written by mobilenets.save")
    p.add_argument("--format", choices=("onnx", "torchscript"), default="onnx")
    p.add_argument("--output", required=True, help="file to write (replaced atomically)")
    p.add_argument(
        "--opset", type=int, choices=range(MIN_OPSET, MAX_OPSET + 1), metavar=f"{{{MIN_OPSET}..{MAX_OPSET}}}",
        default=DEFAULT_OPSET, help=f"ONNX opset (default {DEFAULT_OPSET}; HardSwish is native from 14)",
    )
    p.add_argument("--dynamic-batch", action="store_true", help="leave the ONNX batch dimension symbolic")
    p.add_argument("--resolution", type=resolution, default=None, help="input size (default: the checkpoint's)")
    p.add_argument(
        "--tolerance", type=float, default=DEFAULT_TOLERANCE,
        help=f"fail when max |PyTorch - exported| exceeds this (default {DEFAULT_TOLERANCE:g})",
    )
    p.set_defaults(func=_cmd_export)

    from .bench import IMPLEMENTATIONS

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
