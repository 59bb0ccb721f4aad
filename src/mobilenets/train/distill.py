"""Knowledge distillation: a frozen teacher (one checkpoint or the average of several) whose softened class
probabilities the student learns to match beside the labels.

The loss is Hinton et al.'s (arXiv 1503.02531)::

    (1 - w) * cross_entropy(student, labels) + w * T^2 * KL(teacher_T || student_T)

where ``x_T = softmax(logits / T)`` and the ``T^2`` keeps the gradient scale independent of ``T``. Several
teachers are an ensemble: their tempered probabilities are averaged. The teachers see the same augmented batch
as the student ("consistent" distillation, Beyer et al., arXiv 2106.05237), so the targets follow the crop and
flip the student is trained on.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..checkpoint import CheckpointError, load
from ..deploy.prepare import fold_batchnorm

__all__ = ["EnsembleTeacher", "distillation_loss", "load_teachers"]


class EnsembleTeacher(nn.Module):
    """Frozen teachers (batch norm folded, eval mode, no gradients); ``forward`` gives the mean of their
    class probabilities at ``temperature``."""

    def __init__(self, models: Sequence[nn.Module], temperature: float, channels_last: bool = False) -> None:
        super().__init__()
        if not models:
            raise ValueError("distillation needs at least one teacher")
        if not temperature > 0:
            raise ValueError(f"distillation temperature must be > 0, got {temperature}")
        folded = []
        for model in models:
            model = fold_batchnorm(model.eval()).eval()
            if channels_last:
                model = model.to(memory_format=torch.channels_last)
            model.requires_grad_(False)
            folded.append(model)
        self.models = nn.ModuleList(folded)
        self.temperature = float(temperature)

    def train(self, mode: bool = True) -> "EnsembleTeacher":
        return super().train(False)  # always in eval mode: batch norm folded, dropout off

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        probs = None
        for model in self.models:
            p = F.softmax(model(images).float() / self.temperature, dim=1)
            probs = p if probs is None else probs + p
        return probs / len(self.models)


def distillation_loss(student_logits: torch.Tensor, teacher_probs: torch.Tensor, temperature: float) -> torch.Tensor:
    """``T^2 * KL(teacher_probs || softmax(student_logits / T))``, averaged over the batch."""
    log_student = F.log_softmax(student_logits.float() / temperature, dim=1)
    return F.kl_div(log_student, teacher_probs, reduction="batchmean") * temperature**2


def load_teachers(
    paths: Sequence[str | Path], *, num_classes: int, input_size: tuple[int, int, int],
    mean: Sequence[float], std: Sequence[float], class_names: Sequence[str], temperature: float,
    device: torch.device, channels_last: bool,
) -> EnsembleTeacher:
    """Load teacher checkpoints (``.safetensors`` written by mobilenets) and check that each one takes the
    student's input and predicts the student's classes."""
    models = []
    for path in paths:
        path = Path(path)
        try:
            model = load(path)
        except CheckpointError as exc:
            raise ValueError(f"--teacher: {exc}") from None
        info = model.info
        problems = []
        if model.num_classes != num_classes:
            problems.append(f"{model.num_classes} classes, the dataset has {num_classes}")
        if tuple(info.input_size) != tuple(input_size):
            problems.append(f"input {tuple(info.input_size)}, the training images are {tuple(input_size)}")
        if any(abs(a - b) > 1e-6 for a, b in zip(tuple(info.mean) + tuple(info.std), tuple(mean) + tuple(std))):
            problems.append(f"normalisation mean {tuple(info.mean)} std {tuple(info.std)}, "
                            f"the training images use {tuple(mean)} {tuple(std)}")
        names = info.extra.get("class_names")
        if names is not None and list(names) != list(class_names):
            problems.append(f"class names {list(names)[:4]}..., the dataset's are {list(class_names)[:4]}...")
        if problems:
            raise ValueError(f"--teacher {path} does not fit this training run: " + "; ".join(problems))
        models.append(model)
    return EnsembleTeacher(models, temperature, channels_last=channels_last).to(device)
