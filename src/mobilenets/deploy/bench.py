"""Latency and throughput of our models and their torchvision/timm counterparts on every backend.

Fairness on a shared CPU: all runners of one (model, batch) group are built and warmed up first, then timed
in interleaved rounds (each round runs every runner a few times), so a burst of load from another process
hits every runner alike. Reported: median and 90th percentile of single-call latencies, throughput, MACs
(``mobilenets.profile``; counted the same way for peer models) and achieved GFLOP/s = 2 * MACs / latency.
"""

from __future__ import annotations

import importlib.util
import os
import random
import statistics
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Optional, Sequence

import torch
from torch import nn

from ..checkpoint import load, read_metadata
from ..profile import profile as profile_model
from ..registry import create_model, list_models
from .onnx_export import DEFAULT_OPSET, export_onnx
from .pt2e import inductor_int8_predictor
from .quantize import quantize_onnx
from .runtime import (
    BACKENDS, INT8_BACKENDS, INT8_ONNX_BACKENDS, MOBILE_BACKENDS, Predictor, make_predictor, mobile_predictor,
    onnxruntime_predictor, openvino_predictor,
)

__all__ = [
    "IMPLEMENTATIONS",
    "PEER_NAMES",
    "BenchSubject",
    "BenchRow",
    "available_implementations",
    "build_subjects",
    "time_interleaved",
    "run_benchmark",
    "matmul_gflops",
    "spread_batchnorm_",
    "untrained_layer_scales_to_one_",
]

IMPLEMENTATIONS = ("mobilenets", "torchvision", "timm")
# the same architecture in each peer library (None: the library has no such model)
PEER_NAMES: dict[str, dict[str, Optional[str]]] = {
    "mobilenet_v1": {"torchvision": None, "timm": "mobilenetv1_100"},
    "mobilenet_v2": {"torchvision": "mobilenet_v2", "timm": "mobilenetv2_100"},
    "mobilenet_v3_large": {"torchvision": "mobilenet_v3_large", "timm": "mobilenetv3_large_100"},
    "mobilenet_v3_small": {"torchvision": "mobilenet_v3_small", "timm": "mobilenetv3_small_100"},
    "mobilenet_v4_conv_small": {"torchvision": None, "timm": "mobilenetv4_conv_small"},
    "mobilenet_v4_conv_medium": {"torchvision": None, "timm": "mobilenetv4_conv_medium"},
    "mobilenet_v4_conv_large": {"torchvision": None, "timm": "mobilenetv4_conv_large"},
    "mobilenet_v4_hybrid_medium": {"torchvision": None, "timm": "mobilenetv4_hybrid_medium"},
    "mobilenet_v4_hybrid_large": {"torchvision": None, "timm": "mobilenetv4_hybrid_large"},
}


@dataclass
class BenchSubject:
    """One network to time: ours (from the registry or a checkpoint) or a peer library's."""

    model: str
    implementation: str
    module: nn.Module
    input_size: tuple[int, int, int]
    checkpoint: Optional[str] = None
    macs: int = 0
    params: int = 0
    recorded_top1: Optional[float] = None  # the checkpoint's own test top-1 (training record), fp32


@dataclass
class BenchRow:
    model: str
    implementation: str
    backend: str
    batch: int
    threads: int
    resolution: int
    latency_ms_median: float
    latency_ms_p90: float
    throughput_img_s: float
    macs: int
    params: int
    gflops: float
    samples: int
    checkpoint: Optional[str] = None
    accuracy: Optional[float] = None
    extra: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)


def available_implementations() -> list[str]:
    return ["mobilenets"] + [lib for lib in ("torchvision", "timm") if importlib.util.find_spec(lib) is not None]


def _peer_module(name: str, implementation: str, num_classes: int) -> Optional[nn.Module]:
    peer = PEER_NAMES.get(name, {}).get(implementation)
    if peer is None:
        return None
    if implementation == "torchvision":
        import torchvision

        return getattr(torchvision.models, peer)(weights=None, num_classes=num_classes)
    import timm

    return timm.create_model(peer, pretrained=False, num_classes=num_classes)


