"""SSDLite detectors on the zoo's backbones (V2 paper section 6.2, V3 paper section 6.2), on torchvision's
detection machinery: :class:`SSDLite` *is* a ``torchvision.models.detection.ssd.SSD`` (default boxes from
``DefaultBoxGenerator``, box coding, matching, hard-negative mining and losses, post-processing with
``batched_nms``) with torchvision's ``SSDLiteHead`` (depthwise 3x3 + BN + ReLU6, then a 1x1 conv, per map).

The contract (what training, evaluation and deployment code relies on):

* **Input**: ``model(images)`` takes a list of float tensors (C, H, W) with values in [0, 1], any H and W, or
  an (N, C, H, W) batch. Each image is resized to ``image_size`` (default 320x320, aspect ratio *not* kept:
  torchvision's ``fixed_size``) and normalised with ``model.info.mean`` / ``std`` (0.5 on each of the ``in_chans``
  channels: inputs in [-1, 1], as TensorFlow's SSDLite and torchvision's ``ssdlite320_mobilenet_v3_large``).
* **Training** (``model.train()``): ``model(images, targets)`` returns the losses
  ``{"bbox_regression": tensor, "classification": tensor}`` (already averaged over matched boxes; optimise
  their sum). ``targets`` is a list of one dict per image: ``"boxes"`` float (K, 4) XYXY in pixels of *that
  image as given* (the model rescales them with the image), ``"labels"`` int64 (K,) in ``1..num_classes-1``
  (0 is the background; ``num_classes`` counts it, 91 for COCO). K may be 0. Other keys are ignored: leave
  crowd regions out of ``boxes`` yourself. Batch norm needs batches of 2 or more in training (the last extra
  map is 1x1 at 320).
* **Inference** (``model.eval()``): ``model(images)`` returns one dict per image: ``"boxes"`` float (D, 4) XYXY
  in pixels of the image as given, ``"scores"`` (D,) softmax probabilities, ``"labels"`` int64 (D,) in
  ``1..num_classes-1``, at most ``detections_per_img``, after per-class NMS (``nms_thresh``) of the
  ``topk_candidates`` best boxes per class above ``score_thresh``.
* **Raw outputs** (export, profiling): ``model.forward_raw(batch)`` on a preprocessed batch (N, C, H, W)
  (``model.preprocess(images)`` makes it) returns ``(cls_logits (N, A, num_classes), bbox_regression (N, A, 4))``
  before any decoding; ``model.decode(cls_logits, bbox_regression, original_sizes)`` turns them into the
  detections above, with ``model.anchors()`` (A = 2034 default boxes at 320x320, 3234 with six on the first map). The ONNX export is that raw
  graph; NMS stays in Python (docs/detection.md).

Feature maps (SSDLite's placement, V3 paper section 6.2): the first is the *expansion* (the input of the
depthwise conv) of the first block of the last stage, the block that strides to output stride 32, so this map
is still at output stride 16: C4, the 13th bneck of V3 Large (672 channels), the 9th of Small (288), the V2
paper's "expansion of layer 15" (576). V1 has no expansion: its first block of that stage is a depthwise
separable conv, whose depthwise input is the previous block's output, the 512-channel map at output stride 16
(TensorFlow's ssd_mobilenet_v1: ``Conv2d_11_pointwise``). The second map is the backbone's last layer (V2/V3:
the final 1x1 conv; V1: the last block), then four extra blocks (1x1 conv to half width, depthwise 3x3 stride
2, 1x1 conv, all with BN and ReLU6) of 512, 256, 256 and 128 channels times ``width_mult`` (at least 16), as
TensorFlow's SSDLite feature extractors scale them. Default boxes: torchvision's ``DefaultBoxGenerator`` (six per
location: aspect ratios 1, 1', 2, 1/2, 3, 1/3, scales 0.2 to 0.95), with TensorFlow's three on the first map
(``reduce_boxes_in_lowest_layer=True``, the papers' models, the default; False is torchvision's ssdlite320).
"""

from __future__ import annotations

import math
from collections import OrderedDict
from functools import partial
from typing import Any, Callable, Optional, Sequence

