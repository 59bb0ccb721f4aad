"""Training-step speed of the zoo's models on Fashion-MNIST-sized input (1x28x28, small_input, batch 128).

One SGD step (forward, label-smoothed loss, backward, Nesterov update) per call, channels-last, the models timed
interleaved in one process; prints the median step time and the speed relative to the first configuration.
Used to pick the model of the 15-minute benchmark, and with a size per configuration (MODEL:WIDTH:SIZE) to
weigh the stages of --progressive-sizes (docs/training.md). Synthetic batches: no dataset needed. The run (per
configuration: parameters, median ms per step, images/s) is appended to ``benchmarks/results/train_step_speed.json``
(``--results`` names another file).

    .venv/bin/python benchmarks/train_step_speed.py --threads 1
    .venv/bin/python benchmarks/train_step_speed.py --threads 1 --rounds 8 \
        mobilenet_v3_small:0.5:28 mobilenet_v3_small:0.5:24 mobilenet_v3_small:0.5:20 mobilenet_v3_small:0.5:16
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

import mobilenets
from _results import add_results_option, append_run

DEFAULT = [
    "mobilenet_v3_small:0.5", "mobilenet_v3_small_minimal:0.5", "mobilenet_v1:0.5", "mobilenet_v1:0.75",
    "mobilenet_v1:1.0", "mobilenet_v2:0.5", "mobilenet_v2:1.0",
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("configs", nargs="*", default=DEFAULT, help="MODEL:WIDTH[:SIZE] (SIZE default 28; default: %(default)s)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--rounds", type=int, default=4)
    add_results_option(parser, "train_step_speed")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    crit = torch.nn.CrossEntropyLoss(label_smoothing=0.1)
    gen = torch.Generator().manual_seed(0)
    y = torch.randint(0, 10, (args.batch_size,), generator=gen)
    nets = {}
    for config in args.configs:
        name, width, size = (config.split(":") + ["", ""])[:3]
        model = mobilenets.create_model(name, width_mult=float(width or 1.0), small_input=True, num_classes=10,
                                        in_chans=1).to(memory_format=torch.channels_last)
        side = int(size or 28)
        x = torch.randn(args.batch_size, 1, side, side, generator=gen).contiguous(memory_format=torch.channels_last)
        nets[config] = (model, torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, nesterov=True), x)

    def step(model, opt, x) -> None:
        loss = crit(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()

    for model, opt, x in nets.values():
        step(model, opt, x)
    times: dict[str, list[float]] = {k: [] for k in nets}
    for _ in range(args.rounds):
        for key, (model, opt, x) in nets.items():
            start = time.perf_counter()
            step(model, opt, x)
            step(model, opt, x)
            times[key].append((time.perf_counter() - start) / 2)
    first = statistics.median(times[args.configs[0]])
    print(f"batch {args.batch_size}, 28 px unless a size is given, {args.threads} thread(s), median of "
          f"{args.rounds} x 2 steps")
    rows = []
    for key, (model, _, _) in nets.items():
        med = statistics.median(times[key])
        params = sum(p.numel() for p in model.parameters()) / 1e6
        print(f"{key:<34} {params:5.2f} M params {med * 1e3:8.1f} ms/step {args.batch_size / med:7.0f} img/s "
              f"{first / med:6.2f}x the speed of {args.configs[0]}")
        rows.append({"config": key, "params_m": round(params, 4), "ms_per_step": med * 1e3,
                     "images_per_s": args.batch_size / med, "speed_vs_first": first / med})
    record = {"batch_size": args.batch_size, "threads": args.threads, "rounds": args.rounds, "rows": rows}
    print(f"appended to {append_run(args.results, record)}")


if __name__ == "__main__":
    main()