def build_subjects(
    models: Sequence[str],
    implementations: Sequence[str],
    resolution: Optional[int] = None,
) -> list[BenchSubject]:
    """Resolve model names (registry names or ``.safetensors`` checkpoints) into subjects for every requested
    implementation that has the architecture. Peers are built untrained with our model's class count."""
    unknown = [i for i in implementations if i not in IMPLEMENTATIONS]
    if unknown:
        raise ValueError(f"unknown implementation(s) {unknown}; accepted: {', '.join(IMPLEMENTATIONS)}")
    subjects: list[BenchSubject] = []
    for spec in models:
        checkpoint = None
        if spec.endswith((".safetensors", ".pt", ".pth")) or os.sep in spec:
            ours = load(spec)
            checkpoint = spec
        elif spec in list_models():
            ours = create_model(spec)
        else:
            raise ValueError(
                f"unknown model {spec!r}: give a registered name ({', '.join(list_models())}) or a checkpoint file"
            )
        ours.eval()
        recorded = None
        if checkpoint is not None:
            recorded = (read_metadata(spec).get("training") or {}).get("test_top1")
        size = tuple(ours.info.input_size)
        if resolution is not None:
            size = (size[0], resolution, resolution)
        name = ours.info.arch
        for implementation in implementations:
            if implementation == "mobilenets":
                module: Optional[nn.Module] = ours
            else:
                if size[0] != 3:
                    continue  # peers are RGB-only models
                module = _peer_module(name, implementation, ours.info.options.num_classes)
            if module is None:
                continue
            module.eval()
            if checkpoint is None or implementation != "mobilenets":
                untrained_layer_scales_to_one_(module)
            prof = profile_model(module, size)
            subjects.append(
                BenchSubject(
                    name, implementation, module, size, checkpoint, macs=prof.macs, params=prof.params,
                    recorded_top1=recorded if implementation == "mobilenets" else None,
                )
            )
    return subjects


def _runner(
    subject: BenchSubject, backend: str, threads: int, calibration, workdir: Path, opset: int
) -> Predictor:
    if subject.implementation == "mobilenets":
        return make_predictor(
            subject.module, backend, threads=threads, input_size=subject.input_size,
            calibration=calibration, workdir=workdir, opset=opset,
        )
    # peers run the way their users run them: the module as built, plain torch.compile, torch.onnx.export's
    # file of it, or the same quantizers as ours
    if backend == "inductor-int8":
        return inductor_int8_predictor(subject.module, calibration, subject.input_size)
    if backend in MOBILE_BACKENDS:
        return mobile_predictor(subject.module, backend, workdir, threads, subject.input_size, calibration,
                                f"{subject.implementation}_{subject.model}")
    if backend == "eager":
        module = subject.module

        def eager(x: torch.Tensor) -> torch.Tensor:
            with torch.inference_mode():
                return module(x)

        return Predictor(eager, module=module)
    if backend == "compile":
        compiled = torch.compile(subject.module, dynamic=False)

        def run_compiled(x: torch.Tensor) -> torch.Tensor:
            with torch.inference_mode():
                return compiled(x)

        return Predictor(run_compiled, module=subject.module)
    # the exporter's graph as it is (batch norm folded, as ONNX Runtime would fold it), without our rewrites
    path = export_onnx(
        subject.module, workdir / f"{subject.implementation}_{subject.model}.onnx",
        input_size=subject.input_size, dynamic_batch=True, opset=opset, optimize=False,
    )
    if backend in INT8_ONNX_BACKENDS:
        path = quantize_onnx(path, workdir / f"{subject.implementation}_{subject.model}.int8.onnx", calibration,
                             integer_activations=backend == "onnxruntime-int8")
    if backend.startswith("openvino"):
        return openvino_predictor(path, threads)
    return onnxruntime_predictor(path, threads)


