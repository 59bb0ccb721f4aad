"""Semantic segmentation (issue #23): LR-ASPP and DeepLabv3 heads on MobileNet backbones (docs/segmentation.md)."""

from .heads import ASPP, DeepLabHead, FCNHead, LRASPPHead, PaperPool
from .models import SEGMENTATION_MODELS, SegmentationModel, SegmentationOptions, build_segmentation

__all__ = [
    "ASPP", "DeepLabHead", "FCNHead", "LRASPPHead", "PaperPool", "SEGMENTATION_MODELS", "SegmentationModel",
    "SegmentationOptions", "build_segmentation",
]
