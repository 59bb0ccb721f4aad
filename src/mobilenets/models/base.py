"""The network shell shared by every generation: stem, blocks, final 1x1 conv, pooled head, classifier."""

from __future__ import annotations

import dataclasses
import difflib
from dataclasses import dataclass, field
from typing import Any, Callable, Optional, Sequence, Union

import torch
from torch import nn

from ..layers import ConvNormAct, make_divisible, resolve_act_layer, resolve_norm_layer

__all__ = [
    "ModelOptions", "FeatureInfo", "FeatureInfoList", "MobileNet", "MobileNetFeatures", "PooledConvNormAct",
    "BlockArgs", "build_network", "IMAGENET_MEAN", "IMAGENET_STD", "LayerSpec", "OUTPUT_STRIDES",
    "FEATURE_LOCATIONS", "check_option_names", "TaskOptions", "DescribedTask",
]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
CROP_PCT = 0.875  # 224 / 256, the evaluation crop of the ImageNet papers

LayerSpec = Union[str, Callable[..., nn.Module], None]


_WIDTH_POLICIES: dict[str, tuple[str, ...]] = {
    "stem_width": ("scaled", "fixed"),
    "head_width": ("default", "scaled", "fixed"),
    "expand_width": ("ratio", "scaled"),
    "last_conv_width": ("scaled", "from_blocks"),
    "channel_rounding": ("default", "divisible", "truncate_divisible"),
    "strided_block_dilation": ("previous", "new"),
    "reduced_tail_expansion": ("halved", "kept"),
}
OUTPUT_STRIDES = (8, 16, 32)


def _close(name: str, accepted: list[str]) -> str:
    match = difflib.get_close_matches(name, accepted, n=1)
    return f" (did you mean {match[0]!r}?)" if match else ""


def check_option_names(overrides: dict[str, Any], accepted: list[str], model_name: str) -> None:
    """Refuse an option a model does not take, naming the closest accepted one and all of them."""
    for key in overrides:
        if key not in accepted:
            raise TypeError(
                f"unknown option {key!r} for model {model_name!r}{_close(key, accepted)}; "
                f"accepted options: {', '.join(accepted)}"
            )


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
    # Dense prediction (issue #20). output_stride 8 or 16: strides past it become 1 and the dilation multiplies
    # (DeepLab's rule); no weight changes, so any checkpoint loads at any output stride.
    output_stride: int = 32
    # V2/V3: the last stage, the final conv and the head at half width (V3 paper Table 6's dagger, "RF2")
    reduced_tail: bool = False
    # where the dilation starts: "previous" (DeepLab, timm): the block whose stride became 1 keeps the dilation
    # it had and the blocks after it get the multiplied one; "new" (torchvision): that block gets it already
    strided_block_dilation: str = "previous"
    # V3 with reduced_tail: the last stage's first block expands to half ("halved", the paper's RF2, TensorFlow
    # DeepLab) or keeps its expansion ("kept", torchvision's reduced_tail=True)
    reduced_tail_expansion: str = "halved"

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
            self.output_stride in OUTPUT_STRIDES and not isinstance(self.output_stride, bool),
            f"output_stride must be one of {', '.join(map(str, OUTPUT_STRIDES))}, got {self.output_stride!r}",
        )
        check(isinstance(self.reduced_tail, bool), f"reduced_tail must be True or False, got {self.reduced_tail!r}")
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
        check_option_names(overrides, cls.names(), model_name)
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


