"""What a run trains, built from its config and settings: the model (carrying how to feed it), the teachers
to distill from, and the order of the training samples (resumable mid-epoch)."""

from __future__ import annotations

from typing import Any, Iterator, Optional

import torch
from torch import nn
from torch.utils.data import Sampler
from torch.utils.data.distributed import DistributedSampler

from ..data import DataBundle
from ..models.base import MobileNet
from ..registry import create_model
from .config import Settings, TrainConfig
from .distill import EnsembleTeacher, load_teachers

__all__ = ["SkipSampler", "build_model", "build_teacher", "describe_run"]


def build_model(config: TrainConfig, bundle: DataBundle, rank: int,
                task_options: Optional[dict[str, Any]] = None) -> MobileNet:
    """The model ``config`` names, sized for ``bundle`` (and ``task_options``: the task's, e.g. a detector's
    ``image_size``); it records the input size, mean, std and class names of the data, so a checkpoint explains
    itself."""
    options: dict[str, Any] = {
        "num_classes": bundle.num_classes,
        "in_chans": bundle.in_chans,
        "width_mult": config.width_mult,
        "small_input": bundle.small_input if config.small_input is None else config.small_input,
    }
    for name in ("dropout", "drop_path_rate", "bn_momentum"):
        if getattr(config, name) is not None:
            options[name] = getattr(config, name)
    options.update(task_options or {})
    model = create_model(config.model, **options)
    model.info = model.info.updated(
        input_size=(bundle.in_chans, bundle.image_size, bundle.image_size), mean=bundle.mean, std=bundle.std,
        extra={"class_names": list(bundle.class_names)},
    )
    # different dropout/drop-path draws per rank; identical weights come from DDP's broadcast
    torch.manual_seed(config.seed + rank)
    return model


def build_teacher(settings: Settings, bundle: DataBundle) -> Optional[EnsembleTeacher]:
    """The frozen teachers to distill from (None without), checked against the data."""
    distill = settings.distill
    if distill is None:
        return None
    return load_teachers(
        list(distill.teachers), num_classes=bundle.num_classes,
        input_size=(bundle.in_chans, bundle.image_size, bundle.image_size), mean=bundle.mean, std=bundle.std,
        class_names=bundle.class_names, temperature=distill.temperature, device=settings.device,
        channels_last=settings.channels_last,
    )


def describe_run(config: TrainConfig, settings: Settings, bundle: DataBundle, model: nn.Module,
                 steps_per_epoch: int) -> str:
    """The line a run starts its log with: model, data, length, recipe as resolved, machine."""
    params = sum(p.numel() for p in model.parameters())
    clip = ""
    if settings.clip_grad:
        clip = f", gradient norm clipped to {settings.clip_grad:g}" + (
            " (for this model's batch-normed pooled head)" if config.clip_grad is None else "")
    return (
        f"training {config.model if hasattr(model, 'info') else type(model).__name__} (width "
        f"{config.width_mult}, {params / 1e6:.2f}M params) on {bundle.name}: {len(bundle.train)} train / "
        f"{len(bundle.val) if bundle.val is not None else 0} val / {len(bundle.test)} test images, "
        f"{config.epochs} epochs x {steps_per_epoch} steps, recipe {config.recipe} ({settings.opt}, lr "
        f"{settings.lr:.4g}{clip}), device {settings.device}, {settings.world_size} process(es)"
        + (f", time budget {config.time_budget_min:g} min (epochs: upper bound)" if settings.time_budget_s else "")
        + (f"; training images at {', '.join(map(str, settings.progressive_sizes))} px in equal shares of the run"
           if settings.progressive_sizes else "")
        + ("; no validation split: the last epoch is the model kept" if bundle.val is None else "")
    )


class SkipSampler(Sampler[int]):
    """The epoch's order from ``DistributedSampler`` without its first ``skip`` indices (mid-epoch resume)."""

    def __init__(self, sampler: DistributedSampler, skip: int) -> None:
        self.sampler, self.skip = sampler, skip

    def __iter__(self) -> Iterator[int]:
        for i, index in enumerate(self.sampler):
            if i >= self.skip:
                yield index

    def __len__(self) -> int:
        return max(0, len(self.sampler) - self.skip)
