"""The training state file (``last.pt``/``best.pt``): its format tag, the partial sums of an epoch, the RNG
states that make a resumed run repeat an uninterrupted one, and the weights it holds. Read by the trainer
(resume) and by evaluate/predict (a state given as a checkpoint)."""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Collection

import numpy as np
import torch

from ..checkpoint import TRAIN_STATE_FORMAT as STATE_FORMAT
from ..checkpoint import is_training_state

__all__ = ["STATE_FORMAT", "STATE_VERSION", "EpochSums", "is_training_state", "read_state", "rng_state",
           "set_rng_state", "state_weights"]

STATE_VERSION = 1


def read_state(path: Path, config: dict[str, Any], resumable: Collection[str]) -> dict[str, Any]:
    """The training state in ``path`` for a run with ``config`` to resume; refused when unreadable, not a
    training state, or saved with other settings than ``config`` (but those named in ``resumable``)."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise ValueError(f"{path}: unreadable training state ({str(exc).splitlines()[0]})") from None
    if not is_training_state(state):
        raise ValueError(f"{path}: not a mobilenets training state")
    saved = state["config"]
    changed = [f"{k}: {saved.get(k)!r} -> {v!r}" for k, v in config.items()
               if k not in resumable and saved.get(k) != v]
    if changed:
        raise ValueError(
            f"--resume with different settings from the saved run ({'; '.join(changed)}); "
            "resume with the original command, or start a new --output"
        )
    return state


@dataclass
class EpochSums:
    """This process's sums over the steps of the current epoch (summed over the ranks when it ends)."""

    loss: float = 0.0  # the mean loss of each step times its images
    correct: int = 0  # the task's training statistic: hits (top-1: images; pixel accuracy: pixels)
    count: int = 0  # and what they are counted among
    seconds: float = 0.0
    images: int = 0

    def as_tensor(self) -> torch.Tensor:
        return torch.tensor([self.loss, self.correct, self.count, self.images], dtype=torch.float64)


def rng_state() -> dict[str, Any]:
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": [kind, torch.from_numpy(keys.astype(np.int64)), int(pos), int(has_gauss), float(cached)],
        "python": random.getstate(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def state_weights(state: dict[str, Any], ema: bool = True) -> dict[str, torch.Tensor]:
    """The model's tensors in a training state (``last.pt``/``best.pt``): its EMA weights, or its raw ones."""
    if not ema:
        return state["model"]
    # AveragedModel's state: the averaged module's tensors under "module.", plus its update counter
    return {k[len("module."):]: v for k, v in state["ema"].items() if k.startswith("module.")}
