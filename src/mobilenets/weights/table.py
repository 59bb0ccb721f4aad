"""The published weights of the MobileNet family (ImageNet-1k classifiers, torchvision's COCO/VOC segmentation
models), written once: where each file is, how to check it,
which converter and architecture read it, what its publisher reports (top-1/top-5 for ImageNet
classification, mIoU/pixel accuracy for segmentation), how its inputs are prepared and the names of its classes.

A row is looked up by (our model name, width multiplier, tag). Tags are ``SOURCE:NAME``: torchvision's enum
member names (``torchvision:IMAGENET1K_V2``), timm's pretrained tags (``timm:ra4_e3600_r224_in1k``; the
architecture, ``mobilenetv1_125`` or ``tf_mobilenetv3_large_100``, follows from model and width) and, for Keras,
the resolution a file was trained at (``keras:160``).

Where the peers' installed packages hold the same facts, ``tests/test_weights.py`` checks this table against them:
torchvision's Weights enums (URL with its SHA-256 prefix, metrics, transforms), timm's pretrained configs (Hub
repository, license, input size, crop fraction, interpolation, mean/std, default tag) and Keras applications'
source (file URLs, accepted alphas and resolutions, MD5 hashes of the V3 files). Metrics the peers' packages do not
carry are copied from the document named in ``metrics_source`` (file, commit, table); None where we found no
published figure (docs/weights.md lists them).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

from ..models.base import IMAGENET_MEAN, IMAGENET_STD
from .imagenet_classes import IMAGENET_CLASSES
from .voc_classes import VOC_CLASSES

__all__ = ["Preprocessing", "PretrainedWeights", "TABLE", "SOURCES", "TASK_METRICS"]

SOURCES = ("torchvision", "timm", "keras")
# the metrics each task's rows report, by the names torchvision's ``_metrics`` use for segmentation
TASK_METRICS = {"classification": ("top1", "top5"), "segmentation": ("miou", "pixel_acc")}
INCEPTION = ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))
IMAGENET = (IMAGENET_MEAN, IMAGENET_STD)
# timm's miil_in21k_ft_in1k weights take raw [0, 1] inputs
RAW = ((0.0, 0.0, 0.0), (1.0, 1.0, 1.0))


@dataclass(frozen=True)
class Preprocessing:
    """Evaluation preprocessing: resize the shorter side to ``resize``, center-crop ``crop`` x ``crop`` (None: no
    crop, as torchvision's segmentation transforms), scale to [0, 1] and normalise with ``mean``/``std``."""

    crop: Optional[int]
    resize: int
    interpolation: str
    mean: tuple[float, ...]
    std: tuple[float, ...]

    @property
    def crop_pct(self) -> Optional[float]:
        return None if self.crop is None else self.crop / self.resize

    @property
    def size(self) -> int:
        """The side of the network's input: the crop, else the resized shorter side."""
        return self.resize if self.crop is None else self.crop

    def to_dict(self) -> dict:
        return {
            "crop": self.crop,
            "resize": self.resize,
            "crop_pct": None if self.crop_pct is None else round(self.crop_pct, 4),
            "interpolation": self.interpolation,
            "mean": list(self.mean),
            "std": list(self.std),
        }


@dataclass(frozen=True)
class PretrainedWeights:
    """One published weight file and everything needed to fetch, check, convert and describe it.

    ``url`` files are fetched with torch.hub's downloader into its cache, checked against ``sha256_prefix`` (the
    prefix torch.hub's file-name convention carries) and/or ``md5`` (Keras' hashes); ``hf_hub_id`` files
    (``hf_filename`` of that Hub repository) through huggingface_hub.

    ``task`` says which metrics the row reports (:data:`TASK_METRICS`: ``top1``/``top5`` for classification,
    ``miou``/``pixel_acc`` for segmentation; the other task's stay None), measured on ``dataset``;
    ``class_names`` are the names of the head's outputs, in logit order.
    """

    model: str
    width_mult: float
    tag: str
    source: str
    source_arch: str
    preprocessing: Preprocessing
    license: str
    url: Optional[str] = None
    hf_hub_id: Optional[str] = None
    hf_filename: str = "model.safetensors"
    sha256_prefix: Optional[str] = None
    md5: Optional[str] = None
    top1: Optional[float] = None
    top5: Optional[float] = None
    metrics_source: Optional[str] = None
    task: str = "classification"
    dataset: str = "ImageNet-1k"
    class_names: tuple[str, ...] = IMAGENET_CLASSES
    miou: Optional[float] = None
    pixel_acc: Optional[float] = None

    def __post_init__(self) -> None:
        if self.task not in TASK_METRICS:
            raise ValueError(f"task must be one of {', '.join(map(repr, TASK_METRICS))}, got {self.task!r}")
        foreign = [name for task, names in TASK_METRICS.items() if task != self.task for name in names
                   if getattr(self, name) is not None]
        if foreign:
            own = ", ".join(TASK_METRICS[self.task])
            raise ValueError(f"{self.model} {self.tag}: a {self.task} row reports {own}, not {', '.join(foreign)}")

    @property
    def metrics(self) -> dict[str, Optional[float]]:
        """The published figures of the row's task, by name (None: no published figure)."""
        return {name: getattr(self, name) for name in TASK_METRICS[self.task]}

    @property
    def filename(self) -> str:
        """The published file name (torch.hub and Keras cache files under it)."""
        if self.url is not None:
            return self.url.rsplit("/", 1)[-1]
        return self.hf_filename

    @property
    def location(self) -> str:
        return self.url if self.url is not None else f"hf-hub:{self.hf_hub_id}/{self.hf_filename}"

    def describe(self) -> dict:
        return {
            "model": self.model,
            "width_mult": self.width_mult,
            "tag": self.tag,
            "source": self.source,
            "source_arch": self.source_arch,
            "location": self.location,
            "sha256_prefix": self.sha256_prefix,
            "md5": self.md5,
            "license": self.license,
            "task": self.task,
            "dataset": self.dataset,
            **self.metrics,
            "metrics_source": self.metrics_source,
            "preprocessing": self.preprocessing.to_dict(),
        }


# ---- torchvision ---------------------------------------------------------------------------------------------

_TV = "https://download.pytorch.org/models/"
_TV_METRICS = "torchvision's Weights enum meta (_metrics ImageNet-1K)"
_TV_SEG_METRICS = "torchvision's Weights enum meta (_metrics COCO-val2017-VOC-labels)"


def _tv_hash(file: str) -> str:
    return file.rsplit("-", 1)[1].split(".")[0]


def _tv(model: str, tag: str, file: str, resize: int, top1: float, top5: float) -> PretrainedWeights:
    return PretrainedWeights(
        model, 1.0, f"torchvision:{tag}", "torchvision", model,
        Preprocessing(224, resize, "bilinear", *IMAGENET), "bsd-3-clause",
        url=_TV + file, sha256_prefix=_tv_hash(file),
        top1=top1, top5=top5, metrics_source=_TV_METRICS,
    )


def _tv_seg(model: str, file: str, miou: float, pixel_acc: float) -> PretrainedWeights:
    # torchvision's SemanticSegmentation transform: shorter side to 520, no crop
    return PretrainedWeights(
        model, 1.0, "torchvision:COCO_WITH_VOC_LABELS_V1", "torchvision", model,
        Preprocessing(None, 520, "bilinear", *IMAGENET), "bsd-3-clause",
        url=_TV + file, sha256_prefix=_tv_hash(file), metrics_source=_TV_SEG_METRICS,
        task="segmentation", dataset="COCO val2017, VOC's 20 categories", class_names=VOC_CLASSES,
        miou=miou, pixel_acc=pixel_acc,
    )


# first row per model: torchvision's DEFAULT
_TORCHVISION = (
    _tv("mobilenet_v2", "IMAGENET1K_V2", "mobilenet_v2-7ebf99e0.pth", 232, 72.154, 90.822),
    _tv("mobilenet_v2", "IMAGENET1K_V1", "mobilenet_v2-b0353104.pth", 256, 71.878, 90.286),
    _tv("mobilenet_v3_large", "IMAGENET1K_V2", "mobilenet_v3_large-5c1a4163.pth", 232, 75.274, 92.566),
    _tv("mobilenet_v3_large", "IMAGENET1K_V1", "mobilenet_v3_large-8738ca79.pth", 256, 74.042, 91.34),
    _tv("mobilenet_v3_small", "IMAGENET1K_V1", "mobilenet_v3_small-047dcff4.pth", 256, 67.668, 87.402),
    # COCO train2017 images holding VOC's categories; torchvision's file has no aux_classifier, DeepLabV3's has
    _tv_seg("lraspp_mobilenet_v3_large", "lraspp_mobilenet_v3_large-d234d4ea.pth", 57.9, 91.2),
    _tv_seg("deeplabv3_mobilenet_v3_large", "deeplabv3_mobilenet_v3_large-fc3c493d.pth", 60.3, 91.2),
)

# ---- timm ----------------------------------------------------------------------------------------------------

_TIMM_OURS = {
    "mobilenetv1": "mobilenet_v1",
    "mobilenetv2": "mobilenet_v2",
    "mobilenetv3_large": "mobilenet_v3_large",
    "mobilenetv3_small": "mobilenet_v3_small",
    "tf_mobilenetv3_large": "mobilenet_v3_large",
    "tf_mobilenetv3_small": "mobilenet_v3_small",
    "tf_mobilenetv3_large_minimal": "mobilenet_v3_large_minimal",
    "tf_mobilenetv3_small_minimal": "mobilenet_v3_small_minimal",
}


# Published ImageNet-1k figures of timm's weights: (arch, tag) -> (top-1, top-5, image size they were evaluated at,
# where they are published). timm's results CSV and README tables list some tags twice, at the training size and at
# the larger test size of the pretrained cfg; we take the figure at the size our row's preprocessing crops to (the
# test that checks this compares the size here with the row). Tags absent here have no figure we could read:
# mobilenetv4_conv_small.e3600_r256_in1k and mobilenetv4_conv_medium.e250_r384_in12k_ft_in1k are in neither file.
_TIMM_REPO = "github.com/huggingface/pytorch-image-models"
_TIMM_CSV = f"timm's results/results-imagenet.csv ({_TIMM_REPO} @0173a139)"
_TIMM_README = f"timm's README.md ({_TIMM_REPO} @015ac30a), What's New"
_TIMM_METRICS: dict[tuple[str, str], tuple[float, Optional[float], int, str]] = {
    ("mobilenetv1_100", "ra4_e3600_r224_in1k"): (75.382, 92.312, 224, f"{_TIMM_README} 'July 26, 2024' table"),
    ("mobilenetv1_125", "ra4_e3600_r224_in1k"): (76.924, 93.234, 224, f"{_TIMM_README} 'Aug 21, 2024' table"),
    ("mobilenetv2_050", "lamb_in1k"): (65.950, 86.088, 224, _TIMM_CSV),
    ("mobilenetv2_100", "ra_in1k"): (72.976, 91.010, 224, _TIMM_CSV),
    ("mobilenetv2_140", "ra_in1k"): (76.520, 92.986, 224, _TIMM_CSV),
    ("mobilenetv3_large_100", "ra_in1k"): (75.766, 92.538, 224, _TIMM_CSV),
    # the README gives top-1 only (76.31 @ 224); top-5 is in the timm Hub model cards' comparison table
    ("mobilenetv3_large_100", "ra4_e3600_r224_in1k"): (
        76.310, 92.846, 224,
        f"top-1: {_TIMM_README} 'Sept 2024'; top-5: 'Model Comparison' table of timm's Hub model card "
        "timm/mobilenetv4_conv_small.e2400_r224_in1k (read from the copy at github.com/YinanWusoymilk/hf-readme "
        "@1ab39f24)",
    ),
    ("mobilenetv3_large_100", "miil_in21k_ft_in1k"): (77.918, 92.914, 224, _TIMM_CSV),
    ("mobilenetv3_small_050", "lamb_in1k"): (57.910, 80.180, 224, _TIMM_CSV),
    ("mobilenetv3_small_075", "lamb_in1k"): (65.234, 85.446, 224, _TIMM_CSV),
    ("mobilenetv3_small_100", "lamb_in1k"): (67.656, 87.636, 224, _TIMM_CSV),
    ("tf_mobilenetv3_large_075", "in1k"): (73.432, 91.352, 224, _TIMM_CSV),
    ("tf_mobilenetv3_large_100", "in1k"): (75.516, 92.594, 224, _TIMM_CSV),
    ("tf_mobilenetv3_large_minimal_100", "in1k"): (72.258, 90.638, 224, _TIMM_CSV),
    ("tf_mobilenetv3_small_075", "in1k"): (65.728, 86.126, 224, _TIMM_CSV),
    ("tf_mobilenetv3_small_100", "in1k"): (67.918, 87.674, 224, _TIMM_CSV),
    ("tf_mobilenetv3_small_minimal_100", "in1k"): (62.890, 84.240, 224, _TIMM_CSV),
    ("mobilenetv4_conv_small", "e2400_r224_in1k"): (73.756, 91.422, 224, f"{_TIMM_README} 'June 12, 2024' table"),
    ("mobilenetv4_conv_small", "e1200_r224_in1k"): (73.454, 91.34, 224, f"{_TIMM_README} 'June 12, 2024' table"),
    # published as top-1 only ("65.81 top-1 @ 256, 64.76 @ 224")
    ("mobilenetv4_conv_small_050", "e3000_r224_in1k"): (64.76, None, 224, f"{_TIMM_README} 'Sept 2024'"),
    ("mobilenetv4_conv_medium", "e500_r256_in1k"): (79.928, 95.184, 256, f"{_TIMM_README} 'June 12, 2024' table"),
    ("mobilenetv4_conv_medium", "e500_r224_in1k"): (79.094, 94.77, 224, f"{_TIMM_README} 'June 12, 2024' table"),
    ("mobilenetv4_conv_large", "e600_r384_in1k"): (82.952, 96.266, 384, f"{_TIMM_README} 'June 12, 2024' table"),
    ("mobilenetv4_conv_large", "e500_r256_in1k"): (81.862, 95.69, 256, f"{_TIMM_README} 'June 12, 2024' table"),
    ("mobilenetv4_hybrid_medium", "e200_r256_in12k_ft_in1k"): (
        82.364, 96.256, 256, f"{_TIMM_README} 'July 26, 2024' table",
    ),
    ("mobilenetv4_hybrid_medium", "e500_r224_in1k"): (80.442, 95.38, 224, f"{_TIMM_README} 'June 12, 2024' table"),
    ("mobilenetv4_hybrid_medium", "ix_e550_r256_in1k"): (81.446, 95.704, 256, f"{_TIMM_README} 'June 24, 2024' table"),
    ("mobilenetv4_hybrid_medium", "ix_e550_r384_in1k"): (82.968, 96.474, 384, f"{_TIMM_README} 'June 24, 2024' table"),
    ("mobilenetv4_hybrid_large", "ix_e600_r384_in1k"): (83.990, 96.702, 384, f"{_TIMM_README} 'June 24, 2024' table"),
    ("mobilenetv4_hybrid_large", "e600_r384_in1k"): (83.800, 96.770, 384, f"{_TIMM_README} 'June 12, 2024' table"),
}


def _timm(
    arch: str, tag: str, size: int, crop_pct: float, interpolation: str, norm: tuple
) -> PretrainedWeights:
    if arch.startswith("mobilenetv4_"):
        parts = arch.split("_")
        width = int(parts[3]) / 100 if len(parts) == 4 else 1.0
        model = "mobilenet_v4_" + "_".join(parts[1:3])
    else:
        family, _, digits = arch.rpartition("_")
        model, width = _TIMM_OURS[family], int(digits) / 100
    # timm's transforms_factory: scale_size = floor(img_size / crop_pct)
    resize = math.floor(size / crop_pct)
    top1, top5, evaluated_at, where = _TIMM_METRICS.get((arch, tag), (None, None, None, None))
    return PretrainedWeights(
        model, width, f"timm:{tag}", "timm", arch, Preprocessing(size, resize, interpolation, *norm), "apache-2.0",
        hf_hub_id=f"timm/{arch}.{tag}", top1=top1, top5=top5,
        metrics_source=None if where is None else f"{where}; evaluated at {evaluated_at} px",
    )


# ImageNet-1k heads of the archs our converter reproduces (timm's anti-aliased, depth-multiplied, 100h and rw
# variants are other networks); first row per timm arch: timm's default tag
_TIMM = (
    _timm("mobilenetv1_100", "ra4_e3600_r224_in1k", 224, 0.875, "bicubic", INCEPTION),
    _timm("mobilenetv1_125", "ra4_e3600_r224_in1k", 224, 0.9, "bicubic", INCEPTION),
    _timm("mobilenetv2_050", "lamb_in1k", 224, 0.875, "bicubic", IMAGENET),
    _timm("mobilenetv2_100", "ra_in1k", 224, 0.875, "bicubic", IMAGENET),
    _timm("mobilenetv2_140", "ra_in1k", 224, 0.875, "bicubic", IMAGENET),
    _timm("mobilenetv3_large_100", "ra_in1k", 224, 0.875, "bicubic", IMAGENET),
    _timm("mobilenetv3_large_100", "ra4_e3600_r224_in1k", 224, 0.95, "bicubic", INCEPTION),
    _timm("mobilenetv3_large_100", "miil_in21k_ft_in1k", 224, 0.875, "bilinear", RAW),
    _timm("mobilenetv3_small_050", "lamb_in1k", 224, 0.875, "bicubic", IMAGENET),
    _timm("mobilenetv3_small_075", "lamb_in1k", 224, 0.875, "bicubic", IMAGENET),
    _timm("mobilenetv3_small_100", "lamb_in1k", 224, 0.875, "bicubic", IMAGENET),
    _timm("tf_mobilenetv3_large_075", "in1k", 224, 0.875, "bilinear", INCEPTION),
    _timm("tf_mobilenetv3_large_100", "in1k", 224, 0.875, "bilinear", INCEPTION),
    _timm("tf_mobilenetv3_large_minimal_100", "in1k", 224, 0.875, "bilinear", INCEPTION),
    _timm("tf_mobilenetv3_small_075", "in1k", 224, 0.875, "bilinear", INCEPTION),
    _timm("tf_mobilenetv3_small_100", "in1k", 224, 0.875, "bilinear", INCEPTION),
    _timm("tf_mobilenetv3_small_minimal_100", "in1k", 224, 0.875, "bilinear", INCEPTION),
    _timm("mobilenetv4_conv_small", "e2400_r224_in1k", 224, 0.875, "bicubic", IMAGENET),
    _timm("mobilenetv4_conv_small", "e1200_r224_in1k", 224, 0.875, "bicubic", IMAGENET),
    _timm("mobilenetv4_conv_small", "e3600_r256_in1k", 256, 0.95, "bicubic", INCEPTION),
    _timm("mobilenetv4_conv_small_050", "e3000_r224_in1k", 224, 0.875, "bicubic", INCEPTION),
    _timm("mobilenetv4_conv_medium", "e500_r256_in1k", 256, 0.95, "bicubic", IMAGENET),
    _timm("mobilenetv4_conv_medium", "e500_r224_in1k", 224, 0.95, "bicubic", IMAGENET),
    _timm("mobilenetv4_conv_medium", "e250_r384_in12k_ft_in1k", 384, 0.95, "bicubic", IMAGENET),
    _timm("mobilenetv4_conv_large", "e600_r384_in1k", 384, 0.95, "bicubic", IMAGENET),
    _timm("mobilenetv4_conv_large", "e500_r256_in1k", 256, 0.95, "bicubic", IMAGENET),
    _timm("mobilenetv4_hybrid_medium", "e200_r256_in12k_ft_in1k", 256, 0.95, "bicubic", IMAGENET),
    _timm("mobilenetv4_hybrid_medium", "e500_r224_in1k", 224, 0.95, "bicubic", IMAGENET),
    _timm("mobilenetv4_hybrid_medium", "ix_e550_r256_in1k", 256, 0.95, "bicubic", IMAGENET),
    _timm("mobilenetv4_hybrid_medium", "ix_e550_r384_in1k", 384, 0.95, "bicubic", IMAGENET),
    _timm("mobilenetv4_hybrid_large", "ix_e600_r384_in1k", 384, 0.95, "bicubic", IMAGENET),
    _timm("mobilenetv4_hybrid_large", "e600_r384_in1k", 384, 0.95, "bicubic", IMAGENET),
)

# ---- Keras applications --------------------------------------------------------------------------------------

_KERAS = "https://storage.googleapis.com/tensorflow/keras-applications/"
# the TF-slim checkpoints Keras' files were converted from; float rows of the tables named
_SLIM = "github.com/tensorflow/models research/slim/nets/"
_SLIM_V1 = f"{_SLIM}mobilenet_v1.md @02c04f49, 'Pre-trained Models' table"
_SLIM_V2 = f"{_SLIM}mobilenet/README.md @0ba83cf0, 'Mobilenet V2 Imagenet Checkpoints' table"
_SLIM_V3 = f"{_SLIM}mobilenet/README.md @0ba83cf0, 'Mobilenet V3 Imagenet Checkpoints' float rows (top-1 only)"
# (alpha, resolution) -> (top-1, top-5) of the TF-slim checkpoint
_V1_METRICS = {
    (1.0, 224): (70.9, 89.9), (1.0, 192): (70.0, 89.2), (1.0, 160): (68.0, 87.7), (1.0, 128): (65.2, 85.8),
    (0.75, 224): (68.4, 88.2), (0.75, 192): (67.2, 87.3), (0.75, 160): (65.3, 86.0), (0.75, 128): (62.1, 83.9),
    (0.5, 224): (63.3, 84.9), (0.5, 192): (61.7, 83.6), (0.5, 160): (59.1, 81.9), (0.5, 128): (56.3, 79.4),
    (0.25, 224): (49.8, 74.2), (0.25, 192): (47.7, 72.3), (0.25, 160): (45.5, 70.3), (0.25, 128): (41.5, 66.3),
}
# TF-slim published no 1.3 / 1.4 checkpoint below 224; Keras hosts files for them (metrics: None)
_V2_METRICS = {
    (1.4, 224): (75.0, 92.5), (1.3, 224): (74.4, 92.1),
    (1.0, 224): (71.8, 91.0), (1.0, 192): (70.7, 90.1), (1.0, 160): (68.8, 89.0), (1.0, 128): (65.3, 86.9),
    (1.0, 96): (60.3, 83.2),
    (0.75, 224): (69.8, 89.6), (0.75, 192): (68.7, 88.9), (0.75, 160): (66.4, 87.3), (0.75, 128): (63.2, 85.3),
    (0.75, 96): (58.8, 81.6),
    (0.5, 224): (65.4, 86.4), (0.5, 192): (63.9, 85.4), (0.5, 160): (61.0, 83.2), (0.5, 128): (57.7, 80.8),
    (0.5, 96): (51.2, 75.8),
    (0.35, 224): (60.3, 82.9), (0.35, 192): (58.2, 81.2), (0.35, 160): (55.7, 79.1), (0.35, 128): (50.8, 75.0),
    (0.35, 96): (45.5, 70.4),
}
# MobileNetV3 (model, alpha) -> (Keras' model_name, MD5 of the file with top, TF-slim top-1)
_V3 = {
    ("mobilenet_v3_large", 1.0): ("large_224_1.0_float", "59e551e166be033d707958cf9e29a6a7", 75.2),
    ("mobilenet_v3_large", 0.75): ("large_224_0.75_float", "765b44a33ad4005b3ac83185abf1d0eb", 73.3),
    ("mobilenet_v3_large_minimal", 1.0): ("large_minimalistic_224_1.0_float", "675e7b876c45c57e9e63e6d90a36599c", 72.3),
    ("mobilenet_v3_small", 1.0): ("small_224_1.0_float", "8768d4c2e7dee89b9d02b2d03d65d862", 67.5),
    ("mobilenet_v3_small", 0.75): ("small_224_0.75_float", "cb65d4e5be93758266aa0a7f2c6708b7", 65.4),
    ("mobilenet_v3_small_minimal", 1.0): ("small_minimalistic_224_1.0_float", "99cd97fb2fcdad2bf028eb838de69e37", 61.9),
}
_V1_ALPHA_TEXT = {1.0: "1_0", 0.75: "7_5", 0.5: "5_0", 0.25: "2_5"}


def _keras_pre(size: int) -> Preprocessing:
    # TF-slim's evaluation (inception_preprocessing): central crop of 0.875, bilinear resize; [-1, 1] inputs
    return Preprocessing(size, round(size / 0.875), "bilinear", *INCEPTION)


def _keras_v1(alpha: float, size: int) -> PretrainedWeights:
    file = f"mobilenet_{_V1_ALPHA_TEXT[alpha]}_{size}_tf.h5"
    top1, top5 = _V1_METRICS[(alpha, size)]
    return PretrainedWeights(
        "mobilenet_v1", alpha, f"keras:{size}", "keras", "MobileNet", _keras_pre(size), "apache-2.0",
        url=f"{_KERAS}mobilenet/{file}", top1=top1, top5=top5,
        metrics_source=f"{_SLIM_V1}, row MobileNet_v1_{'1.0' if alpha == 1.0 else f'{alpha:.2f}'}_{size}",
    )


def _keras_v2(alpha: float, size: int) -> PretrainedWeights:
    file = f"mobilenet_v2_weights_tf_dim_ordering_tf_kernels_{alpha}_{size}.h5"
    top1, top5 = _V2_METRICS.get((alpha, size), (None, None))
    return PretrainedWeights(
        "mobilenet_v2", alpha, f"keras:{size}", "keras", "MobileNetV2", _keras_pre(size), "apache-2.0",
        url=f"{_KERAS}mobilenet_v2/{file}", top1=top1, top5=top5,
        metrics_source=f"{_SLIM_V2}, row mobilenet_v2_{alpha}_{size}" if top1 is not None else None,
    )


def _keras_v3(model: str, alpha: float) -> PretrainedWeights:
    name, md5, top1 = _V3[(model, alpha)]
    arch = "MobileNetV3" + ("Large" if "large" in model else "Small")
    return PretrainedWeights(
        model, alpha, "keras:224", "keras", arch, _keras_pre(224), "apache-2.0",
        url=f"{_KERAS}mobilenet_v3/weights_mobilenet_v3_{name}.h5", md5=md5, top1=top1, metrics_source=_SLIM_V3,
    )


# first row per (model, width): 224, the resolution Keras loads when none is given
_KERAS_ROWS = (
    *(_keras_v1(alpha, size) for alpha in (1.0, 0.75, 0.5, 0.25) for size in (224, 192, 160, 128)),
    *(_keras_v2(alpha, size) for alpha in (1.4, 1.3, 1.0, 0.75, 0.5, 0.35) for size in (224, 192, 160, 128, 96)),
    *(_keras_v3(model, alpha) for model, alpha in _V3),
)

# Order matters: for each (model, width) the first row is what ``pretrained=True`` takes (torchvision's DEFAULT,
# else timm's default, else Keras at 224), and within a source its first row is what the bare source name takes.
TABLE: tuple[PretrainedWeights, ...] = (*_TORCHVISION, *_TIMM, *_KERAS_ROWS)
