"""Object detection (issue #24): SSDLite on MobileNet backbones, on torchvision's SSD (docs/detection.md).

The models (:mod:`mobilenets.detection.models`) need torchvision; this package's options and registered names
(:mod:`.options`) do not, so the registry imports them on torch alone."""

from .options import DETECTION_MODELS, PAPER_FIGURES, DetectionOptions

__all__ = ["DETECTION_MODELS", "PAPER_FIGURES", "DetectionOptions"]
