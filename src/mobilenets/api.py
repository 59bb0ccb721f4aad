"""The package's two ways to a model with weights, wherever the weights are: :func:`create_model` (a
registered name, with ``pretrained=`` a path or published weights) and :func:`load` (a mobilenets checkpoint,
a file or a Hugging Face Hub repository). Exported as ``mobilenets.create_model`` and ``mobilenets.load``.

They sit above the registry and checkpoints (which know nothing of published weights or the Hub) and beside
:mod:`.weights` and :mod:`.hub`, which they call.
"""

from __future__ import annotations

from typing import Any, Optional, Sequence, Union

import torch

from . import checkpoint, registry
from .checkpoint import PathLike, load_weights_into
from .hub import hub_download
from .models.base import MobileNet, MobileNetFeatures
from .weights import create_pretrained, is_weights_tag

__all__ = ["create_model", "load"]


def create_model(
    name: str,
    pretrained: Union[None, bool, str, PathLike] = None,
    features_only: bool = False,
    out_indices: Optional[Sequence[int]] = None,
    feature_location: Optional[str] = None,
    **options: Any,
) -> Union[MobileNet, MobileNetFeatures]:
    """Build a registered model. ``options`` are those of :class:`ModelOptions`; an unknown one raises.

    ``pretrained`` is a path to a checkpoint (.safetensors, or .pth/.pt loaded with ``weights_only=True``)
    whose tensors must match the architecture exactly; ``True`` takes the model's default published weights and
    ``"torchvision"``, ``"timm:ra4_e3600_r224_in1k"``, ``"keras:160"`` ... a source (its default) or a tag
    (:mod:`mobilenets.weights`: downloaded, converted and cached once).

    ``features_only=True`` returns a :class:`MobileNetFeatures` backbone whose ``forward`` gives the maps of
    ``feature_info``: ``out_indices`` picks them (all five by default), ``feature_location`` takes stage outputs
    (``"bottleneck"``, the default) or the input of each stage's last projection conv (``"expansion"``). With
    ``pretrained`` the checkpoint's classification head (``head_fc``, ``classifier``) is not loaded, its
    backbone tensors must match.
    """
    registry.check_features_only(name, features_only)
    location = registry.feature_location_of(features_only, out_indices, feature_location)
    if is_weights_tag(pretrained):
        return create_pretrained(name, pretrained, options, features_only, out_indices, location)
    model = registry.create_model(name, **options)
    if pretrained is not None and pretrained is not False:
        load_weights_into(model, pretrained, backbone_only=features_only)
    return MobileNetFeatures(model, out_indices, location) if features_only else model


def load(
    path: PathLike,
    map_location: Union[str, torch.device] = "cpu",
    *,
    features_only: bool = False,
    out_indices: Optional[Sequence[int]] = None,
    feature_location: Optional[str] = None,
    output_stride: Optional[int] = None,
) -> Union[MobileNet, MobileNetFeatures]:
    """:func:`mobilenets.checkpoint.load` (the same arguments), where ``path`` may also be
    ``"hf-hub:ORG/NAME[@REVISION]"``: a Hugging Face Hub repository holding a mobilenets ``model.safetensors``
    (:mod:`mobilenets.hub`, fetched into huggingface_hub's cache)."""
    if isinstance(path, str) and path.startswith("hf-hub:"):
        path = hub_download(path)
    return checkpoint.load(path, map_location, features_only=features_only, out_indices=out_indices,
                           feature_location=feature_location, output_stride=output_stride)