import torch
from torch import nn
from torchvision.models.detection.anchor_utils import DefaultBoxGenerator
from torchvision.models.detection.image_list import ImageList
from torchvision.models.detection.ssd import SSD
from torchvision.models.detection.ssdlite import SSDLiteHead

from ..layers import ConvNormAct
from ..models.base import (
    DescribedTask, FeatureInfo, FeatureInfoList, MobileNet, MobileNetFeatures, ModelInfo, ModelOptions,
)
from .options import (
    ASPECT_RATIOS, EXTRA_CHANNELS, EXTRA_MIN_CHANNELS, LOWEST_LAYER_SCALE, MAX_RATIO, MIN_RATIO, SSDLITE_MEAN,
    SSDLITE_STD, DetectionOptions,
)

__all__ = ["SSDLite", "SSDLiteFeatures", "SSDLiteExtraBlock", "ReducedLowestLayerBoxes", "build_ssdlite"]

class SSDLiteExtraBlock(nn.Sequential):
    """One SSDLite extra layer (V2 paper section 6.2): 1x1 conv to half the output width, depthwise 3x3 at
    stride 2, 1x1 conv to the output width, each with batch norm and ReLU6 (TensorFlow's and torchvision's)."""

    def __init__(self, in_chs: int, out_chs: int, conv_kwargs: dict[str, Any]) -> None:
        mid = out_chs // 2
        super().__init__(OrderedDict(
            conv_in=ConvNormAct(in_chs, mid, 1, act_layer=nn.ReLU6, **conv_kwargs),
            conv_dw=ConvNormAct(mid, mid, 3, 2, groups=mid, act_layer=nn.ReLU6, **conv_kwargs),
            conv_out=ConvNormAct(mid, out_chs, 1, act_layer=nn.ReLU6, **conv_kwargs),
        ))


def _c4_tap(net: MobileNet) -> FeatureInfo:
    """The first SSDLite map of ``net``: the input of the depthwise conv of the last stage's first block, which
    strides to the final output stride (the module docstring says what that is for each generation)."""
    reductions = net.feature_info.reduction()
    if len(reductions) < 2 or reductions[-1] != 2 * reductions[-2]:
        raise ValueError(f"{net.arch}: SSDLite needs a last stage that halves the resolution; the maps of this "
                         f"backbone are at reductions {reductions}")
    last = len(net.stages) - 1
    block = net.stages[last][0]
    conv_dw = getattr(block, "conv_dw", None)
    if not isinstance(conv_dw, ConvNormAct):
        raise ValueError(f"{net.arch}: SSDLite taps the depthwise conv of the last stage's first block; "
                         f"{type(block).__name__} has none")
    return FeatureInfo(conv_dw.in_channels, reductions[-2], f"stages.{last}.0.conv_dw", "forward_pre")


class SSDLiteFeatures(nn.Module):
    """The six SSDLite maps of a zoo network: C4 and the last layer from ``body`` (the network's stem, stages
    and final conv: a :class:`MobileNetFeatures`, so classification checkpoints load into it), then ``extras``.
    ``forward`` returns them as an ordered dict ``"0"`` to ``"5"`` (what torchvision's SSD takes)."""

    def __init__(self, net: MobileNet, width_mult: float, conv_kwargs: dict[str, Any]) -> None:
        super().__init__()
        self.c4 = _c4_tap(net)
        self.body = MobileNetFeatures(net, out_indices=(-1,))
        last = self.body.feature_info[0]
        widths = [max(EXTRA_MIN_CHANNELS, int(c * width_mult)) for c in EXTRA_CHANNELS]
        ins = [last.num_chs] + widths[:-1]
        self.extras = nn.ModuleList(SSDLiteExtraBlock(i, o, conv_kwargs) for i, o in zip(ins, widths))
        infos = [self.c4, last]
        for k, width in enumerate(widths):
            infos.append(FeatureInfo(width, last.reduction * 2 ** (k + 1), f"extras.{k}"))
        self.feature_info = FeatureInfoList(infos)

    @property
    def out_channels(self) -> list[int]:
        return self.feature_info.channels()

    def forward(self, x: torch.Tensor) -> "OrderedDict[str, torch.Tensor]":
        found: list[torch.Tensor] = []
        handle = self.body.get_submodule(self.c4.module).register_forward_pre_hook(
            lambda module, inputs: found.append(inputs[0]))
        try:
            (x,) = self.body(x)
        finally:
            handle.remove()
        maps = [found[0], x]
        for block in self.extras:
            x = block(x)
            maps.append(x)
        return OrderedDict((str(i), m) for i, m in enumerate(maps))


