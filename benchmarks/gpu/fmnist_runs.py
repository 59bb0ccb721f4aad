"""Fashion-MNIST accuracy runs on one GPU, all ending by a common deadline.

Each configuration is a plain ``mobilenets train --time-budget`` command whose budget is the time left before
``--deadline-min`` (counted from this script's start) less ``--margin-min`` for start-up and the test pass;
the epoch count is only an upper bound. Several configurations run side by side, but on one GPU they share
it by time-slicing (docs/training.md), so one at a time is the useful setting. A run still going at the
deadline gets SIGTERM (the trainer saves and stops) and its best checkpoint is evaluated on the test set.
The summary (test top-1 of the best-on-validation checkpoint, epochs, wall-clock) is printed, written to
``--output``/summary.json beside the runs, and appended to ``benchmarks/results/gpu_fmnist_runs.json``
(``--results`` names another file).

    python benchmarks/gpu/fmnist_runs.py --deadline-min 7 --output runs/gpu
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/, for _results
from _results import add_results_option, append_run  # noqa: E402

# name: (model, width, extra `mobilenets train` options); batch 256, the default recipe (SGD nesterov,
# warmup + cosine, label smoothing 0.1, EMA), random erasing 0.25, bf16 autocast on the GPU
CONFIGS: dict[str, tuple[str, float, list[str]]] = {
    "v2_x1.0": ("mobilenet_v2", 1.0, []),
    "v2_x1.4": ("mobilenet_v2", 1.4, []),
    "v3_large_x1.0": ("mobilenet_v3_large", 1.0, []),
    "v1_x1.0": ("mobilenet_v1", 1.0, []),
}


def command(name: str, minutes: float, output: Path, args: argparse.Namespace) -> list[str]:
    model, width, extra = CONFIGS[name]
    return [
        sys.executable, "-m", "mobilenets", "train", "--model", model, "--width-mult", str(width),
        "--epochs", str(args.max_epochs), "--time-budget", f"{minutes:.3f}", "--batch-size", str(args.batch_size), "--device", args.device,
        "--workers", str(args.workers), "--threads", str(args.threads), "--output", str(output),
        "--overwrite", "--no-progress", "--no-tensorboard", "--json", *extra, *args.extra,
    ]


def history(output: Path) -> list[dict]:
    path = output / "metrics.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def run_all(commands: dict[str, list[str]], logs: Path, stop_at: float) -> dict[str, dict]:
    """Start every command at once; SIGTERM whatever still runs at ``stop_at`` (perf_counter seconds)."""
    procs, started = {}, {}
    for name, cmd in commands.items():
        with open(logs / f"{name}.log", "w") as log:
            log.write(" ".join(cmd) + "\n")
        started[name] = time.perf_counter()
        with open(logs / f"{name}.log", "a") as log, open(logs / f"{name}.out", "w") as out:
            procs[name] = subprocess.Popen(cmd, stdout=out, stderr=log, text=True)
    results: dict[str, dict] = {}
    while len(results) < len(procs):
        for name, proc in procs.items():
            if name in results:
                continue
            code = proc.poll()
            if code is None and time.perf_counter() > stop_at:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    proc.kill()
                code = proc.wait()
                results[name] = {"returncode": code, "stopped_at_deadline": True}
            elif code is not None:
                results[name] = {"returncode": code, "stopped_at_deadline": False}
            if name in results:
                out = (logs / f"{name}.out").read_text()
                results[name]["wall_s"] = time.perf_counter() - started[name]
                lines = [line for line in out.strip().splitlines() if line.startswith("{")]
                if code == 0 and lines:
                    results[name]["train_json"] = json.loads(lines[-1])
        time.sleep(0.5)
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--deadline-min", type=float, required=True, help="all runs end by then (from the start)")
    parser.add_argument("--configs", nargs="+", default=list(CONFIGS), choices=list(CONFIGS))
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--workers", type=int, default=3, help="data loader processes per run")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads per run")
    parser.add_argument("--max-epochs", type=int, default=300, help="upper bound on epochs within the budget")
    parser.add_argument("--margin-min", type=float, default=0.5, help="kept for start-up and the test pass")
    parser.add_argument("--output", default="runs/gpu")
    add_results_option(parser, "gpu_fmnist_runs")
    parser.add_argument("--extra", nargs=argparse.REMAINDER, default=[], help="more `mobilenets train` options")
    args = parser.parse_args()
    t0 = time.perf_counter()
    deadline = t0 + args.deadline_min * 60
    root = Path(args.output)
    root.mkdir(parents=True, exist_ok=True)

    stop_at = deadline - 20  # time for the SIGTERM save and the test pass of a run stopped at the deadline
    minutes = (stop_at - t0) / 60 - args.margin_min
    if minutes <= 0:
        print(f"no time for a run: deadline {args.deadline_min} min, margin {args.margin_min} min")
        return 1
    print(f"{len(args.configs)} run(s) with a time budget of {minutes:.2f} min each", flush=True)
    runs = run_all({name: command(name, minutes, root / name, args) for name in args.configs}, root, stop_at)
    summary = []
    for name, result in runs.items():
        model, width, extra = CONFIGS[name]
        records = history(root / name)
        row = {"config": name, "model": model, "width_mult": width, "extra": extra + args.extra,
               "budget_min": minutes, "epochs_done": len(records), **result}
        if "train_json" not in result and (root / name / "best.safetensors").exists():
            # stopped at the deadline: the best-on-validation checkpoint on the test set
            proc = subprocess.run([sys.executable, "-m", "mobilenets", "evaluate", str(root / name), "--device",
                                   args.device, "--json"], capture_output=True, text=True)
            if proc.returncode == 0:
                row["evaluate_json"] = json.loads(proc.stdout.strip().splitlines()[-1])
        test = row.get("train_json", {}).get("test_top1", row.get("evaluate_json", {}).get("top1"))
        row["test_top1"] = test
        row["best_val_top1"] = max((r.get("val_top1", 0.0) for r in records), default=None)
        summary.append(row)
    (root / "summary.json").write_text(json.dumps(summary, indent=1))
    print(f"\n{'config':<16} {'epochs':>6} {'train wall':>11} {'img/s':>8} {'best val':>9} {'TEST top-1':>11}")
    for row in summary:
        records = history(root / row["config"])
        rate = sorted(r["train_images_per_s"] for r in records)[len(records) // 2] if records else float("nan")
        test = f"{row['test_top1']:.2%}" if row["test_top1"] is not None else "n/a"
        best = f"{row['best_val_top1']:.2%}" if row["best_val_top1"] is not None else "n/a"
        print(f"{row['config']:<16} {row['epochs_done']:>6} {row['wall_s'] / 60:9.1f} m "
              f"{rate:8.0f} {best:>9} {test:>11}" + ("  (stopped at deadline)" if row["stopped_at_deadline"] else ""))
    print(f"total {(time.perf_counter() - t0) / 60:.1f} min")
    print(f"appended to {append_run(args.results, summary)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
