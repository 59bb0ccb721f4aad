"""Keras applications ``MobileNet``, ``MobileNetV2``, ``MobileNetV3Small``, ``MobileNetV3Large`` weight files.

Files read (with h5py, no Keras or TensorFlow needed):

- Keras 3 ``model.save_weights("x.weights.h5")``: layers are stored under class-based names numbered per
  class in model order (``conv2d_3``, ``depthwise_conv2d_3``, ``batch_normalization_7``, ``dense``).
- Keras 3 ``model.save("x.keras")``: a zip holding the same ``model.weights.h5`` plus ``config.json``.
- Legacy HDF5 (``model.save("x.h5")``, and the ImageNet weight files Keras downloads, e.g.
  ``mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_224.h5``): layers listed in order in the
  ``layer_names`` attribute.

Mapping: Keras layers are sorted into queues by class (Conv2D, DepthwiseConv2D, BatchNormalization, Dense),
each in model order, and our modules take from them in forward order (``_mapping``). Layouts: Conv2D
kernels (kh, kw, in, out) -> (out, in, kh, kw); DepthwiseConv2D (kh, kw, in, 1) -> (in, 1, kh, kw); Dense
(in, out) -> (out, in); BatchNormalization gamma/beta/moving_mean/moving_variance -> weight/bias/
running_mean/running_var. The 1x1 Conv2D classifiers of MobileNet (``conv_preds``) and V3 (``Conv_2`` head,
``Logits``) act on the pooled 1x1 map and become our ``head_fc`` / ``classifier`` Linear layers.

Names: Keras' (``MobileNet``, ``MobileNetV2``, ``MobileNetV3Small``, ``MobileNetV3Large``) or ours
(``mobilenet_v1`` ... ; ``mobilenet_v3_small_minimal`` / ``mobilenet_v3_large_minimal`` for
``minimalistic=True``); ``width_mult`` is Keras' ``alpha``. When it is not given, the alpha in the model name
of a ``.keras`` or full-model ``.h5`` file of MobileNet / MobileNetV2 (``mobilenetv2_0.35_224``) is used,
else 1.0.

Options set to reproduce Keras exactly (all: ``padding="same"``, ``bn_eps=1e-3``, Keras' BatchNormalization
momentum turned into PyTorch's ``1 - momentum``; mean = std = 0.5, Keras' ``preprocess_input`` maps
[0, 255] to [-1, 1]; V3's built-in ``Rescaling`` layer does the same and has no weights):

- MobileNet: ``act_layer="relu6"``, ``bn_momentum=0.01``.
- MobileNetV2: ``channel_rounding="truncate_divisible"`` (``_make_divisible(int(c * alpha))``),
  ``bn_momentum=0.001``.
- MobileNetV3: ``stem_width="fixed"`` (16 channels for every alpha), ``last_conv_width="from_blocks"``
  (``_depth(6 * last block)``), ``bn_momentum=0.001``.

Keras' MobileNet (always) and MobileNetV2 (when built without a fixed input size) pad stride-2 depthwise
convs by (0, 1): the same as TensorFlow "same" for even input sizes, which is what ``padding="same"`` does;
at odd sizes those Keras models themselves differ from TensorFlow. Keras' classifier applies softmax by
default; converted models return logits. Files saved with ``include_top=False`` convert for MobileNet and
MobileNetV2 (``num_classes=0``); V3 drops its pooled head layer with the top and is refused.
"""

from __future__ import annotations

import io
import json
import re
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import torch
from torch import nn

from ._mapping import ConversionError, Queues, SourceLayer
from .core import INCEPTION_MEAN, INCEPTION_STD, SourceSpec

__all__ = ["resolve", "read", "queue_for", "ARCHS"]

LIBRARY = "keras"
_COMMON = dict(padding="same", bn_eps=1e-3)


@dataclass(frozen=True)
class _Arch:
    keras_name: str
    ours: str
    options: dict[str, Any]
    minimalistic: bool = False