class TaskOptions:
    """What the options of a model built on a backbone (segmentation, detection) share, as a base of their frozen
    dataclass: a ``backbone`` field holding the backbone's :class:`ModelOptions` beside the task's own fields,
    one flat list of names for the user, and the flat dict a checkpoint stores.

    ``FIXED`` are fields the registry sets and a user does not pass; ``OWNED`` the :class:`ModelOptions` names the
    task takes over (its classes, the dropout of its head), so that they are not the backbone's."""

    FIXED: tuple[str, ...] = ("backbone",)
    OWNED: tuple[str, ...] = ("num_classes", "dropout")
    backbone: ModelOptions

    @classmethod
    def backbone_names(cls) -> list[str]:
        return [name for name in ModelOptions.names() if name not in cls.OWNED]

    @classmethod
    def names(cls) -> list[str]:
        """Every option a user may pass (the task's, then the backbone's)."""
        own = [f.name for f in dataclasses.fields(cls) if f.name not in cls.FIXED]  # type: ignore[arg-type]
        return own + cls.backbone_names()

    @classmethod
    def build(cls, defaults: dict[str, Any], overrides: dict[str, Any], model_name: str) -> Any:
        """``defaults`` (the registry's, the fixed fields among them) updated by the user's ``overrides``; an
        unknown name raises listing the accepted ones."""
        check_option_names(overrides, cls.names(), model_name)
        merged = {**defaults, **overrides}
        backbone_names = set(cls.backbone_names())
        backbone = ModelOptions(num_classes=0, **{k: v for k, v in merged.items() if k in backbone_names})
        return cls(backbone=backbone, **{k: v for k, v in merged.items() if k not in backbone_names})

    def to_dict(self) -> dict[str, Any]:
        """The flat options :meth:`build` takes (what a checkpoint stores: tuples as lists)."""
        own = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)  # type: ignore[arg-type]
               if f.name not in self.FIXED}
        own = {k: list(v) if isinstance(v, tuple) else v for k, v in own.items()}
        backbone = self.backbone.to_dict()
        return {**own, **{k: backbone[k] for k in self.backbone_names()}}

    # what code reading ModelOptions of any model asks for
    @property
    def in_chans(self) -> int:
        return self.backbone.in_chans

    @property
    def width_mult(self) -> float:
        return self.backbone.width_mult

    @property
    def small_input(self) -> bool:
        return self.backbone.small_input


FEATURE_LOCATIONS = ("bottleneck", "expansion")


@dataclass(frozen=True)
class FeatureInfo:
    """One feature map a backbone offers (timm's convention): its channels, its reduction (input size / map
    size) and the module it comes from: the output of ``module``, or its input where ``hook`` is
    ``"forward_pre"`` (a block's expansion: the input of its projection conv). ``info["num_chs"]`` works too."""

    num_chs: int
    reduction: int
    module: str
    hook: str = "forward"

    def __getitem__(self, key: str) -> Any:
        if key not in ("num_chs", "reduction", "module", "hook"):
            raise KeyError(f"{key!r}; a feature info has num_chs, reduction, module and hook")
        return getattr(self, key)


class FeatureInfoList(list):
    """The feature maps of a backbone, in forward order, with timm's helpers."""

    def channels(self) -> list[int]:
        return [f.num_chs for f in self]

    def reduction(self) -> list[int]:
        return [f.reduction for f in self]

    def module_name(self) -> list[str]:
        return [f.module for f in self]


@dataclass(frozen=True)
class ModelInfo:
    """What a model needs to be rebuilt and fed: architecture name, options, preprocessing, and ``extra``
    metadata (class names, a training record, where converted weights came from).

    Frozen: a model that is fed otherwise than its architecture's defaults (a checkpoint's, the training data's
    or the source library's preprocessing) is given a new info made by :meth:`updated`, so an info another
    object holds (a feature extractor's, an exported file's) never changes under it."""

    arch: str
    options: ModelOptions
    input_size: tuple[int, int, int] = (3, 224, 224)
    mean: tuple[float, ...] = IMAGENET_MEAN
    std: tuple[float, ...] = IMAGENET_STD
    min_input_size: int = 32
    extra: dict[str, Any] = field(default_factory=dict)

    def updated(
        self,
        *,
        input_size: Optional[Sequence[int]] = None,
        mean: Optional[Sequence[float]] = None,
        std: Optional[Sequence[float]] = None,
        extra: Optional[dict[str, Any]] = None,
    ) -> "ModelInfo":
        """A copy with the preprocessing given (None keeps this one's) and ``extra``'s keys added to (or replacing
        those of) this one's extra."""
        return dataclasses.replace(
            self,
            input_size=self.input_size if input_size is None else tuple(input_size),
            mean=self.mean if mean is None else tuple(mean),
            std=self.std if std is None else tuple(std),
            extra={**self.extra, **(extra or {})},
        )


