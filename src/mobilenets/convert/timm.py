"""timm ``mobilenetv1_*``, ``mobilenetv2_*``, ``mobilenetv3_{large,small}_*``, ``tf_mobilenetv3_*`` and
``mobilenetv4_conv_{small,medium,large}*`` state dicts.

Mapping (in forward order, see ``_mapping``): ``conv_stem`` + ``bn1`` -> ``stem``; ``blocks.i.j`` in order ->
our ``stages.s.k`` in order (our stages group blocks by resolution, timm's by table row: the indices differ,
the order is the same; a timm ``DepthwiseSeparableConv`` first block, ``conv_dw`` / [``se``] / ``conv_pw``, is our
inverted residual without expansion: ``conv_dw`` / [``se``] / ``conv_pwl``; ``InvertedResidual`` maps
``conv_pw`` / ``conv_dw`` / ``se.conv_reduce``, ``se.conv_expand`` / ``conv_pwl`` one to one); V1's
``dsa`` blocks -> ``DepthwiseSeparableConv``; V2's ``conv_head`` + ``bn2`` and V3's last ``ConvBnAct`` block
-> ``final_conv``; V3's ``conv_head`` (a 1x1 conv with bias on the pooled map, i.e. a fully connected
layer) -> ``head_fc``; ``classifier`` -> ``classifier``. V4: ``UniversalInvertedResidual`` ``dw_start`` /
``pw_exp`` / ``dw_mid`` / ``pw_proj`` -> ``conv_dw_start`` / ``conv_pw`` / ``conv_dw`` / ``conv_pwl`` of our
``UniversalInvertedBottleneck``; ``EdgeResidual`` ``conv_exp`` + ``bn1`` / ``conv_pwl`` + ``bn2`` -> our
``FusedInvertedBottleneck``; ``MobileAttention`` ``norm`` / ``attn.query.proj`` / ``attn.key`` and
``attn.value`` (``down_conv`` + ``norm``, ``proj``) / ``attn.output.proj`` / ``layer_scale`` -> our
``MobileMultiQueryAttention``'s ``norm`` / ``query`` / ``key_down`` + ``key``, ``value_down`` + ``value`` / ``out``
/ ``layer_scale``; ``conv_head`` + ``norm_head`` -> ``head_fc`` (conv + batch norm on the pooled map).

Names: timm's registered names (``mobilenetv1_100``, ``mobilenetv1_125``, ``mobilenetv2_035`` ...
``mobilenetv2_140``, ``mobilenetv3_large_075``, ``mobilenetv3_small_050``, ``tf_mobilenetv3_large_100``,
``tf_mobilenetv3_small_minimal_100`` ...; the suffix is the width, any three digits are accepted;
``mobilenetv4_conv_small``, ``mobilenetv4_conv_small_050``, ``mobilenetv4_hybrid_medium_075`` ..., no suffix
for width 1), or our names with
``width_mult`` (``*_minimal`` means timm's ``tf_mobilenetv3_*_minimal``). timm has two V3 Large and two V3
Small, ``mobilenetv3_*`` (trained in PyTorch) and ``tf_mobilenetv3_*`` (ported from TensorFlow), with the same
tensor names and shapes but different outputs for the same weights (padding, BatchNorm epsilon): our names
``mobilenet_v3_large`` / ``mobilenet_v3_small`` are refused unless the file says which, i.e. the
``config.json`` that timm's ``save_for_hf`` and the Hugging Face Hub keep beside ``model.safetensors`` /
``pytorch_model.bin`` names the architecture. When it does, a name that contradicts it is refused. Variants
with a depth multiplier or another head
(``mobilenetv1_100h``, ``mobilenetv2_110d``, ``mobilenetv2_120d``, ``mobilenetv3_large_150d``,
``mobilenetv3_rw``) are not MobileNets of the papers' depth and are refused, as are timm's anti-aliased V4s
(``mobilenetv4_conv_aa_*``, ``mobilenetv4_conv_blur_*``).

Options set to reproduce timm exactly:

- V1: ``act_layer="relu6"`` (timm's V1 uses ReLU6), ``channel_rounding="divisible"`` (widths rounded to
  multiples of 8, e.g. 16 channels where the paper's rule gives 11 at alpha 0.35); mean/std 0.5 (timm's
  pretrained config).
- V2: none.
- V3: ``stem_width="fixed"`` below alpha 0.75 (timm's ``fix_stem``), ``head_width="fixed"`` (timm's head
  stays 1280/1024 for every alpha).
- ``tf_`` V3 (ported from TensorFlow): also ``bn_eps=1e-3``, ``padding="same"``; mean/std 0.5.
- V4: ``stem_width="fixed"`` below alpha 1, ``head_width="fixed"``; mean/std 0.5 for the conv models below
  alpha 1 (timm's pretrained configs of ``mobilenetv4_conv_small_035`` and ``_050``).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Optional

import torch
from torch import nn

from ..keynames import timm_order as forward_order
from ._mapping import ConversionError, Queues, torch_layers
from .core import INCEPTION_MEAN, INCEPTION_STD, SourceSpec, width_from_suffix

__all__ = ["resolve", "read", "queue_for", "declared_arch", "UNSUPPORTED", "BOTH_PORTS", "HF_WEIGHT_FILES"]

LIBRARY = "timm"
_NAME = re.compile(
    r"^(?P<tf>tf_)?mobilenetv(?P<gen>[123])(?:_(?P<size>large|small))?(?P<minimal>_minimal)?_(?P<width>\d{3})$"
)
_V4_NAME = re.compile(r"^mobilenetv4_(?P<kind>conv|hybrid)_(?P<size>small|medium|large)(?:_(?P<width>\d{3}))?$")
UNSUPPORTED = {
    "mobilenetv1_100h": "has an extra 1x1 head conv",
    "mobilenetv2_110d": "has a depth multiplier (more blocks) and a fixed stem/head",
    "mobilenetv2_120d": "has a depth multiplier (more blocks) and a fixed stem/head",
    "mobilenetv3_large_150d": "has a depth multiplier (more blocks)",
    "mobilenetv3_rw": "is Ross Wightman's V3 variant with a different head",
    "mobilenetv4_conv_aa_medium": "has anti-aliased (blur-pool) downsampling",
    "mobilenetv4_conv_aa_large": "has anti-aliased (blur-pool) downsampling",
    "mobilenetv4_conv_blur_medium": "has anti-aliased (blur-pool) downsampling",
}
EXAMPLES = (
    "mobilenetv1_100, mobilenetv2_035, mobilenetv3_small_050, tf_mobilenetv3_large_075, mobilenetv4_conv_medium"
)


@dataclass(frozen=True)
class _Family:
    """A timm generator: generation, V3 size, minimalistic, ported from TensorFlow (``tf_``)."""

    gen: str
    size: Optional[str] = None
    minimal: bool = False
    tf: bool = False
    hybrid: bool = False  # V4

    @property
    def ours(self) -> str:
        if self.gen == "4":
            return f"mobilenet_v4_{'hybrid' if self.hybrid else 'conv'}_{self.size}"
        if self.gen != "3":
            return f"mobilenet_v{self.gen}"
        return f"mobilenet_v3_{self.size}" + ("_minimal" if self.minimal else "")

    def timm_name(self, width: float) -> str:
        if self.gen == "4":
            kind = "hybrid" if self.hybrid else "conv"
            return f"mobilenetv4_{kind}_{self.size}" + ("" if width == 1.0 else f"_{round(width * 100):03d}")
        parts = ["tf_" if self.tf else "", f"mobilenetv{self.gen}", f"_{self.size}" if self.size else ""]
        parts.append("_minimal" if self.minimal else "")
        digits = width * 100
        suffix = f"{round(digits):03d}" if abs(digits - round(digits)) < 1e-6 else f"{width:g}"
        return "".join(parts) + "_" + suffix


_OURS = {
    "mobilenet_v1": _Family("1"),
    "mobilenet_v2": _Family("2"),
    "mobilenet_v3_large": _Family("3", "large"),
    "mobilenet_v3_small": _Family("3", "small"),
    # timm has the minimalistic variants only as TensorFlow ports
    "mobilenet_v3_large_minimal": _Family("3", "large", minimal=True, tf=True),
    "mobilenet_v3_small_minimal": _Family("3", "small", minimal=True, tf=True),
    "mobilenet_v4_conv_small": _Family("4", "small"),
    "mobilenet_v4_conv_medium": _Family("4", "medium"),
    "mobilenet_v4_conv_large": _Family("4", "large"),
    "mobilenet_v4_hybrid_medium": _Family("4", "medium", hybrid=True),
    "mobilenet_v4_hybrid_large": _Family("4", "large", hybrid=True),
}
# Our names timm has both as a PyTorch-trained model and as a TensorFlow port (tf_), with the same tensors;
# V1, V2 and V4 exist only as the former, the minimal V3s only as the latter (timm 1.0's registry)
BOTH_PORTS = ("mobilenet_v3_large", "mobilenet_v3_small")
# the weight files timm's save_for_hf and the Hugging Face Hub keep beside a config.json naming the model
HF_WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")


def _parse(arch: str, width_mult: Optional[float]) -> tuple[_Family, float]:
    """Our name + width, or a timm name (+ a width that must agree) -> (family, width)."""
    if arch in _OURS:
        return _OURS[arch], 1.0 if width_mult is None else float(width_mult)
    if arch in UNSUPPORTED:
        raise ValueError(
            f"timm's {arch} {UNSUPPORTED[arch]}; mobilenets models follow the papers' tables. "
            f"Supported timm names: {EXAMPLES} and the like"
        )
    v4 = _V4_NAME.match(arch)
    match = _NAME.match(arch)
    if v4:
        if v4["kind"] == "hybrid" and v4["size"] == "small":
            raise ValueError("timm has no mobilenetv4_hybrid_small; the V4 hybrids are medium and large")
        family = _Family("4", v4["size"], hybrid=v4["kind"] == "hybrid")
        width = width_from_suffix(v4["width"]) if v4["width"] else 1.0
    elif match and (match["gen"] == "3") == (match["size"] is not None) and (match["tf"] or not match["minimal"]):
        family = _Family(match["gen"], match["size"], bool(match["minimal"]), bool(match["tf"]))
        width = width_from_suffix(match["width"])
    else:
        raise ValueError(
            f"not a supported timm MobileNet name: {arch!r}; accepted: timm names such as {EXAMPLES}, "
            f"or ours ({', '.join(_OURS)}) with a width multiplier"
        )
    if width_mult is not None and abs(float(width_mult) - width) > 1e-9:
        raise ValueError(f"timm's {arch} has width {width:g}, but width_mult={width_mult:g} was given")
    return family, width


def declared_arch(path: Path) -> Optional[tuple[str, Path]]:
    """timm's name for the model in ``path`` and the file that says so: the ``architecture`` of the
    ``config.json`` beside a ``model.safetensors`` / ``pytorch_model.bin``; None when there is none."""
    config = path.parent / "config.json"
    if path.name not in HF_WEIGHT_FILES or not config.is_file():
        return None
    try:
        data = json.loads(config.read_text(encoding="utf8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise ConversionError(f"{config}: unreadable config.json beside {path.name} ({exc})") from None
    arch = data.get("architecture") if isinstance(data, dict) else None
    if not isinstance(arch, str):
        return None  # not timm's config (transformers write "architectures")
    return arch.split(".")[0], config  # "name.pretrained_tag" -> "name"


def _agree(arch: str, width_mult: Optional[float], declared: str, where: str) -> tuple[_Family, float]:
    """The declared model, when ``arch`` (+ ``width_mult``) names it or names it ambiguously."""
    try:
        family, width = _parse(declared, None)
    except ValueError as exc:
        raise ConversionError(f"{where} names timm's {declared!r}: {exc}") from None
    if arch in _OURS:
        fits = _OURS[arch].ours == family.ours and (width_mult is None or abs(width_mult - width) < 1e-9)
        given = f"{arch}" + ("" if width_mult is None else f" width_mult={width_mult:g}")
    else:
        fits = _parse(arch, width_mult) == (family, width)
        given = arch
    if not fits:
        raise ConversionError(
            f"{where} says the weights are timm's {declared}, not {given}; pass --arch {declared} (or move the "
            "config.json away if it belongs to other weights)"
        )
    return family, width


def resolve(arch: str, width_mult: Optional[float], declared: Optional[tuple[str, Path]] = None) -> SourceSpec:
    """``declared``: timm's name for the weights and the file that says so (:func:`declared_arch`)."""
    if declared is not None:
        family, width = _agree(arch, width_mult, declared[0], str(declared[1]))
    else:
        family, width = _parse(arch, width_mult)
        if arch in BOTH_PORTS:
            pytorch, tf = family.timm_name(width), _Family(family.gen, family.size, tf=True).timm_name(width)
            raise ValueError(
                f"{arch} is ambiguous for timm: {pytorch} (trained in PyTorch) and {tf} (ported from TensorFlow: "
                "'same' padding, BatchNorm eps 1e-3) have the same tensors but compute different outputs, and "
                f"the weights cannot tell which they are; give timm's name: --arch {pytorch} or --arch {tf} (a "
                "model.safetensors / pytorch_model.bin with timm's config.json beside it says which itself)"
            )
    options: dict[str, Any] = {}
    tf_preprocessing = family.tf
    if family.gen == "1":
        options.update(act_layer="relu6", channel_rounding="divisible")
        tf_preprocessing = True  # timm's mobilenetv1_100 config: mean = std = 0.5
    elif family.gen == "3":
        if width < 0.75:
            options["stem_width"] = "fixed"
        options["head_width"] = "fixed"
        if family.tf:
            options.update(bn_eps=1e-3, padding="same")
    elif family.gen == "4":
        if width < 1.0:
            options["stem_width"] = "fixed"
            # timm's mobilenetv4_conv_small_035 / _050 configs: mean = std = 0.5 (the _075 hybrids: ImageNet's)
            tf_preprocessing = not family.hybrid
        options["head_width"] = "fixed"
    norm = dict(mean=INCEPTION_MEAN, std=INCEPTION_STD) if tf_preprocessing else {}
    return SourceSpec(LIBRARY, family.timm_name(width), family.ours, width, options, **norm)


def read(state_dict: Mapping[str, torch.Tensor], label: str) -> Queues:
    return {"all": torch_layers(state_dict, label, forward_order)}


def queue_for(module: nn.Module, queues: Queues) -> str:
    return "all"
