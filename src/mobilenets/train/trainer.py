"""Training: one process or DistributedDataParallel, resumable to the exact same result.

:class:`Trainer` is set up and resumed here; its run (:mod:`.fit`: the folder lock, signals, the test report)
and its epochs (:mod:`.loop`: the loader, one step, validation and checkpoints at the end of an epoch) are
its other two parts.

The run is asked for with a :class:`~.config.TrainConfig`, resolved once into :class:`~.config.Settings`; the
learning rate and image size follow :mod:`.schedule`; the run writes into its output folder
(:mod:`.run_folder`: checkpoints, metrics, results, plots, TensorBoard, the best model), which it locks while
it trains. Every setting, the dataset and the model are checked before the folder is touched.

Exact resume: the training state (:mod:`.state`) holds the model, EMA, optimizer, scheduler, grad scaler, the
position in the epoch, partial epoch sums and the RNG states of torch, numpy and python. The order of samples
comes from a sampler seeded by (seed, epoch) and each sample's augmentation from (seed, epoch, index), so a
run resumed mid-epoch sees the same batches in the same order and ends with the same weights and metrics (on
CPU).
"""

from __future__ import annotations

import dataclasses
import gc
import os
import random
import time
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np
import torch
from torch import nn
from torch.utils.data.distributed import DistributedSampler

from ..checkpoint import CheckpointError, load_weights_into
from ..data import DataBundle
from ..data.image_folder import describe_skipped
from .components import build_model, build_teacher
from .config import RESUMABLE_CHANGES, TrainConfig, pick_device, resolve_settings
from .distributed import cleanup, init_distributed, run_on_main
from .fit import Fitting
from .loop import EpochLoop, TrainingDiverged
from .recipes import build_optimizer, ema_multi_avg_fn, lr_factor_fn
from .run_folder import RUN_FILES, OutputExists, RunFolder, file_id
from .run_lock import OutputInUse
from .schedule import budget_lr_factor
from .state import STATE_FORMAT, STATE_VERSION, EpochSums, read_state, rng_state, set_rng_state
from .tasks import task_for_model

__all__ = ["TrainConfig", "Trainer", "TrainingDiverged", "OutputExists", "OutputInUse", "train", "RUN_FILES",
           "STATE_FORMAT"]