@dataclass(frozen=True)
class BlockArgs:
    """What a block's position decides, computed by :func:`build_network` for the generation's factory."""

    in_chs: int
    stride: int
    dilation: int
    drop_path_rate: float


# (table row, BlockArgs) -> (block, its output channels)
BlockFactory = Callable[[Any, BlockArgs], tuple[nn.Module, int]]


def build_network(
    arch: str,
    opts: ModelOptions,
    *,
    stem_chs: int,
    stem_act: Callable[..., nn.Module],
    stages: Sequence[Sequence[tuple[Any, int]]],
    make_block: BlockFactory,
    final_conv: Optional[Callable[[int], tuple[nn.Module, int]]] = None,
    resolution: int = 224,
    head_hidden: Optional[int] = None,
    head_act: Optional[Callable[..., nn.Module]] = None,
    head_norm: bool = False,
) -> "MobileNet":
    """The one builder of V1-V4: stem, stages of blocks, final conv and head.

    ``stages`` holds, per resolution stage, ``(row, stride)`` for each block, from the generation's table; only a
    stage's first block may stride. Here and only here: the ``small_input`` policy (stem and first strided block
    at stride 1: the network downsamples 8x, and 16 px still ends in 2x2 maps), the output stride (a stride past
    ``output_stride`` becomes 1 and multiplies the dilation of the blocks after it), the drop-path rate rising
    linearly with the block index, the module names ``stages.{i}.{j}`` and ``feature_info``: the stem when the
    first stage starts with a stride, then the end of every stage, the final conv standing for the last stage.
    """
    if not stages or any(not stage for stage in stages):
        raise ValueError(f"{arch}: every stage of the table needs at least one block")
    for i, stage in enumerate(stages):
        for j, (row, stride) in enumerate(stage):
            if stride not in (1, 2) or (j > 0 and stride != 1):
                raise ValueError(f"{arch}: stage {i} block {j} ({row}) has stride {stride}; only a stage's first "
                                 "block may stride, by 2")
    conv = opts.conv_kwargs()
    stem_stride = 1 if opts.small_input else 2
    stem = ConvNormAct(opts.in_chans, stem_chs, 3, stem_stride, act_layer=stem_act, **conv)
    reduction, dilation, small_pending = stem_stride, 1, opts.small_input
    total = sum(len(stage) for stage in stages)
    built: list[nn.Sequential] = []
    points: dict[str, list[FeatureInfo]] = {loc: [] for loc in (*FEATURE_LOCATIONS, "blocks")}
    if stages[0][0][1] > 1:
        for loc in FEATURE_LOCATIONS:
            points[loc].append(FeatureInfo(stem_chs, reduction, "stem"))
    in_chs, idx = stem_chs, 0
    for i, stage in enumerate(stages):
        blocks: list[nn.Module] = []
        for j, (row, stride) in enumerate(stage):
            if stride > 1 and small_pending:
                stride, small_pending = 1, False
            block_dilation = dilation
            if stride > 1 and reduction * stride > opts.output_stride:
                dilation *= stride
                stride = 1
                if opts.strided_block_dilation == "new":
                    block_dilation = dilation
            reduction *= stride
            block, out_chs = make_block(
                row, BlockArgs(in_chs, stride, block_dilation, opts.drop_path_rate * idx / total)
            )
            blocks.append(block)
            in_chs, idx = out_chs, idx + 1
            points["blocks"].append(FeatureInfo(out_chs, reduction, f"stages.{i}.{j}"))
        built.append(nn.Sequential(*blocks))
        last = blocks[-1]
        points["bottleneck"].append(FeatureInfo(in_chs, reduction, f"stages.{i}"))
        tap = last.expansion_input
        name = f"stages.{i}.{len(blocks) - 1}"
        points["expansion"].append(
            FeatureInfo(in_chs, reduction, name) if tap is None
            else FeatureInfo(last.get_submodule(tap).in_channels, reduction, f"{name}.{tap}", "forward_pre")
        )
    head_conv, num_features = (None, in_chs) if final_conv is None else final_conv(in_chs)
    # the last stage's own output, which the final conv replaces in feature_info (MobileNetFeatures(final_conv=False))
    points["last_stage"] = [points["bottleneck"][-1]]
    if head_conv is not None:
        for loc in FEATURE_LOCATIONS:
            points[loc][-1] = FeatureInfo(num_features, reduction, "final_conv")
    info = ModelInfo(
        arch=arch,
        options=opts,
        input_size=(opts.in_chans, resolution, resolution),
        min_input_size=16 if opts.small_input else 32,
    )
    return MobileNet(stem, built, head_conv, num_features, points, info, head_hidden, head_act, head_norm)


