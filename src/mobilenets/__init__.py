"""mobilenets: MobileNet V1 to V4 for PyTorch: build, train, measure, convert and deploy."""

from .layers import (
    ConvNormAct,
    DepthwiseSeparableConv,
    FusedInvertedBottleneck,
    InvertedResidual,
    LayerScale,
    MobileMultiQueryAttention,
    SqueezeExcite,
    UniversalInvertedBottleneck,
    make_divisible,
)
from .api import create_model, load
from .checkpoint import CheckpointError, read_metadata, save
from .models.base import MobileNet, ModelOptions
from .profile import Profile, profile
from .registry import list_models

__version__ = "0.1.0"

__all__ = [
    "CheckpointError",
    "ConvNormAct",
    "DepthwiseSeparableConv",
    "FusedInvertedBottleneck",
    "InvertedResidual",
    "LayerScale",
    "MobileMultiQueryAttention",
    "MobileNet",
    "ModelOptions",
    "Profile",
    "SqueezeExcite",
    "UniversalInvertedBottleneck",
    "create_model",
    "list_models",
    "load",
    "make_divisible",
    "profile",
    "read_metadata",
    "save",
    "__version__",
]
