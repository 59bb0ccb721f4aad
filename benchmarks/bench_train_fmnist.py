"""Train the short Fashion-MNIST checkpoints that benchmarks/bench_int8.py quantizes.

Runs `mobilenets.train.train` (the library's trainer) for a few hundred steps per model: enough for a model
whose INT8 accuracy drop means something, short enough for a shared 2-core CPU. Writes one run folder per
model under ``--out`` (``OUT/MODEL/best.safetensors``, what bench_int8.py takes; no results file: the
accuracies that matter are bench_int8.py's). Skips models whose checkpoint already exists.

    .venv/bin/python benchmarks/bench_train_fmnist.py --out runs/fmnist --steps 300 --threads 1
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from mobilenets.train.trainer import TrainConfig, train

MODELS = ("mobilenet_v1", "mobilenet_v2", "mobilenet_v3_large", "mobilenet_v3_small")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", nargs="*", default=list(MODELS))
    parser.add_argument("--out", default="runs/fmnist")
    parser.add_argument("--steps", type=int, default=300, help="training batches (one epoch, truncated)")
    parser.add_argument("--width-mult", type=float, default=0.5)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    for name in args.models:
        out = Path(args.out) / name
        if (out / "best.safetensors").is_file():
            print(f"{name}: {out / 'best.safetensors'} exists, skipped")
            continue
        start = time.time()
        result = train(
            TrainConfig(
                model=name, output=str(out), width_mult=args.width_mult, epochs=1, batch_size=128,
                limit_train_batches=args.steps, threads=args.threads, progress=False, tensorboard=False,
                overwrite=True, workers=0,
            )
        )
        keys = {k: result[k] for k in ("test_top1", "test_top5") if k in result}
        print(f"{name}: trained in {time.time() - start:.0f}s {json.dumps(keys)}", flush=True)


if __name__ == "__main__":
    main()
