"""Where a GPU training step's time goes: ms per step (forward, loss, backward, SGD) for memory format x
autocast, then channels-last bf16 through ``torch.compile`` (default and reduce-overhead, what ``mobilenets
train --compile`` does), the EMA update on its own, and the CUDA kernels of the slowest variant.

Synthetic batches already on the GPU (no data loading), synchronised timing, median of --steps.

    python benchmarks/experiments/gpu_step_profile.py
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

import torch
import torch.nn as nn

import mobilenets
from mobilenets.train.recipes import ema_multi_avg_fn


def _step_fn(model, optimizer, x, y, amp):
    def step():
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=amp):
            loss = nn.functional.cross_entropy(model(x).float(), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    return step


def _median_ms(fn, steps: int) -> float:
    for _ in range(5):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        fn()
        torch.cuda.synchronize()
        times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--models", nargs="+", default=["mobilenet_v3_small", "mobilenet_v2"])
    args = parser.parse_args()
    torch.backends.cudnn.benchmark = True
    device = torch.device("cuda")
    print(f"torch {torch.__version__}, {torch.cuda.get_device_name(0)}, batch {args.batch_size}, 28 px small_input")
    slowest = None
    for name in args.models:
        for channels_last in (False, True):
            for amp in (False, True):
                torch.manual_seed(0)
                model = mobilenets.create_model(name, num_classes=10, in_chans=1, small_input=True).to(device)
                x = torch.randn(args.batch_size, 1, 28, 28, device=device)
                if channels_last:
                    model = model.to(memory_format=torch.channels_last)
                    x = x.contiguous(memory_format=torch.channels_last)
                y = torch.randint(0, 10, (args.batch_size,), device=device)
                optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, nesterov=True)
                step = _step_fn(model, optimizer, x, y, amp)
                ms = _median_ms(step, args.steps)
                print(f"  {name:<20} channels_last={channels_last!s:<5} bf16={amp!s:<5} {ms:7.2f} ms/step "
                      f"{args.batch_size / ms * 1e3:8.0f} img/s", flush=True)
                if slowest is None or ms > slowest[0]:
                    slowest = (ms, name, channels_last, amp, step)
        for mode in ("default", "reduce-overhead"):
            compiled = torch.compile(model, mode=mode)
            start = time.perf_counter()
            _step_fn(compiled, optimizer, x, y, True)()
            torch.cuda.synchronize()
            ms = _median_ms(_step_fn(compiled, optimizer, x, y, True), args.steps)
            print(f"  {name:<20} channels_last=True  bf16=True  compile={mode}: {ms:7.2f} ms/step "
                  f"{args.batch_size / ms * 1e3:8.0f} img/s (first step {time.perf_counter() - start:.0f} s)", flush=True)
        ema = torch.optim.swa_utils.AveragedModel(model, multi_avg_fn=ema_multi_avg_fn(0.9998), use_buffers=True)
        print(f"  {name:<20} EMA update (AveragedModel, foreach) {_median_ms(lambda: ema.update_parameters(model), args.steps):7.2f} ms")
    ms, name, channels_last, amp, step = slowest
    print(f"\nkernels of the slowest: {name} channels_last={channels_last} bf16={amp} ({ms:.1f} ms/step)")
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA, torch.profiler.ProfilerActivity.CPU]) as prof:
        for _ in range(5):
            step()
        torch.cuda.synchronize()
    print(prof.key_averages().table(sort_by="cuda_time_total", row_limit=14, max_name_column_width=70))
    return 0


if __name__ == "__main__":
    sys.exit(main())
