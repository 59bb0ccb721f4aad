"""Multi-process training under ``torchrun``: process group from the environment, rank helpers, reductions.

torchrun sets RANK, LOCAL_RANK, WORLD_SIZE, MASTER_ADDR and MASTER_PORT. gloo runs on CPU, nccl on CUDA.
Without those variables everything degrades to one process, so the same code path trains single-process.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Callable, Optional

import torch
import torch.distributed as dist

__all__ = [
    "DistInfo", "init_distributed", "all_reduce_sum", "broadcast_buffers", "barrier", "params_in_sync", "cleanup",
    "run_on_main",
]


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    local_rank: int = 0
    world_size: int = 1
    backend: str = ""

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init_distributed(device: torch.device) -> DistInfo:
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return DistInfo()
    rank = int(os.environ["RANK"])
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    backend = "nccl" if device.type == "cuda" else "gloo"
    if device.type == "cuda":
        torch.cuda.set_device(local_rank)
    if not dist.is_initialized():
        dist.init_process_group(backend=backend, rank=rank, world_size=world_size)
    return DistInfo(rank, local_rank, world_size, backend)


def all_reduce_sum(tensor: torch.Tensor, info: DistInfo) -> torch.Tensor:
    if info.enabled:
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def barrier(info: DistInfo) -> None:
    if info.enabled:
        dist.barrier()


def run_on_main(fn: Callable[[], object], info: DistInfo) -> None:
    """Call ``fn`` on rank 0 only (what touches the output folder), then raise its exception on every rank:
    a rank that went on alone would wait forever in its next collective for a rank 0 that has stopped."""
    error: Optional[Exception] = None
    if info.is_main:
        try:
            fn()
        except Exception as exc:
            error = exc
    if info.enabled:
        shared = [error]
        dist.broadcast_object_list(shared, src=0)
        error = shared[0]
    if error is not None:
        raise error


def params_in_sync(model: torch.nn.Module, info: DistInfo) -> bool:
    """True when every rank holds bit-identical parameters (DDP keeps them so; a mismatch is a bug)."""
    if not info.enabled:
        return True
    flat = torch.cat([p.detach().float().reshape(-1) for p in model.parameters()])
    reference = flat.clone()
    dist.broadcast(reference, src=0)
    mismatch = torch.tensor([0.0 if torch.equal(flat, reference) else 1.0], device=flat.device)
    dist.all_reduce(mismatch, op=dist.ReduceOp.SUM)
    return mismatch.item() == 0


def broadcast_buffers(module: torch.nn.Module, info: DistInfo) -> None:
    """Rank 0's buffers (BN running statistics) to every rank: DDP syncs them before each forward, so after
    the last step each rank holds its own; evaluation and checkpoints need one model."""
    if not info.enabled:
        return
    for buffer in module.buffers():
        dist.broadcast(buffer, src=0)


def cleanup(info: DistInfo) -> None:
    if info.enabled and dist.is_initialized():
        dist.destroy_process_group()