ARCHS: dict[str, _Arch] = {
    a.ours: a
    for a in (
        _Arch("MobileNet", "mobilenet_v1", dict(_COMMON, act_layer="relu6", bn_momentum=0.01)),
        _Arch("MobileNetV2", "mobilenet_v2", dict(_COMMON, channel_rounding="truncate_divisible", bn_momentum=1e-3)),
        *(
            _Arch(
                f"MobileNetV3{size.title()}",
                f"mobilenet_v3_{size}{'_minimal' if minimal else ''}",
                dict(_COMMON, stem_width="fixed", last_conv_width="from_blocks", bn_momentum=1e-3),
                minimal,
            )
            for size in ("small", "large")
            for minimal in (False, True)
        ),
    )
}
_BY_KERAS_NAME = {a.keras_name.lower(): a for a in ARCHS.values() if not a.minimalistic}


def resolve(arch: str, width_mult: Optional[float]) -> SourceSpec:
    found = ARCHS.get(arch) or _BY_KERAS_NAME.get(arch.lower())
    if found is None:
        raise ValueError(
            f"not a Keras MobileNet: {arch!r}; accepted: MobileNet, MobileNetV2, MobileNetV3Small, "
            f"MobileNetV3Large, or ours ({', '.join(ARCHS)}; *_minimal for minimalistic=True)"
        )
    source_arch = found.keras_name + ("(minimalistic=True)" if found.minimalistic else "")
    width = 1.0 if width_mult is None else float(width_mult)
    return SourceSpec(LIBRARY, source_arch, found.ours, width, found.options, INCEPTION_MEAN, INCEPTION_STD)


# ---- reading -----------------------------------------------------------------------------------------------

# Keras class (snake case, as Keras 3 names stored layers) -> queue
_QUEUES = {"conv2d": "conv", "depthwise_conv2d": "dwconv", "batch_normalization": "bn", "dense": "dense"}
_CLASS_QUEUES = {"Conv2D": "conv", "DepthwiseConv2D": "dwconv", "BatchNormalization": "bn", "Dense": "dense"}
_BN_NAMES = ("gamma", "beta", "moving_mean", "moving_variance")
_NUMBERED = re.compile(r"^(?P<cls>.+?)(?:_(?P<idx>\d+))?$")


def _to_torch(queue: str, name: str, arrays: dict[str, Any], label: str) -> SourceLayer:
    """Keras variables (by role) -> a SourceLayer in PyTorch layout."""
    tensors: dict[str, torch.Tensor] = {}

    def t(key: str) -> torch.Tensor:
        return torch.from_numpy(arrays[key].astype("float32"))

    if queue == "bn":
        if set(arrays) != set(_BN_NAMES):
            raise ConversionError(
                f"{label}: batch normalization {name!r} holds {sorted(arrays)}; expected {', '.join(_BN_NAMES)}"
            )
        for src, dst in zip(_BN_NAMES, ("weight", "bias", "running_mean", "running_var")):
            tensors[dst] = t(src)
        return SourceLayer(name, "bn", tensors)
    kernel = arrays.get("kernel")
    if kernel is None:
        raise ConversionError(f"{label}: layer {name!r} holds {sorted(arrays)}, no kernel")
    if queue == "dense":
        if kernel.ndim != 2:
            raise ConversionError(f"{label}: Dense {name!r} kernel has shape {kernel.shape}")
        tensors["weight"] = t("kernel").T.contiguous()
        kind = "linear"
    else:
        if kernel.ndim != 4:
            raise ConversionError(f"{label}: convolution {name!r} kernel has shape {kernel.shape}")
        weight = t("kernel")
        if queue == "dwconv":
            kh, kw, chans, mult = weight.shape
            # Keras orders depthwise outputs channel-major (c * mult + m), as PyTorch groups do
            tensors["weight"] = weight.permute(2, 3, 0, 1).reshape(chans * mult, 1, kh, kw).contiguous()
        else:
            tensors["weight"] = weight.permute(3, 2, 0, 1).contiguous()
        kind = "conv"
    if "bias" in arrays:
        tensors["bias"] = t("bias")
    return SourceLayer(name, kind, tensors)


