"""Command line: ``mobilenets <command>`` (also ``python -m mobilenets``).

Each command lives beside the code it drives and contributes ``register(subparsers)``; this file only
assembles them. Commands whose extras are missing still parse, and fail with the extra to install.
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
from typing import Any, Callable, Optional, Sequence

from .argtypes import positive_float, resolution_hw
from .profile import profile as profile_model
from .registry import TASKS, create_model, get_entry, list_models

# modules that add commands: each defines register(subparsers: argparse._SubParsersAction) -> None
COMMAND_MODULES: list[str] = [
    "mobilenets.deploy.commands",
    "mobilenets.train.cli",
    "mobilenets.convert.cli",
    "mobilenets.weights.cli",
]


class CLIError(Exception):
    """An error the user can fix: printed as one line, exit status 2."""


def _cmd_list(args: argparse.Namespace) -> int:
    for task in TASKS if args.task is None else (args.task,):
        for name in list_models(args.pattern, task=task):
            print(f"{name:<30} {get_entry(name).description}")
    return 0


def _option(text: str) -> tuple[str, Any]:
    """``NAME=VALUE`` for ``--option``: VALUE read as JSON (``true``, ``128``, ``[6, 12]``), else as a string."""
    name, sep, value = text.partition("=")
    if not sep or not name:
        raise argparse.ArgumentTypeError(f"expected NAME=VALUE (e.g. reduced_tail=true), got {text!r}")
    try:
        return name, json.loads(value)
    except json.JSONDecodeError:
        return name, value


def _cmd_profile(args: argparse.Namespace) -> int:
    options = dict(args.option)
    if args.num_classes is not None:
        options["num_classes"] = args.num_classes
    model = create_model(args.name, width_mult=args.width_mult, **options)
    height, width = args.resolution
    result = profile_model(model, (height, width))
    shown = str(height) if height == width else f"{height}x{width}"
    if args.json:
        out = {
            "name": args.name,
            "width_mult": args.width_mult,
            "resolution": height if height == width else [height, width],
            "options": {k: v for k, v in options.items() if k != "num_classes"},
            "num_classes": model.num_classes,
            "params": result.params,
            "macs": result.macs,
            "other_ops": result.other_ops,
            "by_kind": result.by_kind(),
        }
        if args.per_layer:
            out["layers"] = result.to_dict(per_layer=True)["layers"]
        print(json.dumps(out))
        return 0
    if args.per_layer:
        print(result.format_table())
    print(
        f"{args.name} width_mult={args.width_mult} resolution={shown} num_classes={model.num_classes}: "
        f"{result.params:,} params, {result.macs / 1e6:.2f}M MACs, {result.other_ops / 1e6:.2f}M other ops"
    )
    return 0


def zoo_rows() -> list[dict]:
    """Every published figure of every model beside what our implementation counts."""
    rows = []
    for name in list_models():
        for fig in get_entry(name).paper:
            model = create_model(name, width_mult=fig.width_mult, num_classes=fig.num_classes)
            prof = profile_model(model, fig.resolution)
            rows.append(
                {
                    "name": name,
                    "width_mult": fig.width_mult,
                    "resolution": fig.resolution,
                    "num_classes": fig.num_classes,
                    "params": prof.params,
                    "macs": prof.macs,
                    "paper_params_m": fig.params_m,
                    "paper_macs_m": fig.macs_m,
                    "paper_top1": fig.top1,
                    "source": fig.source,
                }
            )
    return rows


def _cmd_zoo(args: argparse.Namespace) -> int:
    rows = zoo_rows()
    if args.json:
        print(json.dumps(rows))
        return 0
    header = (
        f"{'model':<28} {'alpha':>5} {'res':>4} {'cls':>5} {'params (M)':>10} {'paper':>6} "
        f"{'MACs (M)':>9} {'paper':>6} {'diff':>6} {'top-1':>6}"
    )
    print(header)
    print("-" * len(header))
    for r in rows:
        diff = (r["macs"] / 1e6 - r["paper_macs_m"]) / r["paper_macs_m"] * 100
        paper_params = f"{r['paper_params_m']:.2f}" if r["paper_params_m"] is not None else "-"
        top1 = f"{r['paper_top1']:.1f}" if r["paper_top1"] is not None else "-"
        print(
            f"{r['name']:<28} {r['width_mult']:>5} {r['resolution']:>4} {r['num_classes']:>5} "
            f"{r['params'] / 1e6:>10.2f} {paper_params:>6} {r['macs'] / 1e6:>9.1f} {r['paper_macs_m']:>6.0f} "
            f"{diff:>+5.1f}% {top1:>6}"
        )
    print("\nMACs: conv + fully connected multiply-accumulates, batch norm folded (docs/profiling.md).")
    print("Paper columns: published figures (sources: `mobilenets zoo --json`); top-1 is ImageNet, not ours.")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mobilenets", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    p = sub.add_parser("list", help="list the registered models")
    p.add_argument("pattern", nargs="?", default="*", help="shell-style wildcard, e.g. 'mobilenet_v3*'")
    p.add_argument("--task", choices=TASKS, default=None, help="only the models of this task (default: every task)")
    p.set_defaults(func=_cmd_list)

    p = sub.add_parser("profile", help="params and MACs of a model, in total or per layer")
    p.add_argument("name", help="model name (see `mobilenets list`)")
    p.add_argument("--width-mult", type=positive_float, default=1.0, help="width multiplier alpha")
    p.add_argument("--resolution", type=resolution_hw, default=(224, 224),
                   help="input size in pixels: N (square) or HxW, e.g. 1024x2048")
    p.add_argument("--num-classes", type=int, default=None, help="default: the model's (1000 for classification)")
    p.add_argument("--option", type=_option, action="append", default=[], metavar="NAME=VALUE",
                   help="any other model option, repeatable: --option reduced_tail=true --option output_stride=8")
    p.add_argument("--per-layer", action="store_true", help="one row per layer")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=_cmd_profile)

    p = sub.add_parser("zoo", help="every model with params and MACs beside the papers' numbers")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_cmd_zoo)

    for module_name in COMMAND_MODULES:
        importlib.import_module(module_name).register(sub)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    func: Callable[[argparse.Namespace], int] = args.func
    try:
        return func(args)
    except (CLIError, ValueError, TypeError, FileNotFoundError, ImportError) as exc:
        print(f"mobilenets {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"mobilenets {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