def _take_indices(count: int, indices: Union[None, int, Sequence[int]], what: str) -> list[int]:
    """timm's rule: None takes every map, an int n the last n, a sequence those (negative from the end)."""
    if indices is None:
        return list(range(count))
    if isinstance(indices, int) and not isinstance(indices, bool):
        if not 0 < indices <= count:
            raise ValueError(f"{what}: {indices} maps asked for, the model has {count} (1 to {count})")
        return list(range(count - indices, count))
    if isinstance(indices, (str, bytes)) or not isinstance(indices, Sequence) or not indices:
        raise ValueError(f"{what} must be an int or a non-empty sequence of ints, got {indices!r}")
    out = []
    for i in indices:
        if isinstance(i, bool) or not isinstance(i, int) or not -count <= i < count:
            raise ValueError(f"{what}: index {i!r} out of range; the model has {count} feature maps "
                             f"(indices 0 to {count - 1}, or -{count} to -1)")
        out.append(i % count)
    if len(set(out)) != len(out):
        raise ValueError(f"{what}: {list(indices)!r} names a feature map twice")
    return out


def _stage_of(module: str, n_stages: int) -> int:
    """How many stages must run to reach ``module``'s output: 0 for the stem, all for the final conv."""
    if module == "stem":
        return 0
    if module == "final_conv":
        return n_stages
    return int(module.split(".")[1]) + 1


def _preprocessing(info: ModelInfo) -> dict[str, Any]:
    """timm's default_cfg keys. The evaluation crop and interpolation are those of the published weights the
    model was converted from (their ``preprocessing`` metadata), else of the run that trained it (its
    ``eval_resize``), else the ImageNet papers' 0.875 with bilinear resizing."""
    published = info.extra.get("preprocessing") or {}
    eval_resize = (info.extra.get("training") or {}).get("eval_resize")
    if "crop_pct" in published:
        crop_pct = float(published["crop_pct"])
    elif eval_resize:
        crop_pct = round(min(info.input_size[1:]) / eval_resize, 4)
    else:
        crop_pct = CROP_PCT
    return {
        "arch": info.arch,
        "input_size": info.input_size,
        "min_input_size": info.min_input_size,
        "mean": info.mean,
        "std": info.std,
        "crop_pct": crop_pct,
        "interpolation": published.get("interpolation", "bilinear"),
    }


def _check_input(info: ModelInfo, x: torch.Tensor) -> None:
    if torch.jit.is_scripting() or torch.compiler.is_compiling() or torch.onnx.is_in_onnx_export():
        return
    in_chans = info.options.in_chans
    if x.ndim != 4 or x.shape[1] != in_chans:
        raise ValueError(f"{info.arch} expects input of shape (N, {in_chans}, H, W), got {tuple(x.shape)}")
    if min(x.shape[-2:]) < info.min_input_size:
        hint = "" if info.options.small_input else " (use small_input=True for 28-64 px images)"
        raise ValueError(f"{info.arch} needs H and W >= {info.min_input_size}, got {tuple(x.shape[-2:])}{hint}")