def _keras3_layers(root: Any, label: str) -> Queues:
    """Keras 3 ``.weights.h5``: ``layers/<class>[_<n>]/vars/<i>``, numbered per class in model order."""
    import h5py

    found: list[tuple[str, int, str, Any]] = []

    def walk(group: Any, prefix: str) -> None:
        for key in group:
            item = group[key]
            if not isinstance(item, h5py.Group):
                continue
            variables = item.get("vars")
            if isinstance(variables, h5py.Group) and len(variables):
                match = _NUMBERED.match(key)
                assert match is not None
                found.append((match["cls"], int(match["idx"] or 0), prefix + key, variables))
            if isinstance(item.get("layers"), h5py.Group):
                walk(item["layers"], prefix + key + "/")

    walk(root["layers"], "")
    queues: Queues = {}
    for cls, _idx, name, variables in sorted(found, key=lambda f: (f[0], f[1])):
        queue = _QUEUES.get(cls)
        if queue is None:
            raise ConversionError(f"{label}: layer {name!r} is a {cls}, which no MobileNet has")
        values = [variables[str(i)][()] for i in range(len(variables))]
        if queue == "bn":
            roles = dict(zip(_BN_NAMES, values)) if len(values) == 4 else {f"var{i}": v for i, v in enumerate(values)}
        else:
            roles = dict(zip(("kernel", "bias"), values))
        queues.setdefault(queue, []).append(_to_torch(queue, name, roles, label))
    return queues


def _decode(values: Any) -> list[str]:
    return [v.decode("utf8") if isinstance(v, bytes) else str(v) for v in values]


def _layer_classes(config: Optional[dict]) -> dict[str, str]:
    """Layer name -> Keras class, through nested models (a MobileNet inside a Sequential)."""
    classes: dict[str, str] = {}

    def walk(model_config: dict) -> None:
        for layer in model_config.get("config", {}).get("layers", []):
            name = layer.get("config", {}).get("name", layer.get("name"))
            classes[name] = layer.get("class_name")
            if isinstance(layer.get("config", {}).get("layers"), list):
                walk(layer)

    if config is not None:
        walk(config)
    return classes


def _legacy_layers(group: Any, config: Optional[dict], label: str) -> Queues:
    """Legacy HDF5: ``layer_names`` in model order; each layer group lists its ``weight_names``.

    A nested model (a MobileNet inside a Sequential) is one group whose weight names carry the inner layer
    ("Conv1/kernel", "bn_Conv1/gamma", ...), trainable weights first: grouping by that prefix, in order of
    first appearance, gives the inner layers in model order.
    """
    classes = _layer_classes(config)
    queues: Queues = {}
    for outer in _decode(group.attrs["layer_names"]):
        inner: dict[str, dict[str, Any]] = {}
        for weight in _decode(group[outer].attrs.get("weight_names", [])):
            # "conv1/kernel:0" (Keras 2) or "conv1/kernel" (Keras 3) -> layer "conv1", role "kernel"
            parent, _, leaf = weight.rpartition("/")
            inner.setdefault(parent or outer, {})[leaf.split(":")[0]] = group[outer][weight][()]
        for name, arrays in inner.items():
            name = name.rpartition("/")[2] if name not in classes else name
            if "depthwise_kernel" in arrays:
                arrays["kernel"] = arrays.pop("depthwise_kernel")
                queue = "dwconv"
            elif name in classes:
                queue = _CLASS_QUEUES.get(classes[name], "")
                if not queue:
                    raise ConversionError(f"{label}: layer {name!r} is a {classes[name]}, which no MobileNet has")
            elif "gamma" in arrays or "moving_mean" in arrays:
                queue = "bn"
            elif "kernel" in arrays:
                ndim = arrays["kernel"].ndim
                # without a model config, Keras 3 names depthwise kernels "kernel": Keras applications call
                # their depthwise layers *_dw_* / *depthwise*
                depthwise = re.search(r"(^|_)dw(_|$)|depthwise", name)
                queue = "dense" if ndim == 2 else "dwconv" if depthwise else "conv"
            else:
                raise ConversionError(
                    f"{label}: layer {name!r} holds {sorted(arrays)}, which no MobileNet layer has"
                )
            queues.setdefault(queue, []).append(_to_torch(queue, name, arrays, label))
    return queues


