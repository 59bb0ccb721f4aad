"""``mobilenets weights [MODEL] [--json]``, ``mobilenets download MODEL[:TAG]`` and ``mobilenets push-to-hub``."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from ..argtypes import positive_float

__all__ = ["register"]


def _metric(value: object) -> str:
    return "-" if value is None else f"{value:.1f}"


def _cmd_weights(args: argparse.Namespace) -> int:
    from . import converted_path, list_weights

    rows = list_weights(args.model)
    if args.json:
        print(json.dumps([dict(r.describe(), cached=converted_path(r).is_file()) for r in rows]))
        return 0
    # the two metric columns hold the row's task's figures: top-1/top-5, or mIoU/pixel accuracy (marked)
    header = (
        f"{'model':<28} {'width':>5} {'tag':<38} {'source arch':<34} {'top-1':>5} {'top-5':>5}  preprocessing"
    )
    print(header)
    print("-" * len(header))
    seen: set[tuple[str, float]] = set()
    for r in rows:
        default = (r.model, r.width_mult) not in seen
        seen.add((r.model, r.width_mult))
        pre = r.preprocessing
        mean = "imagenet" if pre.mean[0] == 0.485 else f"mean={pre.mean[0]:g} std={pre.std[0]:g}"
        tag = r.tag + (" *" if default else "")
        first, second = r.metrics.values()
        size = f"{pre.resize}->{pre.crop}" if pre.crop is not None else f"{pre.resize}, no crop"
        seg = "  (mIoU / pixel acc., COCO-VOC)" if r.task == "segmentation" else ""
        print(
            f"{r.model:<28} {r.width_mult:>5g} {tag:<38} {r.source_arch:<34} {_metric(first):>5} "
            f"{_metric(second):>5}  {size} {pre.interpolation} {mean}{seg}"
        )
    print("\n* the default at that width (pretrained=True). Accuracy: published ImageNet-1k top-1/top-5, or for")
    print("segmentation rows mIoU/pixel accuracy on COCO val2017 with VOC's classes; the publishers', not ours;")
    print("sources and licenses: `mobilenets weights --json`, docs/weights.md.")
    return 0


def _cmd_download(args: argparse.Namespace) -> int:
    from . import download, find

    model, _, tag = args.spec.partition(":")
    pretrained = tag or True
    entry = find(model, args.width_mult, pretrained)
    path = download(model, pretrained, args.width_mult, Path(args.output) if args.output else None)
    name, value = next(iter(entry.metrics.items()))
    figure = f"{name.replace('top1', 'top-1')} {value}" if value is not None else f"no published {name}"
    print(f"{path}: {entry.model} width_mult={entry.width_mult:g} {entry.tag} ({entry.source} {entry.source_arch}, "
          f"{figure}, license {entry.license})")
    return 0


def _cmd_push(args: argparse.Namespace) -> int:
    from ..hub import push_to_hub

    url = push_to_hub(args.checkpoint, args.repo_id, private=args.private, commit_message=args.message)
    print(f"pushed {args.checkpoint} to {args.repo_id}: {url}")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "weights", help="list the published pretrained weights (source, tag, published top-1 or mIoU, preprocessing)"
    )
    p.add_argument("model", nargs="?", default=None, help="one model (see `mobilenets list`); default: all")
    p.add_argument("--json", action="store_true", help="print one JSON list")
    p.set_defaults(func=_cmd_weights)

    p = subparsers.add_parser(
        "download", help="fetch and convert published weights once (cached under $MOBILENETS_HOME)"
    )
    p.add_argument(
        "spec", metavar="MODEL[:TAG]",
        help="e.g. mobilenet_v3_large, mobilenet_v3_large:torchvision:IMAGENET1K_V1, mobilenet_v1:keras:160",
    )
    p.add_argument("--width-mult", type=positive_float, default=1.0, help="width multiplier of the weights (default 1.0)")
    p.add_argument("--output", default=None, help="also write the checkpoint here (.safetensors)")
    p.set_defaults(func=_cmd_download)

    p = subparsers.add_parser(
        "push-to-hub", help="upload a checkpoint and a generated model card to the Hugging Face Hub"
    )
    p.add_argument("checkpoint", help="a mobilenets .safetensors checkpoint")
    p.add_argument("repo_id", metavar="ORG/NAME", help="Hub repository (created if missing)")
    p.add_argument("--private", action="store_true", help="create the repository private")
    p.add_argument("--message", default=None, help="commit message")
    p.set_defaults(func=_cmd_push)
