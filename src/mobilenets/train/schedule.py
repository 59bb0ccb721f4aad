"""Where a run is and what it trains with there, as pure functions of the step and the elapsed time.

Under a time budget (``time_budget``, seconds) the learning rate and the image size follow whichever of the
clock and the steps is further along, so both reach their end at the limit that comes first. ``elapsed`` is
the clock the ranks agreed on in the last step (the trainer's), never this process's own.
"""

from __future__ import annotations

import math
from typing import Optional, Sequence

__all__ = ["run_progress", "budget_lr_factor", "stage_size"]


def run_progress(step: int, total_steps: int, elapsed: float = 0.0, time_budget: Optional[float] = None) -> float:
    """How far the run is, in [0, 1]: ``step`` of ``total_steps``, or with a time budget whichever of that and
    ``elapsed / time_budget`` is further along."""
    progress = step / max(1, total_steps)
    if time_budget is not None:
        progress = max(progress, elapsed / time_budget)
    return min(1.0, progress)


def budget_lr_factor(step: int, *, warmup_steps: int, total_steps: int, elapsed: float, time_budget: float) -> float:
    """The learning-rate multiplier under a time budget: a linear warmup that ends after ``warmup_steps`` or
    10% of the budget, whichever comes first, times a cosine over :func:`run_progress`, so the rate reaches
    zero at the limit (budget or steps) that comes first."""
    by_steps = (step + 1) / warmup_steps if warmup_steps else 1.0
    ramp = min(1.0, max(by_steps, elapsed / (0.1 * time_budget)))
    return ramp * 0.5 * (1.0 + math.cos(math.pi * run_progress(step, total_steps, elapsed, time_budget)))


def stage_size(progress: float, sizes: Sequence[int]) -> int:
    """The image size of progressive resizing at ``progress``: ``sizes`` in equal shares of the run."""
    if not sizes:
        raise ValueError("stage_size needs at least one size")
    return sizes[min(int(progress * len(sizes)), len(sizes) - 1)]