class Trainer(Fitting, EpochLoop):
    """Builds data, model, optimizer from a :class:`TrainConfig` and runs :meth:`fit`."""

    def __init__(
        self,
        config: TrainConfig,
        bundle: Optional[DataBundle] = None,
        log: Callable[[str], None] = print,
        model: Optional[nn.Module] = None,
    ) -> None:
        """``model`` replaces the one named in ``config`` (any module taking the dataset's images, e.g. a
        torchvision model for a side-by-side benchmark); only mobilenets models are exported to .safetensors."""
        config.validate()
        self.config = config
        if config.threads is not None:
            torch.set_num_threads(config.threads)
        self.log_fn = log
        self.output = Path(config.output)
        self.device = pick_device(config.device, int(os.environ.get("LOCAL_RANK", "0")))
        self.dist = init_distributed(self.device)
        if self.device.type == "cuda":
            # fixed input sizes: let cuDNN pick the fastest kernels once (as torchvision's reference scripts do);
            # bitwise-exact resume is promised on the CPU only
            torch.backends.cudnn.benchmark = True
        self.folder = RunFolder(self.output, resume=config.resume, overwrite=config.overwrite, log=self.log)
        # rank 0 owns the folder; every rank stops when it refuses (none is left waiting in a collective)
        run_on_main(self.folder.check, self.dist)
        random.seed(config.seed)
        np.random.seed(config.seed % 2**32)
        torch.manual_seed(config.seed)
        # what differs by the model's task (loss, statistic, evaluation, data, reports): .tasks
        self.task = task_for_model(config.model)
        self.bundle = bundle or self.task.build_data(config)
        if self.bundle.skipped and self.dist.is_main:
            self.log(describe_skipped(self.bundle.skipped))
        self.model = (build_model(config, self.bundle, self.dist.rank, self.task.model_options(self.bundle))
                      if model is None else model).to(self.device)
        if config.init_from is not None and not config.resume:
            try:
                load_weights_into(self.model, config.init_from)
            except CheckpointError as exc:
                raise ValueError(f"--init-from: {exc}") from None
        self.settings = settings = resolve_settings(
            config, model=self.model, image_size=self.bundle.image_size, world_size=self.dist.world_size,
            device=self.device, task=self.task)
        self.task.bind(settings)
        self.teacher = build_teacher(settings, self.bundle)
        if settings.channels_last:
            self.model.to(memory_format=torch.channels_last)
        self.ddp_model: nn.Module = self.model
        if self.dist.enabled:
            self.ddp_model = nn.parallel.DistributedDataParallel(
                self.model, device_ids=[self.device.index] if self.device.type == "cuda" else None
            )
        if config.compile != "off":
            # the training forward and backward only: checkpoints, EMA and evaluation use the plain module
            self.ddp_model = torch.compile(self.ddp_model, mode=config.compile)
        self.optimizer = build_optimizer(self.model, settings.opt, settings.lr, settings.weight_decay)
        self.train_sampler = DistributedSampler(
            self.bundle.train, num_replicas=self.dist.world_size, rank=self.dist.rank, shuffle=True,
            seed=config.seed, drop_last=True,
        )
        full_steps = len(self.train_sampler) // config.batch_size
        if full_steps == 0:
            raise ValueError(
                f"the training split ({len(self.train_sampler)} images per process) is smaller than one batch "
                f"of {config.batch_size}; lower --batch-size"
            )
        self.steps_per_epoch = min(full_steps, config.limit_train_batches or full_steps)
        self.elapsed = 0.0  # wall-clock of fit() so far, agreed across ranks (what the time budget counts)
        self._clock_zero = time.perf_counter()
        self.budget_spent = False
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, self._lr_factor())
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=settings.amp_dtype == torch.float16)
        # the size the last step trained at: under a time budget it followed the clock, so it is kept, not recomputed
        self._last_size: Optional[int] = None
        self.ema: Optional[torch.optim.swa_utils.AveragedModel] = None
        if settings.ema_decay > 0:
            self.ema = torch.optim.swa_utils.AveragedModel(
                self.model, multi_avg_fn=ema_multi_avg_fn(settings.ema_decay), use_buffers=True)
        self.criterion = self.task.criterion
        self.epoch = 0
        self.step_in_epoch = 0
        self.global_step = 0
        self.sums = EpochSums()
        self.history: list[dict[str, Any]] = []
        self.best: dict[str, Any] = {self.task.selection_metric: -1.0, "epoch": None}
        self.train_seconds = 0.0
        self._stop_requested = False
        self._step_active = False
        self.on_step: Optional[Callable[["Trainer"], None]] = None  # hook for tests and callers
        # (epoch, step in epoch) of the training state in last.pt that this run wrote or resumed from
        self._checkpoint_at: Optional[tuple[int, int]] = None
        self._resumed_file: Optional[tuple[int, int]] = None  # file_id of the last.pt read
        if config.resume:
            self._load_state(self.output / "last.pt")

    # shorthands for the resolved settings
    time_budget = property(lambda self: self.settings.time_budget_s, doc="seconds, or None")
    base_lr = property(lambda self: self.settings.lr)
    clip_grad = property(lambda self: self.settings.clip_grad)
    effective = property(lambda self: self.settings.to_dict(), doc="the settings as the training record keeps them")

    # -- setup -----------------------------------------------------------------------------
    def log(self, message: str) -> None:
        if self.dist.is_main:
            self.log_fn(message)

    def _lr_factor(self) -> Callable[[int], float]:
        """The learning-rate multiplier by step: the recipe's schedule by steps, or under a time budget
        :func:`.schedule.budget_lr_factor` of the clock the ranks agreed on in the last step."""
        settings, total = self.settings, self.steps_per_epoch * self.config.epochs
        if settings.time_budget_s is None:
            return lr_factor_fn("exponential" if settings.schedule == "exponential" else "cosine",
                                self.steps_per_epoch, self.config.epochs, settings.warmup_epochs,
                                settings.decay_rate)
        warmup = int(round(settings.warmup_epochs * self.steps_per_epoch))
        return lambda step: budget_lr_factor(step, warmup_steps=warmup, total_steps=total, elapsed=self.elapsed,
                                             time_budget=settings.time_budget_s)

    # -- state: written at each epoch's end and on a stop, read to resume --------------------
    def _state(self) -> dict[str, Any]:
        return {
            "format": STATE_FORMAT,
            "version": STATE_VERSION,
            "config": self.config.to_dict(),
            "epoch": self.epoch,
            "step_in_epoch": self.step_in_epoch,
            "global_step": self.global_step,
            "sums": dataclasses.asdict(self.sums),
            "train_seconds": self.train_seconds,
            "elapsed_seconds": self.elapsed,
            "budget_spent": self.budget_spent,
            "model": self.model.state_dict(),
            "ema": self.ema.state_dict() if self.ema is not None else None,
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
            "history": self.history,
            "best": self.best,
            "class_names": list(self.bundle.class_names),
            "rng": rng_state(),
        }

    def _save_state(self, name: str) -> None:
        if self.dist.is_main:
            self.folder.save_state(name, self._state())
        if name == "last.pt":
            self._checkpoint_at = (self.epoch, self.step_in_epoch)

    def _last_good_state(self) -> str:
        """Where the last consistent training state is, for the messages of a run that stopped; never a file
        this run did not write or resume from."""
        if self._checkpoint_at is None:
            kept = ("the run it was to replace is left as it was" if self.folder.replacing_old_run
                    else "nothing was written")
            return f"{kept} (it stopped before its first checkpoint)"
        epoch, step = self._checkpoint_at
        at = f"epoch {epoch}" if step == 0 else f"epoch {epoch + 1}, step {step}"
        return f"the last good checkpoint is {self.output / 'last.pt'} ({at})"

    def _load_state(self, path: Path) -> None:
        state = read_state(path, self.config.to_dict(), RESUMABLE_CHANGES)
        self.model.load_state_dict(state["model"])
        if self.ema is not None:
            self.ema.load_state_dict(state["ema"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.scaler.load_state_dict(state["scaler"])
        self.epoch = int(state["epoch"])
        self.step_in_epoch = int(state["step_in_epoch"])
        self.global_step = int(state["global_step"])
        # a state of a version without the images count: classification's, which counted images
        self.sums = EpochSums(**{"images": state["sums"]["count"], **state["sums"]})
        self.train_seconds = float(state["train_seconds"])
        self.elapsed = float(state.get("elapsed_seconds", 0.0))
        self.budget_spent = bool(state.get("budget_spent", False))
        self.history = list(state["history"])
        self.best = dict(state["best"])
        set_rng_state(state["rng"])
        if self.dist.enabled:
            # each rank restores the rank-0 generator; re-derive the per-rank dropout streams from it
            torch.manual_seed(int(torch.randint(0, 2**62, (1,)).item()) + self.dist.rank)
        self._checkpoint_at = (self.epoch, self.step_in_epoch)
        self._resumed_file = file_id(path)
        self.log(f"resumed {path} at epoch {self.epoch + 1}, step {self.step_in_epoch}")

    def close(self, completed: bool = True) -> None:
        """End the run's process group (several processes; nothing to do in one).

        After a completed run the DDP wrapper is dropped first, then the group destroyed: the wrapper holds the
        gloo process group, and while it lives the group's worker threads outlive ``destroy_process_group``
        into interpreter shutdown, where a worker still releasing a finished collective's tensors needs the GIL
        of a dying interpreter and the process aborts (SIGABRT) after the run's work is done (docs/training.md,
        "Several processes"). With the wrapper gone the group is destroyed at once and its threads joined.
        After a failed run the wrapper stays: a collective left in flight by the failure would block that
        join."""
        if completed and self.dist.enabled:
            self.ddp_model = self.model
            gc.collect()  # DDP's reducer and module form reference cycles
        cleanup(self.dist)




def train(config: TrainConfig, bundle: Optional[DataBundle] = None, log: Callable[[str], None] = print) -> dict[str, Any]:
    """Train with ``config``; returns the results (test top-1/top-5, paths of the plots and checkpoints)."""
    trainer = Trainer(config, bundle, log)
    completed = False
    try:
        results = trainer.fit()
        completed = True
        return results
    finally:
        trainer.close(completed)