class ReducedLowestLayerBoxes(DefaultBoxGenerator):
    """torchvision's default boxes with TensorFlow's first map (``reduce_boxes_in_lowest_layer`` of its
    ``create_ssd_anchors``, which the papers' SSDLite models use): three boxes there, (0.1, aspect ratio 1) and
    the first scale at aspect ratios 2 and 1/2; the other maps keep torchvision's six."""

    def __init__(self, aspect_ratios: list[list[int]], min_ratio: float, max_ratio: float) -> None:
        super().__init__(aspect_ratios, min_ratio, max_ratio)
        s, r = self.scales[0], math.sqrt(2.0)
        self._wh_pairs[0] = torch.tensor(
            [[LOWEST_LAYER_SCALE, LOWEST_LAYER_SCALE], [s * r, s / r], [s / r, s * r]], dtype=torch.float32)

    def num_anchors_per_location(self) -> list[int]:
        return [len(pairs) for pairs in self._wh_pairs]


def _normal_init(module: nn.Module, std: float = 0.03) -> None:
    # torchvision's SSDLite initialises its extra layers (and heads) so; our heads are torchvision's own
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.normal_(m.weight, 0.0, std)
            if m.bias is not None:
                nn.init.zeros_(m.bias)


class SSDLite(DescribedTask, SSD):
    """torchvision's :class:`~torchvision.models.detection.ssd.SSD` on :class:`SSDLiteFeatures` with
    torchvision's ``SSDLiteHead``, described by ``info`` like every model of the zoo. The contract of ``forward``,
    :meth:`forward_raw`, :meth:`preprocess` and :meth:`decode` is in the module docstring."""

    def __init__(self, info: ModelInfo, backbone: SSDLiteFeatures) -> None:
        opts: DetectionOptions = info.options  # type: ignore[assignment]
        generator = ReducedLowestLayerBoxes if opts.reduce_boxes_in_lowest_layer else DefaultBoxGenerator
        anchors = generator([list(ASPECT_RATIOS)] * len(backbone.out_channels), MIN_RATIO, MAX_RATIO)
        b = opts.backbone
        norm = partial(b.norm(), eps=b.bn_eps, momentum=b.bn_momentum)
        head = SSDLiteHead(backbone.out_channels, anchors.num_anchors_per_location(), opts.num_classes, norm)
        super().__init__(
            backbone, anchors, opts.image_size, opts.num_classes, list(info.mean), list(info.std), head,
            score_thresh=opts.score_thresh, nms_thresh=opts.nms_thresh, detections_per_img=opts.detections_per_img,
            topk_candidates=opts.topk_candidates,
        )
        self.info = info

    def _sync_preprocessing(self) -> None:
        # info is the model's description (a checkpoint's metadata may give it another mean and std); the
        # transform is torchvision's and keeps its own copy
        self.transform.image_mean = list(self.info.mean)
        self.transform.image_std = list(self.info.std)

    def forward(self, images: Any, targets: Optional[list[dict[str, torch.Tensor]]] = None) -> Any:
        self._sync_preprocessing()
        return super().forward(images, targets)

    def preprocess(self, images: Sequence[torch.Tensor]) -> tuple[torch.Tensor, list[tuple[int, int]]]:
        """What ``forward`` does to ``images`` before the network: (the resized, normalised batch, the
        original (H, W) of each image)."""
        self._sync_preprocessing()
        original = [(int(img.shape[-2]), int(img.shape[-1])) for img in images]
        batch, _ = self.transform(list(images))
        return batch.tensors, original

    def forward_raw(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The heads' outputs on a preprocessed batch: ``(cls_logits (N, A, num_classes), bbox_regression
        (N, A, 4))``, A default boxes over the six maps, before softmax, decoding and NMS."""
        out = self.head(list(self.backbone(x).values()))
        return out["cls_logits"], out["bbox_regression"]

    def feature_sizes(self, image_size: Optional[tuple[int, int]] = None) -> list[tuple[int, int]]:
        """The (H, W) of the six maps for an input of ``image_size`` (default the model's): every stride-2
        conv pads so that its output is ceil(input / 2)."""
        h, w = image_size if image_size is not None else self.options.image_size
        return [(math.ceil(h / r), math.ceil(w / r)) for r in self.backbone.feature_info.reduction()]

    def anchors(self, batch_size: int = 1, image_size: Optional[tuple[int, int]] = None) -> list[torch.Tensor]:
        """torchvision's default boxes (XYXY pixels) for each image of a batch at ``image_size`` (the model's by
        default), in the order of :meth:`forward_raw`'s A axis."""
        size = tuple(image_size if image_size is not None else self.options.image_size)
        param = next(self.parameters())
        images = ImageList(torch.empty((batch_size, 0, *size), dtype=param.dtype, device=param.device),
                           [size] * batch_size)
        maps = [torch.empty((batch_size, 0, h, w), dtype=param.dtype, device=param.device)
                for h, w in self.feature_sizes(size)]  # type: ignore[arg-type]
        return self.anchor_generator(images, maps)

    def decode(
        self, cls_logits: torch.Tensor, bbox_regression: torch.Tensor,
        original_sizes: Optional[Sequence[tuple[int, int]]] = None,
    ) -> list[dict[str, torch.Tensor]]:
        """:meth:`forward_raw`'s outputs (from PyTorch or an exported file, at the model's ``image_size``) to
        ``forward``'s detections: torchvision's box decoding, score threshold, top-k and per-class NMS, boxes
        scaled to ``original_sizes`` (each image's (H, W) before :meth:`preprocess`; default: the model's size)."""
        n = cls_logits.shape[0]
        size = self.options.image_size
        expected = sum(h * w * a for (h, w), a in
                       zip(self.feature_sizes(), self.anchor_generator.num_anchors_per_location()))
        if cls_logits.shape != (n, expected, self.num_classes) or bbox_regression.shape != (n, expected, 4):
            raise ValueError(f"{self.arch} at {size[0]}x{size[1]} decodes cls_logits of shape (N, {expected}, "
                             f"{self.num_classes}) and bbox_regression (N, {expected}, 4); got "
                             f"{tuple(cls_logits.shape)} and {tuple(bbox_regression.shape)}")
        sizes = [size] * n
        original = [tuple(s) for s in original_sizes] if original_sizes is not None else sizes
        if len(original) != n:
            raise ValueError(f"original_sizes has {len(original)} entries for a batch of {n}")
        head_outputs = {"cls_logits": cls_logits, "bbox_regression": bbox_regression}
        detections = self.postprocess_detections(head_outputs, self.anchors(n), sizes)
        return self.transform.postprocess(detections, sizes, original)  # type: ignore[arg-type]


def build_ssdlite(
    arch: str, opts: DetectionOptions, build_backbone: Callable[[str, ModelOptions], MobileNet]
) -> SSDLite:
    """SSDLite on the network ``build_backbone`` makes (the registry passes the entry of ``mobilenet_v2``,
    ``mobilenet_v3_large`` ...)."""
    net = build_backbone(arch, opts.backbone)
    height, width = opts.image_size
    if min(height, width) < net.info.min_input_size:
        hint = "" if opts.backbone.small_input else " (or small_input=True)"
        raise ValueError(f"image_size must be at least {net.info.min_input_size} for {arch}{hint}, "
                         f"got {height}x{width}")
    b = opts.backbone
    features = SSDLiteFeatures(net, b.width_mult, b.conv_kwargs())
    _normal_init(features.extras)
    info = ModelInfo(arch=arch, options=opts, input_size=(b.in_chans, height, width),  # type: ignore[arg-type]
                     mean=(SSDLITE_MEAN,) * b.in_chans, std=(SSDLITE_STD,) * b.in_chans,
                     min_input_size=net.info.min_input_size)
    return SSDLite(info, features)


