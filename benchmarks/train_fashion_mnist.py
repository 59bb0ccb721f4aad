"""Fashion-MNIST: test accuracy against wall-clock training time, and training throughput beside torchvision.

Two parts, both printed as measured (no timed assertions):

1. Throughput: the same training loop (``mobilenets.train.Trainer._train_step``: forward, loss, backward,
   optimizer, EMA) drives our model and torchvision's ``mobilenet_v3_small`` on the same batches, alternating
   blocks of steps; the median images/s of each and their ratio are reported. Like for like, both networks
   run at 32 px with a 1-channel stem and 10 classes; our benchmark model (small_input at 28 px) is listed too.
2. Accuracy: ``mobilenets train --time-budget`` (under torchrun with ``--nproc`` > 1) on the training set (10%
   held out for model selection): it trains for ``--budget-min`` minutes of wall-clock, validation included,
   with the cosine schedule running on elapsed time, so that it ends annealed whatever speed the machine has
   that day; then the best checkpoint on the 10,000 test images.

The run (throughput, the training command, its per-epoch history and test result) is appended to
``benchmarks/results/train_fashion_mnist.json`` (``--results`` names another file); the trained run folder
goes to ``--output``. ``--throughput-only --steps 2 --repeats 1`` is a quick check that it runs.

    python benchmarks/train_fashion_mnist.py --budget-min 15 --model mobilenet_v3_small --width-mult 0.5 \
        --batch-size 128 --threads 1 --nproc 2 --output runs/bench_fmnist --extra --progressive-sizes 20,24,28,28
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

from _results import add_results_option, append_run, cpu_name


def measure_throughput(args: argparse.Namespace) -> dict:
    import torchvision

    import mobilenets
    from mobilenets.data import build_data
    from mobilenets.train import TrainConfig, Trainer

    if args.threads:
        torch.set_num_threads(args.threads)
    bundle32 = build_data("fashion_mnist", args.data_dir, image_size=32)
    bundle28 = build_data("fashion_mnist", args.data_dir)

    def torchvision_v3_small() -> torch.nn.Module:
        model = torchvision.models.mobilenet_v3_small(num_classes=10)
        first = model.features[0][0]
        model.features[0][0] = torch.nn.Conv2d(1, first.out_channels, first.kernel_size, first.stride, first.padding, bias=False)
        return model

    candidates = {
        "mobilenets mobilenet_v3_small (32 px)": (
            lambda: mobilenets.create_model("mobilenet_v3_small", num_classes=10, in_chans=1), bundle32),
        "torchvision mobilenet_v3_small (32 px)": (torchvision_v3_small, bundle32),
        f"mobilenets {args.model} x{args.width_mult} small_input (28 px)": (
            lambda: mobilenets.create_model(args.model, num_classes=10, in_chans=1, width_mult=args.width_mult, small_input=True),
            bundle28),
    }
    trainers = {}
    for name, (factory, bundle) in candidates.items():
        torch.manual_seed(0)
        config = TrainConfig(output=f"/tmp/mobilenets-throughput-{os.getpid()}-{len(trainers)}", batch_size=args.batch_size,
                             threads=args.threads, progress=False, tensorboard=False, overwrite=True)
        trainer = Trainer(config, bundle, log=lambda _m: None, model=factory())
        trainers[name] = (trainer, iter(trainer._train_loader()))
    rates: dict[str, list[float]] = {name: [] for name in trainers}
    for _ in range(args.repeats):
        for name, (trainer, batches) in trainers.items():
            trainer.model.train()
            images, labels = next(batches)  # warm-up step and the batch fetch stay outside the timing
            trainer._train_step(images, labels)
            seconds = 0.0
            for _step in range(args.steps):
                images, labels = next(batches)
                start = time.perf_counter()
                trainer._train_step(images, labels)
                seconds += time.perf_counter() - start
            rates[name].append(args.steps * args.batch_size / seconds)
    medians = {name: statistics.median(values) for name, values in rates.items()}
    return {"images_per_s": medians, "samples": rates}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budget-min", type=float, default=15.0, help="training time budget in minutes")
    parser.add_argument("--model", default="mobilenet_v3_small_minimal")
    parser.add_argument("--width-mult", type=float, default=0.5)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--random-erasing", type=float, default=0.0,
                        help="random erasing probability (0: a 15-minute run underfits, see docs/training.md)")
    parser.add_argument("--threads", type=int, default=2, help="torch threads per process")
    parser.add_argument("--nproc", type=int, default=1,
                        help="training processes (torchrun, DistributedDataParallel); --batch-size is per process")
    parser.add_argument("--steps", type=int, default=10, help="timed steps per block in the throughput part")
    parser.add_argument("--repeats", type=int, default=5, help="alternating blocks per model")
    parser.add_argument("--epochs", type=int, default=None,
                        help="a fixed epoch count instead of the time budget (default: --time-budget --budget-min)")
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--output", default="runs/bench_fashion_mnist")
    parser.add_argument("--throughput-only", action="store_true", help="skip the accuracy part")
    add_results_option(parser, "train_fashion_mnist")
    parser.add_argument("--extra", nargs=argparse.REMAINDER, default=[], help="more `mobilenets train` options")
    args = parser.parse_args()

    print(f"machine: {os.cpu_count()} CPU cores ({cpu_name()}), torch {torch.__version__}, threads {args.threads}")
    throughput = measure_throughput(args)
    print("\ntraining throughput, same loop, batch", args.batch_size, f"(median of {args.repeats} x {args.steps} steps):")
    rates = throughput["images_per_s"]
    for name, rate in rates.items():
        print(f"  {name:<58} {rate:8.1f} img/s")
    ours, theirs = list(rates.values())[:2]
    print(f"  ratio mobilenets / torchvision mobilenet_v3_small: {ours / theirs:.2f}x")

    if args.throughput_only:
        print(f"\nappended to {append_run(args.results, {'throughput': throughput})}")
        return 0

    def train_command(output: str) -> list[str]:
        launcher = [sys.executable, "-m", "mobilenets"] if args.nproc == 1 else [
            sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(args.nproc),
            "-m", "mobilenets"]
        # with the time budget, 100 epochs is only an upper bound (this CPU does about 12 in 15 minutes)
        length = ["--epochs", str(args.epochs)] if args.epochs else ["--epochs", "100", "--time-budget", str(args.budget_min)]
        return launcher + [
            "train", "--model", args.model, "--width-mult", str(args.width_mult), *length,
            "--batch-size", str(args.batch_size), "--threads", str(args.threads),
            "--random-erasing", str(args.random_erasing), "--output", output, "--overwrite", "--no-progress",
            "--no-tensorboard", "--json",
        ] + (["--data-dir", args.data_dir] if args.data_dir else []) + args.extra

    command = train_command(args.output)
    print("\nrunning:\n  " + " ".join(command[1:]))
    start = time.perf_counter()
    proc = subprocess.run(command, stdout=subprocess.PIPE, text=True)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        print(proc.stdout)
        print(f"training failed with exit status {proc.returncode}")
        return proc.returncode
    results = json.loads(proc.stdout.strip().splitlines()[-1])
    history = results.get("history", []) or _history(Path(args.output))
    print("\naccuracy against training time (wall-clock with validation; validation = the held-out training images,"
          " 6,000 by default; without a validation split, training accuracy under augmentation):")
    elapsed = 0.0
    for record in history:
        elapsed += record.get("epoch_seconds", record["epoch_train_seconds"])
        accuracy = (f"val top-1 {record['val_top1']:.2%}" if "val_top1" in record
                    else f"train top-1 {record['train_top1']:.2%}")
        size = f" at {record['train_size']} px" if "train_size" in record else ""
        print(f"  epoch {record['epoch']:>3}  {elapsed / 60:6.1f} min  {accuracy}  "
              f"({record['train_images_per_s']:.0f} img/s{size})")
    print(
        f"\nTEST top-1 {results['test_top1']:.2%}, top-5 {results['test_top5']:.2%} on {results['test_images']} images; "
        f"stopped by {results['stopped_by']} after {results['elapsed_seconds'] / 60:.1f} min of training (validation "
        f"included; {results['train_seconds'] / 60:.1f} min of it in steps), {wall / 60:.1f} min wall-clock with "
        f"start-up and the test pass; {'best' if results['best_val_top1'] is not None else 'last'} epoch "
        f"{results['best_epoch']}"
    )
    print(f"plots: {results['curves_png']} {results['confusion_png']}")
    record = {"throughput": throughput, "train_command": command[1:], "wall_seconds": wall, "history": history,
              "result": {k: v for k, v in results.items() if k != "history"}}
    print(f"appended to {append_run(args.results, record)}")
    return 0


def _history(output: Path) -> list[dict]:
    return [json.loads(line) for line in (output / "metrics.jsonl").read_text().splitlines() if line.strip()]


if __name__ == "__main__":
    sys.exit(main())
