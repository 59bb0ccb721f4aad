"""PNG plots of a run: learning curves and the confusion matrix (matplotlib, Agg backend, atomic writes)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ..checkpoint import atomic_write

__all__ = ["Curves", "TOP1_CURVES", "plot_curves", "plot_confusion"]


@dataclass(frozen=True)
class Curves:
    """What the right panel of curves.png shows: ``series`` of (record key, legend) as percentages."""

    ylabel: str
    series: tuple[tuple[str, str], ...]
    train_loss_label: str = "train"


TOP1_CURVES = Curves("top-1 accuracy (%)", (("train_top1", "train (augmented)"), ("val_top1", "validation")),
                     "train (with label smoothing)")


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_curves(history: list[dict[str, Any]], path: Path, curves: Curves = TOP1_CURVES) -> Path:
    """Loss and (``curves``) top-1 per epoch, train beside validation."""
    plt = _pyplot()

    epochs = [r["epoch"] for r in history]
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(10, 4))
    ax_loss.plot(epochs, [r["train_loss"] for r in history], "o-", label=curves.train_loss_label)
    if history and "val_loss" in history[0]:
        ax_loss.plot(epochs, [r["val_loss"] for r in history], "s-", label="validation")
    ax_loss.set_xlabel("epoch")
    ax_loss.set_ylabel("cross-entropy")
    ax_loss.legend()
    for (key, label), marker in zip(curves.series, ("o-", "s-", "^-", "v-")):
        if history and key in history[0]:
            ax_acc.plot(epochs, [r[key] * 100 for r in history], marker, label=label)
    ax_acc.set_xlabel("epoch")
    ax_acc.set_ylabel(curves.ylabel)
    ax_acc.legend()
    from matplotlib.ticker import MaxNLocator

    for ax in (ax_loss, ax_acc):
        ax.grid(alpha=0.3)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=110, format="png"))
    plt.close(fig)
    return path


def plot_confusion(confusion: torch.Tensor, class_names: list[str], path: Path, title: str = "") -> Path:
    """Row-normalised confusion matrix as a PNG (counts in the cells when there are at most 20 classes)."""
    plt = _pyplot()

    n = confusion.shape[0]
    rates = confusion.double() / confusion.sum(dim=1, keepdim=True).clamp(min=1)
    size = min(24.0, max(5.0, 0.45 * n + 2))
    fig, ax = plt.subplots(figsize=(size, size * 0.9))
    im = ax.imshow(rates.numpy(), cmap="Blues", vmin=0.0, vmax=1.0)
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04, label="fraction of the true class")
    if n <= 50:
        ax.set_xticks(range(n), labels=class_names, rotation=60, ha="right", fontsize=8)
        ax.set_yticks(range(n), labels=class_names, fontsize=8)
    if n <= 20:
        for i in range(n):
            for j in range(n):
                value = int(confusion[i, j])
                if value:
                    ax.text(j, i, str(value), ha="center", va="center", fontsize=7,
                            color="white" if rates[i, j] > 0.5 else "black")
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=110, format="png"))
    plt.close(fig)
    return path
