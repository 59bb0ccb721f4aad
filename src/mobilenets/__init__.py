"""mobilenets: MobileNet V1, V2 and V3 for PyTorch: build, train, measure, convert and deploy."""

from .layers import (
    ConvNormAct,
    DepthwiseSeparableConv,
    InvertedResidual,
    SqueezeExcite,
    make_divisible,
)
from .checkpoint import CheckpointError, load, read_metadata, save
from .models.base import MobileNet, ModelOptions
from .profile import Profile, profile
from .registry import create_model, list_models

__version__ = "0.1.0"

__all__ = [
    "CheckpointError",
    "ConvNormAct",
    "DepthwiseSeparableConv",
    "InvertedResidual",
    "MobileNet",
    "ModelOptions",
    "Profile",
    "SqueezeExcite",
    "create_model",
    "list_models",
    "load",
    "make_divisible",
    "profile",
    "read_metadata",
    "save",
    "__version__",
]
