"""Where the kept benchmarks put what they measure: one JSON file per benchmark in ``benchmarks/results/``.

Each file is a list of runs; a run is ``{"date", "machine", "command", "results"}``. ``append_run`` adds one,
writing a temporary file beside the target and renaming it, so an interrupted run never leaves a torn file.
``write_docs`` puts a run's tables between a guide's markers, the same way.
"""

from __future__ import annotations

import argparse
import datetime
import importlib.metadata
import json
import os
import platform
import shlex
import sys
import tempfile
from pathlib import Path

import torch

from mobilenets.argtypes import positive_int

RESULTS = Path(__file__).resolve().parent / "results"
_VERSIONED = ("torch", "torchvision", "timm", "onnxruntime", "openvino", "torchao")


def add_results_option(parser: argparse.ArgumentParser, name: str) -> None:
    """``--results FILE`` (default ``benchmarks/results/NAME.json``), the file this run is appended to."""
    parser.add_argument(
        "--results", type=Path, default=RESULTS / f"{name}.json",
        help=f"append this run to this JSON list of runs (default: benchmarks/results/{name}.json)",
    )


def add_timing_options(parser: argparse.ArgumentParser, rounds: int, iters: int = 5) -> None:
    """``--threads`` (default 2, the project's CPU), ``--rounds`` of interleaved timing and ``--iters`` timed
    calls per runner per round, each an integer >= 1."""
    parser.add_argument("--threads", type=positive_int, default=2, help="torch and runtime threads (default 2)")
    parser.add_argument("--rounds", type=positive_int, default=rounds,
                        help=f"interleaved timing rounds (default {rounds})")
    parser.add_argument("--iters", type=positive_int, default=iters,
                        help=f"timed calls per runner per round (default {iters})")


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def machine() -> dict:
    """The machine and software a run measured: CPU, cores, GPU, and the versions of the libraries timed."""
    versions = {}
    for package in _VERSIONED:
        try:
            versions[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            pass
    return {
        "cpu": cpu_name(),
        "cpu_cores": os.cpu_count(),
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "python": platform.python_version(),
        "versions": versions,
    }


def append_run(path: Path, results: dict | list) -> Path:
    """Append ``results`` with the date, machine and command line to the JSON list in ``path``, atomically."""
    path = Path(path)
    runs = []
    if path.exists():
        try:
            runs = json.loads(path.read_text())
        except json.JSONDecodeError as error:
            raise SystemExit(f"{path} is not JSON ({error}); name another file with --results") from None
        if not isinstance(runs, list):
            raise SystemExit(
                f"{path} holds a {type(runs).__name__}, not a list of runs; name another file with --results")
    runs.append({
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "machine": machine(),
        "command": shlex.join(["python", *sys.argv]),
        "results": results,
    })
    path.parent.mkdir(parents=True, exist_ok=True)
    _write_atomic(path, json.dumps(runs, indent=1) + "\n")
    return path


def _write_atomic(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def write_docs(tables: str, path: Path, begin: str, end: str) -> None:
    """Replace what stands between the ``begin`` and ``end`` marker lines of ``path`` with ``tables``, the date,
    machine and command, atomically."""
    text = path.read_text()
    if text.count(begin) != 1 or text.count(end) != 1 or text.index(begin) > text.index(end):
        raise SystemExit(f"{path} needs one {begin} line before one {end} line")
    about = machine()
    versions = ", ".join(f"{k} {v}" for k, v in about["versions"].items() if k in ("torch", "torchvision",
                                                                                    "onnxruntime", "openvino"))
    block = (f"{begin}\nMeasured {datetime.date.today().isoformat()} on {about['cpu']} ({about['cpu_cores']} cores; "
             f"{versions}):\n\n```bash\n{shlex.join(['python', *sys.argv])}\n```\n\n{tables}\n{end}")
    head, rest = text.split(begin)
    _write_atomic(path, head + block + rest.split(end, 1)[1])
