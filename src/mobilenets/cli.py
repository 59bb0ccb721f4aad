"""Command line: ``mobilenets <command>`` (also ``python -m mobilenets``).

Each command lives beside the code it drives and contributes ``register(subparsers)``; this file only
assembles them. Commands whose extras are missing still parse, and fail with the extra to install.
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
from typing import Callable, Optional, Sequence

from .argtypes import positive_float, resolution
from .profile import profile as profile_model
from .registry import create_model, get_entry, list_models

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
    for name in list_models(args.pattern):
        print(f"{name:<30} {get_entry(name).description}")
    return 0


def _cmd_profile(args: argparse.Namespace) -> int:
    model = create_model(args.name, width_mult=args.width_mult, num_classes=args.num_classes)
    result = profile_model(model, args.resolution)
    if args.json:
        out = {
            "name": args.name,
            "width_mult": args.width_mult,
            "resolution": args.resolution,
            "num_classes": args.num_classes,
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
        f"{args.name} width_mult={args.width_mult} resolution={args.resolution} num_classes={args.num_classes}: "
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
    p.set_defaults(func=_cmd_list)

    p = sub.add_parser("profile", help="params and MACs of a model, in total or per layer")
    p.add_argument("name", help="model name (see `mobilenets list`)")
    p.add_argument("--width-mult", type=positive_float, default=1.0, help="width multiplier alpha")
    p.add_argument("--resolution", type=resolution, default=224, help="input height and width in pixels")
    p.add_argument("--num-classes", type=int, default=1000)
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