def _run_backbone(
    owner: nn.Module, x: torch.Tensor, taps: list[FeatureInfo], n_stages: int, with_final: bool
) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Run stem, the first ``n_stages`` stages and (``with_final``) the final conv of ``owner``, catching the
    maps of ``taps`` with hooks (an expansion is an input inside a block)."""
    found: dict[int, torch.Tensor] = {}
    handles = []
    for k, tap in enumerate(taps):
        module = owner.get_submodule(tap.module)
        if tap.hook == "forward_pre":
            handles.append(module.register_forward_pre_hook(lambda m, inp, k=k: found.__setitem__(k, inp[0])))
        else:
            handles.append(module.register_forward_hook(lambda m, inp, out, k=k: found.__setitem__(k, out)))
    try:
        x = owner.stem(x)
        for stage in owner.stages[:n_stages]:
            x = stage(x)
        if with_final:
            x = owner.final_conv(x)
    finally:
        for h in handles:
            h.remove()
    return x, [found[k] for k in range(len(taps))]


class _Described:
    """What both the classification model and the feature extractor say about themselves."""

    info: ModelInfo

    @property
    def arch(self) -> str:
        return self.info.arch

    @property
    def options(self) -> ModelOptions:
        return self.info.options


class DescribedTask(_Described):
    """What a model built on a backbone (segmentation, detection) says about itself, read from its ``info``."""

    @property
    def num_classes(self) -> int:
        return self.info.options.num_classes

    @property
    def default_cfg(self) -> dict[str, Any]:
        info = self.info
        return {"arch": info.arch, "input_size": info.input_size, "min_input_size": info.min_input_size,
                "mean": info.mean, "std": info.std, "num_classes": self.num_classes}


class MobileNet(_Described, nn.Module):
    """stem -> stages -> final_conv = ``forward_features``; pool -> [head_fc + act] -> dropout -> classifier
    = ``forward_head``. One class for V1 to V4, built by :func:`build_network` from each generation's table."""

    def __init__(
        self,
        stem: nn.Module,
        stages: list[nn.Sequential],
        final_conv: Optional[nn.Module],
        num_features: int,
        feature_points: dict[str, list[FeatureInfo]],
        info: ModelInfo,
        head_hidden: Optional[int] = None,
        head_act: Optional[Callable[..., nn.Module]] = None,
        head_norm: bool = False,
    ) -> None:
        super().__init__()
        opts = info.options
        self.info = info
        self._feature_points = feature_points
        self.stem = stem
        self.stages = nn.Sequential(*stages)
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
    def num_classes(self) -> int:
        return self.info.options.num_classes

    @property
    def blocks(self) -> nn.Sequential:
        """Every block in forward order, across stages (a view: the modules live under ``stages``)."""
        return nn.Sequential(*(block for stage in self.stages for block in stage))

    def block_names(self) -> list[str]:
        """``stages.{i}.{j}`` of every block in forward order (``blocks.{k}`` in checkpoints of format 1)."""
        return [f"stages.{i}.{j}" for i, stage in enumerate(self.stages) for j in range(len(stage))]

    @property
    def feature_info(self) -> FeatureInfoList:
        """The maps ``forward_intermediates`` returns: block outputs (``feature_location="bottleneck"``)."""
        return self.feature_info_at("bottleneck")

    def feature_info_at(self, feature_location: str) -> FeatureInfoList:
        """The feature maps at ``"bottleneck"`` (stage outputs) or ``"expansion"`` (the input of each stage's
        last projection conv, timm's convention; SSDLite's C4)."""
        if feature_location not in FEATURE_LOCATIONS:
            raise ValueError(
                f"feature_location must be one of {', '.join(map(repr, FEATURE_LOCATIONS))}, got {feature_location!r}"
            )
        return FeatureInfoList(self._feature_points[feature_location])

    @property
    def default_cfg(self) -> dict[str, Any]:
        """timm-style description: input size, mean, std, classes."""
        return {**_preprocessing(self.info), "num_classes": self.num_classes}

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
        _check_input(self.info, x)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        self._check_input(x)
        return self.final_conv(self.stages(self.stem(x)))

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
        options = dataclasses.replace(self.info.options, num_classes=num_classes)
        self.info = dataclasses.replace(self.info, options=options)
        self.classifier = (
            nn.Linear(self.head_hidden_size, num_classes) if num_classes > 0 else nn.Identity()
        )
        if num_classes > 0:
            nn.init.normal_(self.classifier.weight, 0, 0.01)
            nn.init.zeros_(self.classifier.bias)

    def forward_intermediates(
        self,
        x: torch.Tensor,
        indices: Union[None, int, Sequence[int]] = None,
        stop_early: bool = False,
        intermediates_only: bool = False,
    ) -> Union[list[torch.Tensor], tuple[torch.Tensor, list[torch.Tensor]]]:
        """The ``feature_info`` maps (timm's ``forward_intermediates``): ``indices`` None for all, an int n for the
        last n, or a sequence of indices. Returns ``(forward_features(x), maps)``, or the maps alone with
        ``intermediates_only``; ``stop_early`` (only with ``intermediates_only``) skips the layers after the last
        map asked for."""
        if stop_early and not intermediates_only:
            raise ValueError("stop_early=True needs intermediates_only=True: the final features would not be computed")
        infos = self.feature_info
        taps = [infos[i] for i in _take_indices(len(infos), indices, "indices")]
        self._check_input(x)
        n = len(self.stages)
        if stop_early:
            run, final = min(max(_stage_of(t.module, n) for t in taps), n), any(t.module == "final_conv" for t in taps)
        else:
            run, final = n, True
        out, maps = _run_backbone(self, x, taps, run, final)
        return maps if intermediates_only else (out, maps)