def time_interleaved(
    runners: dict[tuple, Callable[[torch.Tensor], torch.Tensor]],
    x: torch.Tensor,
    rounds: int = 10,
    iters_per_round: int = 5,
    warmup: int = 3,
    progress: Optional[Callable[[int], None]] = None,
) -> dict[tuple, list[float]]:
    """Time every runner on ``x``; returns single-call latencies in seconds per runner key.

    Each round runs every runner once (``iters_per_round`` calls), in an order shuffled afresh per round by a
    fixed seed. A fixed order would hand each runner the same predecessor every time, with whatever it leaves
    behind: PyTorch's OpenMP threads keep spinning for a while after a parallel region, so a runner that always
    follows PyTorch eager shares the cores with them. Shuffling turns that into noise spread over all runners.
    """
    for run in runners.values():
        for _ in range(warmup):
            run(x)
    samples: dict[tuple, list[float]] = {key: [] for key in runners}
    keys = list(runners)
    order = random.Random(0)
    for _ in range(rounds):
        order.shuffle(keys)
        for key in keys:
            run = runners[key]
            for _ in range(iters_per_round):
                start = time.perf_counter()
                run(x)
                samples[key].append(time.perf_counter() - start)
            if progress is not None:
                progress(1)
    return samples


def _p90(values: list[float]) -> float:
    return statistics.quantiles(values, n=10, method="inclusive")[-1] if len(values) > 1 else values[0]


def run_benchmark(
    models: Sequence[str],
    backends: Sequence[str] = ("eager", "onnxruntime"),
    batches: Sequence[int] = (1,),
    threads: Optional[int] = None,
    resolution: Optional[int] = None,
    implementations: Optional[Sequence[str]] = None,
    rounds: int = 10,
    iters_per_round: int = 5,
    calibration: Optional[Iterable[torch.Tensor]] = None,
    evaluate: Optional[Callable[[Predictor], float]] = None,
    show_progress: bool = True,
    opset: Optional[int] = None,
    peer_backends: Optional[Sequence[str]] = None,
) -> list[BenchRow]:
    """Benchmark ``models`` x implementations x ``backends`` x ``batches``; one :class:`BenchRow` each.

    ``calibration`` batches are needed for the INT8 backends (default: 8 random batches, which measure
    speed faithfully but give a meaningless accuracy). ``evaluate(predictor) -> accuracy`` is called on every
    runner of a checkpoint subject when given. ``opset`` is the ONNX opset of every export (default
    :data:`~mobilenets.deploy.onnx_export.DEFAULT_OPSET`). ``peer_backends`` limits the backends run for
    torchvision/timm models (default: all of ``backends``).
    """
    opset = opset or DEFAULT_OPSET
    peer_backends = list(backends) if peer_backends is None else list(peer_backends)
    bad = [b for b in [*backends, *peer_backends] if b not in BACKENDS]
    if bad:
        raise ValueError(f"unknown backend(s) {bad}; accepted: {', '.join(BACKENDS)}")
    if not batches or any(b < 1 for b in batches):
        raise ValueError(f"batch sizes must be >= 1, got {list(batches)}")
    threads = threads or torch.get_num_threads()
    torch.set_num_threads(threads)
    implementations = list(implementations) if implementations is not None else available_implementations()
    subjects = build_subjects(models, implementations, resolution)
    from tqdm.auto import tqdm

    def backends_of(subject: BenchSubject) -> Sequence[str]:
        return backends if subject.implementation == "mobilenets" else [b for b in peer_backends if b in backends]

    total = sum(len(backends_of(s)) for s in subjects) * len(batches) * rounds
    bar = tqdm(total=total, desc="benchmark", unit="round", file=sys.stderr, disable=not show_progress)
    rows: list[BenchRow] = []
    with tempfile.TemporaryDirectory(prefix="mobilenets-bench-") as tmp:
        workdir = Path(tmp)
        groups: dict[str, list[BenchSubject]] = {}
        for s in subjects:
            groups.setdefault(f"{s.model}:{s.checkpoint}", []).append(s)
        for group in groups.values():
            size = group[0].input_size
            cal = calibration
            if cal is None and any(b in INT8_BACKENDS for b in backends):
                gen = torch.Generator().manual_seed(0)
                cal = [torch.randn((4, *size), generator=gen) for _ in range(8)]
            runners: dict[tuple, Predictor] = {}
            for s in group:
                for backend in backends_of(s):
                    bar.set_postfix_str(f"preparing {s.implementation} {s.model} {backend}")
                    runners[(s.implementation, backend)] = _runner(s, backend, threads, cal, workdir, opset)
            accuracy: dict[tuple, float] = {}
            if evaluate is not None and group[0].checkpoint is not None:
                for key, run in runners.items():
                    if key[0] == "mobilenets":
                        bar.set_postfix_str(f"evaluating {group[0].model} {key[1]}")
                        accuracy[key] = evaluate(run)
            for batch in batches:
                bar.set_postfix_str(f"{group[0].model} batch {batch}")
                x = torch.randn((batch, *size), generator=torch.Generator().manual_seed(1))
                samples = time_interleaved(runners, x, rounds, iters_per_round, progress=bar.update)
                by_key = {(s.implementation,): s for s in group}
                for (impl, backend), values in samples.items():
                    s = by_key[(impl,)]
                    median = statistics.median(values)
                    # fp32 backends compute the checkpoint's function (export is verified to 1e-4), so its
                    # recorded test accuracy applies; INT8 accuracy must be measured (``evaluate``)
                    top1 = accuracy.get((impl, backend))
                    if top1 is None and backend not in INT8_BACKENDS:
                        top1 = s.recorded_top1
                    rows.append(
                        BenchRow(
                            model=s.model, implementation=impl, backend=backend, batch=batch, threads=threads,
                            resolution=size[-1], latency_ms_median=median * 1e3, latency_ms_p90=_p90(values) * 1e3,
                            throughput_img_s=batch / median, macs=s.macs, params=s.params,
                            gflops=2 * s.macs * batch / median / 1e9, samples=len(values),
                            checkpoint=s.checkpoint, accuracy=top1,
                        )
                    )
    bar.close()
    return rows


