"""SSDLite on the Fashion-MNIST scenes (issue #24, item 8, accuracy half): COCO mAP@.5 on the scene test set after
a wall-clock budget of CPU training.

Runs the library's trainer (`mobilenets.train.train`, what ``mobilenets train`` runs) with ``--time-budget``
``--minutes``: ``ssdlite_mobilenet_v3_small`` (width 1, 1.62M parameters) at the scenes' 128x128, batch 16,
AdamW at 3e-3 with the cosine running on elapsed time, no EMA (at a few thousand steps the 0.999 average
still carries much of the initial weights: after 174 steps its weights scored half the raw model's mAP@.5);
the best epoch by validation mAP@.5 (scenes of held-out garments) is tested on the 1000 test scenes. Recorded:
test mAP@.5, mAP@[.5:.95], mAP@.75, per-class AP@.5, epochs, steps, training images/s, minutes spent; appended
to ``benchmarks/results/detection_scenes.json`` (``--results`` names another file). The run folder keeps the
checkpoint, ``mobilenets evaluate OUT --json`` measures it again.

    .venv/bin/python benchmarks/train_detection_scenes.py --minutes 15 --threads 2 --output runs/det15
    .venv/bin/python benchmarks/train_detection_scenes.py --minutes 0.2 --test-scenes 32 --output /tmp/det --results /tmp/x.json  # smoke
"""

from __future__ import annotations

import argparse
import json

from _results import add_results_option, append_run
from mobilenets.train.trainer import TrainConfig, train

ARCH = "ssdlite_mobilenet_v3_small"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=15.0, help="wall-clock training budget")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--width-mult", type=float, default=1.0)
    parser.add_argument("--output", default="runs/det15", help="the run folder (replaced if it holds a run)")
    parser.add_argument("--test-scenes", type=int, default=None,
                        help="test on the first N test scenes (default: all 1000; for smoke runs)")
    add_results_option(parser, "detection_scenes")
    args = parser.parse_args()
    batch = 16
    config = TrainConfig(
        model=ARCH, dataset="fashion_mnist_scenes", width_mult=args.width_mult, time_budget_min=args.minutes,
        epochs=100, batch_size=batch, opt="adamw", lr=0.003, ema_decay=0.0, threads=args.threads,
        output=args.output, overwrite=True, progress=False, tensorboard=False,
        limit_val_batches=None if args.test_scenes is None else max(1, args.test_scenes // batch),
    )
    results = train(config)
    record = {
        "arch": ARCH, "width_mult": args.width_mult, "minutes": args.minutes, "threads": args.threads,
        "test_scenes": results["test_images"], "test_map50": results["test_map50"], "test_map": results["test_map"],
        "test_map75": results["test_map75"], "per_class_ap50": results["per_class_ap50"],
        "best_epoch": results["best_epoch"], "best_val_map50": results["best_val_map50"],
        "epochs": results["final"].get("epoch"), "steps": results["final"].get("step"),
        "train_images_per_s": results["train_images_per_s"], "elapsed_minutes": results["elapsed_seconds"] / 60,
        "run": results["output"],
    }
    print(json.dumps(record, indent=1))
    print(f"appended to {append_run(args.results, record)}")


if __name__ == "__main__":
    main()
