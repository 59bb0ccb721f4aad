"""The network shell shared by every generation: stem, blocks, final 1x1 conv, pooled head, classifier."""

from __future__ import annotations

import dataclasses
import difflib
from dataclasses import dataclass, field
from typing import Any, Callable, Optional, Union

import torch
from torch import nn

from ..layers import ConvNormAct, make_divisible, resolve_act_layer, resolve_norm_layer

__all__ = [
    "ModelOptions", "FeatureInfo", "MobileNet", "PooledConvNormAct", "SmallInputStrides", "IMAGENET_MEAN",
    "IMAGENET_STD", "LayerSpec",
]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

LayerSpec = Union[str, Callable[..., nn.Module], None]


_WIDTH_POLICIES: dict[str, tuple[str, ...]] = {
    "stem_width": ("scaled", "fixed"),
    "head_width": ("default", "scaled", "fixed"),
    "expand_width": ("ratio", "scaled"),
    "last_conv_width": ("scaled", "from_blocks"),
    "channel_rounding": ("default", "divisible", "truncate_divisible"),
}


def _close(name: str, accepted: list[str]) -> str:
    match = difflib.get_close_matches(name, accepted, n=1)
    return f" (did you mean {match[0]!r}?)" if match else ""


@dataclass(frozen=True)
class ModelOptions:
    """Options accepted by every model; each generation sets its own defaults (see the registry).

    ``width_mult`` is the paper's alpha; the input resolution (rho) is free at run time (>= 32 px,
    >= 16 px with ``small_input``) because the head pools globally.
    """

    num_classes: int = 1000
    width_mult: float = 1.0
    in_chans: int = 3
    dropout: float = 0.2
    small_input: bool = False
    act_layer: LayerSpec = None  # None: the paper's activation for that generation
    norm_layer: LayerSpec = "batchnorm"
    padding: str = "symmetric"  # "same": TensorFlow/Keras asymmetric padding on stride-2 convs
    bn_eps: float = 1e-5
    bn_momentum: float = 0.1
    drop_path_rate: float = 0.0
    # How other libraries scale widths, so that their weights load exactly (docs/convert.md); the
    # defaults are this library's policy, documented in each generation's module.
    stem_width: str = "scaled"  # "fixed": the stem keeps the table's width for every alpha
    head_width: str = "default"  # V2-V4: "scaled" always scales the head with alpha, "fixed" never does
    expand_width: str = "ratio"  # V3: "scaled": expanded width make_divisible(exp * alpha), not from the ratio
    last_conv_width: str = "scaled"  # V3: "from_blocks": 6 x the last block's width
    # V1/V2: "divisible" rounds widths to multiples of 8 (timm V1), "truncate_divisible" does so after int()
    channel_rounding: str = "default"

    def __post_init__(self) -> None:
        def check(ok: bool, msg: str) -> None:
            if not ok:
                raise ValueError(msg)

        check(
            isinstance(self.num_classes, int) and not isinstance(self.num_classes, bool) and self.num_classes >= 0,
            f"num_classes must be an integer >= 0 (0 removes the classifier), got {self.num_classes!r}",
        )
        check(
            isinstance(self.width_mult, (int, float)) and not isinstance(self.width_mult, bool) and 0 < self.width_mult <= 4,
            f"width_mult must be a number in (0, 4], got {self.width_mult!r}",
        )
        check(
            isinstance(self.in_chans, int) and not isinstance(self.in_chans, bool) and self.in_chans >= 1,
            f"in_chans must be an integer >= 1, got {self.in_chans!r}",
        )
        check(
            isinstance(self.dropout, (int, float)) and 0.0 <= self.dropout < 1.0,
            f"dropout must be in [0, 1), got {self.dropout!r}",
        )
        check(isinstance(self.small_input, bool), f"small_input must be True or False, got {self.small_input!r}")
        check(
            self.padding in ("symmetric", "same"),
            f"padding must be 'symmetric' (PyTorch) or 'same' (TensorFlow), got {self.padding!r}",
        )
        check(
            isinstance(self.bn_eps, (int, float)) and self.bn_eps > 0, f"bn_eps must be > 0, got {self.bn_eps!r}"
        )
        check(
            isinstance(self.bn_momentum, (int, float)) and 0 < self.bn_momentum <= 1,
            f"bn_momentum must be in (0, 1], got {self.bn_momentum!r}",
        )
        check(
            isinstance(self.drop_path_rate, (int, float)) and 0.0 <= self.drop_path_rate < 1.0,
            f"drop_path_rate must be in [0, 1), got {self.drop_path_rate!r}",
        )
        for name, accepted in _WIDTH_POLICIES.items():
            value = getattr(self, name)
            check(value in accepted, f"{name} must be one of {', '.join(map(repr, accepted))}, got {value!r}")
        if self.act_layer is not None:
            resolve_act_layer(self.act_layer)
        resolve_norm_layer(self.norm_layer)

    @classmethod
    def names(cls) -> list[str]:
        return [f.name for f in dataclasses.fields(cls)]

    @classmethod
    def build(cls, defaults: dict[str, Any], overrides: dict[str, Any], model_name: str) -> "ModelOptions":
        accepted = cls.names()
        for key in overrides:
            if key not in accepted:
                raise TypeError(
                    f"unknown option {key!r} for model {model_name!r}{_close(key, accepted)}; "
                    f"accepted options: {', '.join(accepted)}"
                )
        return cls(**{**defaults, **overrides})

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready options; custom (callable) layers cannot be serialised and raise here."""
        out = dataclasses.asdict(self)
        for key in ("act_layer", "norm_layer"):
            if out[key] is not None and not isinstance(out[key], str):
                raise ValueError(
                    f"option {key}={out[key]!r} is a callable and cannot be stored in a checkpoint; "
                    "use one of the named layers instead"
                )
        return out

    def require_defaults(self, names: tuple[str, ...], arch: str, used_by: str) -> None:
        """Refuse width-policy options a generation has no use for, rather than ignore them."""
        defaults = {f.name: f.default for f in dataclasses.fields(self)}
        for name in names:
            if getattr(self, name) != defaults[name]:
                raise ValueError(
                    f"option {name}={getattr(self, name)!r} does not apply to {arch}; it is used by {used_by} only"
                )

    def norm(self) -> Callable[..., nn.Module]:
        return resolve_norm_layer(self.norm_layer)

    def act(self, paper_default: LayerSpec) -> Callable[..., nn.Module]:
        return resolve_act_layer(self.act_layer if self.act_layer is not None else paper_default)

    def stem_channels(self, table: int) -> int:
        """The stem's width (V2-V4): ``make_divisible(table * alpha)``, or the table's with ``stem_width="fixed"``."""
        return table if self.stem_width == "fixed" else make_divisible(table * self.width_mult)

    def head_channels(self, table: int) -> int:
        """The width of the last, wide layer (V2's final conv, the pooled head of V3/V4) under ``head_width``:
        kept for alpha <= 1 and scaled above by default, always scaled (``"scaled"``) or never (``"fixed"``)."""
        scale = {"default": self.width_mult > 1.0, "scaled": True, "fixed": False}[self.head_width]
        return make_divisible(table * self.width_mult) if scale else table

    def conv_kwargs(self) -> dict[str, Any]:
        return dict(norm_layer=self.norm(), padding=self.padding, bn_eps=self.bn_eps, bn_momentum=self.bn_momentum)


@dataclass(frozen=True)
class FeatureInfo:
    """Where a resolution stage ends: feature extraction and detection heads use this."""

    num_chs: int
    reduction: int
    module: str


@dataclass
class ModelInfo:
    """What a model needs to be rebuilt and fed: architecture name, options, preprocessing."""

    arch: str
    options: ModelOptions
    input_size: tuple[int, int, int] = (3, 224, 224)
    mean: tuple[float, ...] = IMAGENET_MEAN
    std: tuple[float, ...] = IMAGENET_STD
    min_input_size: int = 32
    extra: dict[str, Any] = field(default_factory=dict)


class MobileNet(nn.Module):
    """stem -> blocks -> final_conv = ``forward_features``; pool -> [head_fc + act] -> dropout -> classifier
    = ``forward_head``. One class for V1 to V4; the generation files fill it from their tables."""

    def __init__(
        self,
        stem: nn.Module,
        blocks: list[nn.Module],
        final_conv: Optional[nn.Module],
        num_features: int,
        feature_info: list[FeatureInfo],
        info: ModelInfo,
        head_hidden: Optional[int] = None,
        head_act: Optional[Callable[..., nn.Module]] = None,
        head_norm: bool = False,
    ) -> None:
        super().__init__()
        opts = info.options
        self.info = info
        self.feature_info = feature_info
        self.stem = stem
        self.blocks = nn.Sequential(*blocks)
        self.final_conv = final_conv if final_conv is not None else nn.Identity()
        self.num_features = num_features
        self.global_pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(1))
        self.head_hidden_size = head_hidden if head_hidden is not None else num_features
        self.head_fc: nn.Module = nn.Identity()
        self.head_act: nn.Module = nn.Identity()
        if head_hidden is not None and head_norm:
            # V4: a 1x1 conv without bias, batch norm and activation on the pooled map
            self.head_fc = PooledConvNormAct(num_features, head_hidden, act_layer=head_act, **opts.conv_kwargs())
        elif head_hidden is not None:
            # V3 (paper Table 1/2, "conv2d 1x1, NBN"): a conv after pooling is a fully connected layer with bias
            self.head_fc = nn.Linear(num_features, head_hidden)
            self.head_act = head_act() if head_act is not None else nn.Identity()
        self.dropout = nn.Dropout(opts.dropout)
        self.classifier: nn.Module = (
            nn.Linear(self.head_hidden_size, opts.num_classes) if opts.num_classes > 0 else nn.Identity()
        )
        self._init_weights()

    # -- metadata --------------------------------------------------------------------------
    @property
    def arch(self) -> str:
        return self.info.arch

    @property
    def options(self) -> ModelOptions:
        return self.info.options

    @property
    def num_classes(self) -> int:
        return self.info.options.num_classes

    @property
    def default_cfg(self) -> dict[str, Any]:
        """timm-style description: input size, mean, std, classes."""
        return {
            "arch": self.info.arch,
            "input_size": self.info.input_size,
            "min_input_size": self.info.min_input_size,
            "mean": self.info.mean,
            "std": self.info.std,
            "num_classes": self.num_classes,
        }

    def _init_weights(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, (nn.BatchNorm2d, nn.GroupNorm)):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0, 0.01)
                nn.init.zeros_(m.bias)

    # -- forward ---------------------------------------------------------------------------
    def _check_input(self, x: torch.Tensor) -> None:
        if torch.jit.is_scripting() or torch.compiler.is_compiling() or torch.onnx.is_in_onnx_export():
            return
        in_chans = self.info.options.in_chans
        if x.ndim != 4 or x.shape[1] != in_chans:
            raise ValueError(f"{self.arch} expects input of shape (N, {in_chans}, H, W), got {tuple(x.shape)}")
        if min(x.shape[-2:]) < self.info.min_input_size:
            hint = "" if self.info.options.small_input else " (use small_input=True for 28-64 px images)"
            raise ValueError(
                f"{self.arch} needs H and W >= {self.info.min_input_size}, got {tuple(x.shape[-2:])}{hint}"
            )

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        self._check_input(x)
        return self.final_conv(self.blocks(self.stem(x)))

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = self.head_act(self.head_fc(self.global_pool(x)))
        x = self.dropout(x)
        return x if pre_logits else self.classifier(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    def get_classifier(self) -> nn.Module:
        return self.classifier

    def reset_classifier(self, num_classes: int) -> None:
        """Replace the classifier (e.g. for fine-tuning); 0 removes it and ``forward`` returns pooled features."""
        self.info.options = dataclasses.replace(self.info.options, num_classes=num_classes)
        self.classifier = (
            nn.Linear(self.head_hidden_size, num_classes) if num_classes > 0 else nn.Identity()
        )
        if num_classes > 0:
            nn.init.normal_(self.classifier.weight, 0, 0.01)
            nn.init.zeros_(self.classifier.bias)

    def forward_intermediates(self, x: torch.Tensor, indices: Optional[list[int]] = None) -> list[torch.Tensor]:
        """Feature maps at the end of each resolution stage (``feature_info``), for detection/segmentation."""
        wanted = range(len(self.feature_info)) if indices is None else indices
        for i in wanted:
            if not -len(self.feature_info) <= i < len(self.feature_info):
                raise IndexError(f"feature index {i} out of range; {self.arch} has {len(self.feature_info)} stages")
        targets = {self.feature_info[i].module for i in wanted}
        self._check_input(x)
        found: dict[str, torch.Tensor] = {}
        x = self.stem(x)
        if "stem" in targets:
            found["stem"] = x
        for idx, block in enumerate(self.blocks):
            x = block(x)
            name = f"blocks.{idx}"
            if name in targets:
                found[name] = x
        x = self.final_conv(x)
        if "final_conv" in targets:
            found["final_conv"] = x
        return [found[self.feature_info[i].module] for i in wanted]


class PooledConvNormAct(ConvNormAct):
    """A 1x1 ``ConvNormAct`` on pooled features of shape (N, C): the V4 head's conv + batch norm + activation
    (batch norm over the batch, as on a 1x1 map). Being a ``ConvNormAct``, its batch norm folds like the others."""

    def __init__(self, in_chs: int, out_chs: int, **kwargs: Any) -> None:
        super().__init__(in_chs, out_chs, 1, **kwargs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x[:, :, None, None]).flatten(1)


class SmallInputStrides:
    """The ``small_input`` stride policy, shared by every generation: for 28-64 px images the stem and the first
    strided block run at stride 1, so the network downsamples 8x instead of 32x and maps do not vanish."""

    def __init__(self, small_input: bool) -> None:
        self.stem = 1 if small_input else 2
        # total stride 8 instead of 32: 16 px still ends in 2x2 maps (28 px, Fashion-MNIST, in 4x4)
        self.min_input_size = 16 if small_input else 32
        self._pending = small_input

    def block(self, stride: int) -> int:
        """The stride to use for a block the table gives ``stride``; call once per block, in order."""
        if self._pending and stride > 1:
            self._pending = False
            return 1
        return stride


def stage_feature_info(stem_chs: int, stem_stride: int, block_specs: list[tuple[int, int]], final: Optional[int]) -> list[FeatureInfo]:
    """Feature info from (out_chs, stride) per block: the last block before each stride change ends a stage."""
    infos: list[FeatureInfo] = []
    reduction = stem_stride
    last = FeatureInfo(stem_chs, reduction, "stem")
    for idx, (out_chs, stride) in enumerate(block_specs):
        if stride > 1:
            infos.append(last)
            reduction *= stride
        last = FeatureInfo(out_chs, reduction, f"blocks.{idx}")
    if final is not None:
        last = FeatureInfo(final, reduction, "final_conv")
    infos.append(last)
    return infos