def untrained_layer_scales_to_one_(model: nn.Module) -> nn.Module:
    """Set every layer scale (a 1-D ``gamma`` parameter: ours, timm's ``LayerScale2d``) of an untrained model to
    1, in place. At their 1e-5 init (the V4 hybrids) activations shrink into float32's subnormal range, which
    CPUs compute several times slower, so an untrained hybrid would time slower than a trained one, by an amount
    that depends on the library's init (docs/models.md). Trained scales are of order 1. Returns ``model``."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.rsplit(".", 1)[-1] == "gamma" and p.ndim == 1:
                p.fill_(1.0)
    return model


def spread_batchnorm_(model: nn.Module, generator: torch.Generator) -> nn.Module:
    """Draw every ``BatchNorm2d``'s running mean, running variance and shift away from their init values
    (0, 1, 0), in place, as training leaves them. A freshly built network folds into convs with identical
    zero biases, whose activations never reach h-swish's kinks; quantization studies on random weights need
    activations more like a trained network's. Returns ``model``."""
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5, generator=generator)
                m.running_var.uniform_(0.5, 2.0, generator=generator)
                m.bias.uniform_(-0.3, 0.3, generator=generator)
    return model


def matmul_gflops(threads: Optional[int] = None, size: int = 1024, repeats: int = 20) -> float:
    """Achieved fp32 GFLOP/s of a square matmul: the practical compute ceiling of this CPU for PyTorch."""
    if threads is not None:
        torch.set_num_threads(threads)
    a, b = torch.randn(size, size), torch.randn(size, size)
    for _ in range(3):
        a @ b
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        a @ b
        times.append(time.perf_counter() - start)
    return 2 * size**3 / statistics.median(times) / 1e9
