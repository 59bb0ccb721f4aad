"""What every evaluation loop shares: each sample on one rank, autocast, the progress bar."""

from __future__ import annotations

import contextlib
from typing import Any, Callable, Iterator, Optional

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, Sampler

from .distributed import DistInfo

__all__ = ["ShardSampler", "autocast_context", "progress_bar", "eval_batches"]


class ShardSampler(Sampler[int]):
    """Indices rank, rank + world, ...: each sample evaluated exactly once across ranks (no padding)."""

    def __init__(self, length: int, info: DistInfo) -> None:
        self.indices = list(range(info.rank, length, info.world_size))

    def __iter__(self):
        return iter(self.indices)

    def __len__(self) -> int:
        return len(self.indices)


def autocast_context(device: torch.device, amp_dtype: Optional[torch.dtype]):
    if amp_dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=amp_dtype)


def progress_bar(total: int, desc: str, enabled: bool):
    if not enabled:
        return None
    try:
        from tqdm.auto import tqdm
    except ImportError:
        return None
    return tqdm(total=total, desc=desc, leave=False, dynamic_ncols=True)


def eval_batches(
    model: nn.Module,
    dataset: Dataset,
    *,
    device: torch.device = torch.device("cpu"),
    batch_size: int = 256,
    workers: int = 0,
    limit_batches: Optional[int] = None,
    amp_dtype: Optional[torch.dtype] = None,
    channels_last: bool = False,
    info: DistInfo = DistInfo(),
    progress: bool = False,
    desc: str = "eval",
    forward: Optional[Callable[[torch.Tensor], torch.Tensor]] = None,
    collate_fn: Optional[Callable[[list[Any]], Any]] = None,
) -> Iterator[tuple[torch.Tensor, Any]]:
    """``(outputs, targets)`` of each batch of this rank's shard of ``dataset``: the outputs of ``model`` (or of
    ``forward``, an inference backend of :func:`mobilenets.deploy.make_predictor`) in float32, the targets on
    ``device``; ``model`` is in eval mode until the loop ends. Call it under ``torch.no_grad()``."""
    run = forward if forward is not None else model
    loader = DataLoader(
        dataset, batch_size=batch_size, sampler=ShardSampler(len(dataset), info), num_workers=workers,
        pin_memory=device.type == "cuda", collate_fn=collate_fn,
    )
    was_training = model.training
    model.eval()
    total = len(loader) if limit_batches is None else min(len(loader), limit_batches)
    bar = progress_bar(total, desc, progress and info.is_main)
    try:
        for step, (images, targets) in enumerate(loader):
            if step >= total:
                break
            if isinstance(images, torch.Tensor):
                images = images.to(device, non_blocking=True)
                if channels_last:
                    images = images.contiguous(memory_format=torch.channels_last)
            else:  # a detector's list of images of their own sizes (it batches them itself)
                images = [image.to(device, non_blocking=True) for image in images]
            if isinstance(targets, torch.Tensor):
                targets = targets.to(device, non_blocking=True)
            with autocast_context(device, amp_dtype):
                outputs = run(images)
            yield (outputs.float() if isinstance(outputs, torch.Tensor) else outputs), targets
            if bar is not None:
                bar.update(1)
    finally:
        if bar is not None:
            bar.close()
        model.train(was_training)
