"""A run's output folder: who may write it, and what a run writes there (rank 0 only).

``last.pt`` / ``best.pt`` (the training state, :mod:`.state`), ``best.safetensors`` (the best model,
self-describing, for ``mobilenets evaluate/predict``), ``metrics.jsonl`` (one line per epoch),
``results.json``, ``curves.png``, ``confusion.png`` and ``tb/`` (TensorBoard, when installed). Every file is
written atomically. The folder is checked before a run reads data (:meth:`RunFolder.check`) and again under
its lock (:meth:`RunFolder.take`, ``train.lock``, :mod:`.run_lock`); its first file is written with the first
checkpoint, so a run that fails before then leaves the folder as it found it (with ``overwrite``, the old run
too).
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import torch
from torch import nn

from ..checkpoint import atomic_write, save
from ..detection.options import DetectionOptions
from ..models.base import MobileNet
from ..segmentation import SegmentationModel
from .config import TrainConfig
from .plots import plot_confusion, plot_curves
from .run_lock import RunLock, ensure_free

__all__ = ["RUN_FILES", "RUN_EXTRAS", "OutputExists", "RunFolder", "file_id", "run_results"]

RUN_FILES = ("last.pt", "best.pt", "best.safetensors", "metrics.jsonl", "results.json")
# what overwrite removes besides RUN_FILES, when the new run writes its first checkpoint
RUN_EXTRAS = ("curves.png", "confusion.png", "tb")


class OutputExists(ValueError):
    """The output folder already holds a run and neither --resume nor --overwrite was given."""


def file_id(path: Path) -> Optional[tuple[int, int]]:
    """(modification time in ns, size) of a file: a run that rewrote it between two looks changed it."""
    try:
        stat = path.stat()
    except FileNotFoundError:
        return None
    return stat.st_mtime_ns, stat.st_size


def run_results(config: TrainConfig, test: Any, task: Any, *, best: dict[str, Any],
                history: Sequence[dict[str, Any]], train_seconds: float, elapsed: float,
                budget_spent: bool) -> dict[str, Any]:
    """What ``train`` returns (and results.json holds, with the paths of plots and model and the per-class
    figures that :meth:`RunFolder.write_results` adds): the test report of the best model (``test``, the
    result of ``task``'s evaluation, :mod:`.tasks`) and how the run went."""
    metric = task.selection_metric
    return {
        "model": config.model,
        "width_mult": config.width_mult,
        "dataset": config.dataset,
        "epochs": config.epochs,
        "best_epoch": best["epoch"],
        f"best_{metric}": best[metric],
        **task.test_scalars(test),
        # a detector's evaluation has no loss (torchvision's SSD computes its losses in training mode only)
        **({"test_loss": test.loss} if getattr(test, "loss", None) is not None else {}),
        "test_images": test.count,
        "train_seconds": train_seconds,
        "elapsed_seconds": elapsed,
        "stopped_by": "time budget" if budget_spent else "epochs",
        "train_images_per_s": (
            sum(r["train_images_per_s"] * r["epoch_train_seconds"] for r in history)
            / max(1e-9, sum(r["epoch_train_seconds"] for r in history))
        ),
        "final": history[-1] if history else {},
        "output": str(Path(config.output)),
    }


class RunFolder:
    """The output folder of one run, on rank 0 (the other ranks never write)."""

    def __init__(self, path: Path, *, resume: bool, overwrite: bool, log: Callable[[str], None]) -> None:
        self.path = Path(path)
        self.resume, self.overwrite, self.log = resume, overwrite, log
        self._lock: Optional[RunLock] = None  # held while the run trains
        self._made = False  # take() created the folder (removed again if the run leaves nothing in it)
        # overwrite: the old run goes when this one writes its first checkpoint, not before
        self.replacing_old_run = False
        self.tb: Any = None
        self._tb_tried = False

    def check(self) -> list[str]:
        """The run files already in the folder, after refusing a folder this run cannot use; reads only."""
        out = self.path
        if out.exists() and not out.is_dir():
            raise ValueError(f"output {out} is a file; give a folder (a new one, or one holding a run to resume)")
        ancestor = next(p for p in (out, *out.parents) if p.exists())
        if not ancestor.is_dir():
            raise ValueError(f"output {out}: {ancestor} is a file, so no folder can be made below it")
        if not os.access(ancestor, os.W_OK | os.X_OK):
            raise ValueError(f"output {out}: no permission to write into {ancestor}")
        if self._lock is None:  # under our own lock there is no one else to ask about
            ensure_free(out)
        existing = [name for name in RUN_FILES if (out / name).exists()]
        if self.resume:
            if not (out / "last.pt").is_file():
                raise FileNotFoundError(f"--resume: {out / 'last.pt'} does not exist; nothing to resume")
        elif existing and not self.overwrite:
            raise OutputExists(
                f"{out} already holds a run ({', '.join(existing)}); pass --resume to continue it or "
                "--overwrite to replace it"
            )
        return existing

    def take(self, resumed_file: Optional[tuple[int, int]]) -> None:
        """Lock the folder (making it if needed) and check it again, now that no other run can change it;
        ``resumed_file`` is the :func:`file_id` of the ``last.pt`` this run resumed from."""
        if not self.path.is_dir():
            self.path.mkdir(parents=True)
            self._made = True
        self._lock = RunLock.acquire(self.path, self.log)
        existing = self.check()
        if resumed_file is not None and resumed_file != file_id(self.path / "last.pt"):
            raise OutputExists(f"{self.path / 'last.pt'} changed since this run read it (another run wrote it); "
                               "resume again")
        self.replacing_old_run = bool(existing) and self.overwrite

    def release(self) -> None:
        if self._lock is None:
            return
        self._lock.release()
        self._lock = None
        if self._made and not any(self.path.iterdir()):
            self.path.rmdir()  # a run that stopped before its first checkpoint leaves no trace

    def _remove_old_run(self) -> None:
        """overwrite: the old run's files go just before this run writes its first checkpoint."""
        if not self.replacing_old_run:
            return
        self.replacing_old_run = False
        for name in RUN_FILES + RUN_EXTRAS:
            path = self.path / name
            if path.is_dir():
                shutil.rmtree(path)
            else:
                path.unlink(missing_ok=True)

    def save_state(self, name: str, state: dict[str, Any]) -> Path:
        self._remove_old_run()
        path = self.path / name
        atomic_write(path, lambda tmp: torch.save(state, tmp))
        return path

    def write_metrics(self, history: Sequence[dict[str, Any]]) -> None:
        """metrics.jsonl = the history of the checkpoint just written, whole and atomically (a resumed run's
        file never keeps epochs a killed run logged after its last.pt)."""
        text = "".join(json.dumps(r) + "\n" for r in history)
        atomic_write(self.path / "metrics.jsonl", lambda tmp: Path(tmp).write_text(text))

    def export_best(self, model: nn.Module, class_names: Sequence[str], training: dict[str, Any]) -> None:
        """best.safetensors, for mobilenets models (another module given to the trainer has no such format)."""
        detector = isinstance(getattr(model, "options", None), DetectionOptions)  # an SSDLite (torchvision's SSD)
        if isinstance(model, (MobileNet, SegmentationModel)) or detector:
            save(model, self.path / "best.safetensors", class_names=list(class_names), training=training)

    def write_results(self, results: dict[str, Any], *, confusion: Optional[torch.Tensor],
                      class_names: Sequence[str], confusion_title: str, history: Sequence[dict[str, Any]],
                      details: dict[str, Any], curves: Any) -> None:
        """The plots, then results.json: ``results`` with the paths of the plots and the model, and ``details``
        (the per-class figures; added to ``results`` too). ``curves``: what :func:`.plots.plot_curves` draws
        beside the loss."""
        if confusion is not None:  # detection has none
            results["confusion_png"] = str(plot_confusion(confusion, class_names, self.path / "confusion.png",
                                                          title=confusion_title))
        results["curves_png"] = str(plot_curves(list(history), self.path / "curves.png", curves))
        results["best_safetensors"] = str(self.path / "best.safetensors")
        results.update(details)
        payload = json.dumps(results, indent=2)
        atomic_write(self.path / "results.json", lambda tmp: Path(tmp).write_text(payload))

    def log_scalars(self, record: dict[str, Any], enabled: bool) -> None:
        """One epoch's record to TensorBoard (``tb/``), opened after the first checkpoint (a run that fails
        before it writes nothing) when ``enabled`` and installed."""
        if enabled and not self._tb_tried:
            self._tb_tried = True
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:
                pass
            else:
                self.tb = SummaryWriter(str(self.path / "tb"))
        if self.tb is not None:
            for key, value in record.items():
                if key not in ("epoch", "step"):
                    self.tb.add_scalar(key, value, record["epoch"])

    def close_tensorboard(self) -> None:
        if self.tb is not None:
            self.tb.close()
            self.tb = None