def _check_model_name(config: Optional[dict], spec: SourceSpec, label: str, width_given: bool) -> Optional[float]:
    """Keras applications name their models after the family (and alpha): catch a wrong --arch early.

    Returns the alpha the name carries (MobileNet, MobileNetV2), which stands in for a width not given.
    """
    if not config:
        return None
    name = str(config.get("config", {}).get("name", ""))
    patterns = {
        "mobilenet_v1": r"^mobilenet_(?P<alpha>\d+\.\d+)_\d+$",
        "mobilenet_v2": r"^mobilenetv2_(?P<alpha>\d+\.\d+)_\d+$",
        "mobilenet_v3_small": r"^MobileNetV3Small$",
        "mobilenet_v3_large": r"^MobileNetV3Large$",
    }
    for family, pattern in patterns.items():
        match = re.match(pattern, name)
        if not match:
            continue
        if not spec.arch.startswith(family):
            raise ConversionError(f"{label}: holds Keras model {name!r}, not {spec.source_arch}")
        alpha = match.groupdict().get("alpha")
        if alpha is None:
            return None
        # Keras formats alpha with two decimals in the model name
        if width_given and f"{spec.width_mult:0.2f}" != alpha:
            raise ConversionError(
                f"{label}: holds Keras model {name!r} (alpha {alpha}), not width_mult={spec.width_mult:g}"
            )
        return float(alpha)
    return None


def read(path: Path, label: str, spec: SourceSpec, width_given: bool = True) -> tuple[Queues, Optional[float]]:
    """The file's layers, and the alpha its model name carries (None when unknown).

    With ``width_given=False`` that alpha is not checked against ``spec`` but returned, for the caller to use.
    """
    try:
        import h5py
    except ImportError:
        raise ImportError("reading Keras files needs h5py: pip install 'mobilenets[convert]'") from None
    if not path.exists():
        raise ConversionError(f"{label}: no such file")
    if path.is_dir():
        raise ConversionError(f"{label}: is a directory, not a Keras weights file")
    config: Optional[dict] = None
    source: Any = str(path)
    if zipfile.is_zipfile(path):
        try:
            with zipfile.ZipFile(path) as archive:
                names = set(archive.namelist())
                if "model.weights.h5" not in names:
                    raise ConversionError(f"{label}: a zip archive without model.weights.h5, not a .keras file")
                if "config.json" in names:
                    config = json.loads(archive.read("config.json"))
                source = io.BytesIO(archive.read("model.weights.h5"))
        except (zipfile.BadZipFile, OSError, ValueError) as exc:
            if isinstance(exc, ConversionError):
                raise
            raise ConversionError(f"{label}: damaged .keras archive ({exc})") from None
    try:
        handle = h5py.File(source, "r")
    except OSError as exc:
        reason = str(exc).splitlines()[0][:160] if str(exc) else type(exc).__name__
        raise ConversionError(f"{label}: not a readable HDF5/Keras file ({reason})") from None
    try:
        with handle as f:
            if "layers" in f and isinstance(f["layers"], h5py.Group):
                alpha = _check_model_name(config, spec, label, width_given)
                queues = _keras3_layers(f, label)
            else:
                group = f["model_weights"] if "model_weights" in f else f
                if "layer_names" not in group.attrs:
                    raise ConversionError(
                        f"{label}: an HDF5 file without Keras weights (no 'layers' group, no 'layer_names')"
                    )
                raw = f.attrs.get("model_config")
                if raw is not None:
                    config = json.loads(raw.decode("utf8") if isinstance(raw, bytes) else raw)
                alpha = _check_model_name(config, spec, label, width_given)
                queues = _legacy_layers(group, config, label)
    except (OSError, KeyError, RuntimeError) as exc:
        # h5py raises these for truncated or corrupt datasets
        raise ConversionError(f"{label}: damaged HDF5 file ({str(exc).splitlines()[0][:160]})") from None
    if not queues:
        raise ConversionError(f"{label}: holds no layer weights")
    return queues, alpha


def queue_for(module: nn.Module, queues: Queues) -> str:
    if isinstance(module, nn.BatchNorm2d):
        return "bn"
    if isinstance(module, nn.Conv2d):
        depthwise = module.groups > 1 and module.groups == module.in_channels
        return "dwconv" if depthwise else "conv"
    # MobileNetV2 ends in a Dense; MobileNet and V3 use 1x1 Conv2D layers on the pooled map
    return "dense" if queues.get("dense") else "conv"