class MobileNetFeatures(_Described, nn.Module):
    """A backbone for dense prediction (``create_model(..., features_only=True)``): the model's stem, the stages
    its ``out_indices`` need and the final conv if asked for; ``forward`` returns the maps in ``feature_info``'s
    order. Tensor names are the classification model's, so its checkpoints load. ``final_conv=False`` makes the
    last map the last stage's output, without the final 1x1 conv (the V2 paper's DeepLabv3 reads that one);
    ``first_block_of`` (indices into the model's maps) takes those stages' maps after their first block."""

    def __init__(
        self,
        model: MobileNet,
        out_indices: Optional[Sequence[int]] = None,
        feature_location: str = "bottleneck",
        final_conv: bool = True,
        first_block_of: Sequence[int] = (),
    ) -> None:
        super().__init__()
        available = FeatureInfoList(model.feature_info_at(feature_location))
        if (not final_conv or first_block_of) and feature_location != "bottleneck":
            raise ValueError("final_conv=False and first_block_of apply to feature_location='bottleneck'")
        if not final_conv and available[-1].module == "final_conv":
            # the last index is the last stage's output instead: the V2 paper (section 6.3) puts DeepLabv3 on the
            # 320-channel map before the 1280-channel conv
            available[-1] = model._feature_points["last_stage"][0]
        blocks = {f.module: f for f in model._feature_points["blocks"]}
        for i in first_block_of:
            # torchvision's segmentation models read the output-stride-8 map after the stage's first block
            name = f"{available[i].module}.0"
            if name not in blocks:
                raise ValueError(f"first_block_of: map {i} ({available[i].module}) is not a stage's output")
            available[i] = blocks[name]
        picked = _take_indices(len(available), None if out_indices is None else tuple(out_indices), "out_indices")
        self.info = model.info
        self.feature_location = feature_location
        self.out_indices = tuple(picked)
        self.feature_info = FeatureInfoList(available[i] for i in picked)
        n = len(model.stages)
        self._n_stages = min(max(_stage_of(f.module, n) for f in self.feature_info), n)
        self._with_final = any(f.module == "final_conv" for f in self.feature_info)
        self.stem = model.stem
        self.stages = nn.Sequential(*list(model.stages)[: self._n_stages])
        if self._with_final:
            self.final_conv = model.final_conv

    @property
    def default_cfg(self) -> dict[str, Any]:
        return _preprocessing(self.info)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        _check_input(self.info, x)
        return _run_backbone(self, x, list(self.feature_info), self._n_stages, self._with_final)[1]


class PooledConvNormAct(ConvNormAct):
    """A 1x1 ``ConvNormAct`` on pooled features of shape (N, C): the V4 head's conv + batch norm + activation
    (batch norm over the batch, as on a 1x1 map). Being a ``ConvNormAct``, its batch norm folds like the others."""

    def __init__(self, in_chs: int, out_chs: int, **kwargs: Any) -> None:
        super().__init__(in_chs, out_chs, 1, **kwargs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x[:, :, None, None]).flatten(1)
