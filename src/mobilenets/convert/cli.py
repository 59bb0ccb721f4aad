"""``mobilenets convert --from {torchvision,timm,keras} --arch NAME [--width-mult A] SRC DST.safetensors``."""

from __future__ import annotations

import argparse

from ..registry import get_entry

__all__ = ["register"]

SOURCES = ("torchvision", "timm", "keras")


def _width(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not 0 < value <= 4:
        raise argparse.ArgumentTypeError(f"must be in (0, 4], got {text}")
    return value


def _cmd_convert(args: argparse.Namespace) -> int:
    from . import convert_file

    model = convert_file(args.source, args.src, args.dst, args.arch, args.width_mult)
    origin = model.info.extra["converted_from"]
    entry = get_entry(model.arch)
    defaults = entry.options_type.build(entry.defaults, {}, model.arch).to_dict()
    changed = {
        k: v
        for k, v in model.options.to_dict().items()
        if k not in ("width_mult", "num_classes", "in_chans", "dropout") and defaults[k] != v
    }
    options = ", ".join(f"{k}={v}" for k, v in changed.items()) or "none"
    print(
        f"{args.dst}: {model.arch} width_mult={model.options.width_mult:g} num_classes={model.num_classes} "
        f"in_chans={model.options.in_chans} from {origin['library']} {origin['arch']} ({args.src})"
    )
    print(f"  options reproducing the source: {options}; mean={list(model.info.mean)} std={list(model.info.std)}")
    if model.info.extra.get("background_class"):
        print("  1001 classes: logit 0 is the background class (recorded as background_class=true)")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "convert",
        help="convert torchvision / timm / Keras MobileNet weights to a mobilenets checkpoint",
        description=(
            "Convert pretrained weights from another library into a .safetensors checkpoint that "
            "`mobilenets.load` rebuilds with identical outputs (docs/convert.md)."
        ),
    )
    p.add_argument("--from", dest="source", required=True, choices=SOURCES, help="library the weights come from")
    p.add_argument(
        "--arch",
        required=True,
        help=(
            "our model name (mobilenet_v1, mobilenet_v2, mobilenet_v3_large, mobilenet_v3_small, *_minimal) or "
            "the source's: timm (mobilenetv3_small_050, tf_mobilenetv3_large_100 ...; the suffix sets the "
            "width; V3 Large/Small need timm's name, mobilenetv3_* or tf_mobilenetv3_*, unless timm's "
            "config.json is beside the file), Keras (MobileNet, MobileNetV2, MobileNetV3Small, MobileNetV3Large)"
        ),
    )
    p.add_argument(
        "--width-mult",
        type=_width,
        default=None,
        help="width multiplier (Keras alpha); default: the width in a timm name or a Keras model name, else 1.0",
    )
    p.add_argument(
        "src", help="source weights: .pth/.pt/.safetensors (torchvision, timm); .weights.h5/.keras/.h5 (Keras)"
    )
    p.add_argument("dst", help="output checkpoint, .safetensors")
    p.set_defaults(func=_cmd_convert)
