"""The training loop: one process or DistributedDataParallel, resumable to the exact same result.

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
import math
import os
import random
import signal
import threading
import time
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader
from torch.utils.data.distributed import DistributedSampler

from ..checkpoint import CheckpointError, load_weights_into
from ..data import DataBundle, build_data
from .config import RESUMABLE_CHANGES, TrainConfig, pick_device, resolve_settings
from .components import SkipSampler, build_model, build_teacher, describe_run
from .distill import distillation_loss
from .distributed import (
    all_reduce_sum, barrier, broadcast_buffers, cleanup, init_distributed, params_in_sync, run_on_main,
)
from .evaluate import EvalResult, autocast_context, run_eval
from .recipes import build_optimizer, ema_multi_avg_fn, lr_factor_fn
from .run_folder import RUN_FILES, OutputExists, RunFolder, file_id, run_results
from .run_lock import OutputInUse
from .schedule import budget_lr_factor, run_progress, stage_size
from .state import STATE_FORMAT, STATE_VERSION, EpochSums, read_state, rng_state, set_rng_state

__all__ = ["TrainConfig", "Trainer", "TrainingDiverged", "OutputExists", "OutputInUse", "train", "RUN_FILES",
           "STATE_FORMAT"]


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite; the last good checkpoint is left untouched."""


class Trainer:
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
        self.bundle = bundle or build_data(
            config.dataset, config.data_dir, val_fraction=config.val_fraction, seed=config.seed,
            image_size=config.image_size, augment=config.augment, random_erasing=config.random_erasing,
            allow_download=config.allow_download,
        )
        if self.bundle.skipped and self.dist.is_main:
            first_path, first_reason = self.bundle.skipped[0]
            self.log(f"skipped {len(self.bundle.skipped)} unreadable image(s); first: {first_path} ({first_reason})")
        self.model = (build_model(config, self.bundle, self.dist.rank) if model is None else model).to(self.device)
        if config.init_from is not None and not config.resume:
            try:
                load_weights_into(self.model, config.init_from)
            except CheckpointError as exc:
                raise ValueError(f"--init-from: {exc}") from None
        self.settings = settings = resolve_settings(
            config, model=self.model, image_size=self.bundle.image_size, world_size=self.dist.world_size,
            device=self.device)
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
        self.criterion = nn.CrossEntropyLoss(label_smoothing=settings.label_smoothing)
        self.epoch = 0
        self.step_in_epoch = 0
        self.global_step = 0
        self.sums = EpochSums()
        self.history: list[dict[str, Any]] = []
        self.best: dict[str, Any] = {"val_top1": -1.0, "epoch": None}
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

    def train_size(self) -> int:
        """The side of the training images at the current step (the image size without progressive sizes)."""
        if self.settings.progressive_sizes is None:
            return self.bundle.image_size
        progress = run_progress(self.global_step, self.steps_per_epoch * self.config.epochs, self.elapsed,
                                self.time_budget)
        return stage_size(progress, self.settings.progressive_sizes)

    def eval_model(self) -> nn.Module:
        return self.ema.module if self.ema is not None else self.model

    # -- state -----------------------------------------------------------------------------
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
        self.sums = EpochSums(**state["sums"])
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

    # -- loop ------------------------------------------------------------------------------
    def request_stop(self) -> None:
        """Finish the current step, save ``last.pt`` and raise KeyboardInterrupt (what Ctrl-C does)."""
        self._stop_requested = True

    def fit(self) -> dict[str, Any]:
        """Train, then report on the test split. The output folder is locked meanwhile, and every way out
        (return, exception, Ctrl-C or SIGTERM) goes through one ``finally`` that closes TensorBoard, releases
        the lock and restores the signal handlers. Ctrl-C and SIGTERM (what schedulers send before preempting
        a job) inside the training loop finish the step and save first; outside it they stop at once."""
        stop_signals = (signal.SIGINT, signal.SIGTERM)
        previous = {sig: signal.getsignal(sig) for sig in stop_signals}
        main_thread = threading.current_thread() is threading.main_thread()
        if main_thread:
            signal.signal(signal.SIGTERM, _interrupt)
        try:
            run_on_main(lambda: self.folder.take(self._resumed_file), self.dist)
            self.log(describe_run(self.config, self.settings, self.bundle, self.model, self.steps_per_epoch))
            if main_thread:
                for sig in stop_signals:
                    signal.signal(sig, self._on_stop_signal)
            try:
                self._clock_zero = time.perf_counter() - self.elapsed  # a resumed run's clock goes on from its state
                while self.epoch < self.config.epochs and not self.budget_spent:
                    self._run_epoch()
            except KeyboardInterrupt:
                if self._step_active:  # a second Ctrl-C inside a step: the state is half-updated, keep the old file
                    self.log(f"stopped inside a step; {self._last_good_state()}")
                else:
                    self._save_state("last.pt")
                    self.log(f"interrupted: saved {self.output / 'last.pt'}; continue with the same command and "
                             "--resume")
                raise
            finally:
                if main_thread:
                    signal.signal(signal.SIGINT, previous[signal.SIGINT])
                    signal.signal(signal.SIGTERM, _interrupt)
            return self._finish()
        finally:
            self.folder.close_tensorboard()
            self.folder.release()
            if main_thread:
                for sig, handler in previous.items():
                    signal.signal(sig, handler)

    def _on_stop_signal(self, signum, frame) -> None:
        if self._stop_requested:  # second Ctrl-C: stop now
            raise KeyboardInterrupt
        self._stop_requested = True

    def _train_loader(self) -> DataLoader:
        self.train_sampler.set_epoch(self.epoch)
        self.bundle.train.set_epoch(self.epoch)
        skip = self.step_in_epoch * self.config.batch_size
        # a private generator: creating the iterator must not consume the global RNG (exact resume)
        generator = torch.Generator().manual_seed(self.config.seed * 1_000 + self.epoch)
        return DataLoader(
            self.bundle.train, batch_size=self.config.batch_size, sampler=SkipSampler(self.train_sampler, skip),
            num_workers=self.settings.workers, drop_last=True, pin_memory=self.device.type == "cuda", generator=generator,
            persistent_workers=False,
        )

    def _run_epoch(self) -> None:
        cfg = self.config
        self.model.train()
        loader = self._train_loader()
        bar = None
        if cfg.progress and self.dist.is_main:
            from tqdm.auto import tqdm

            bar = tqdm(total=self.steps_per_epoch, initial=self.step_in_epoch, desc=f"epoch {self.epoch + 1}/{cfg.epochs}",
                       dynamic_ncols=True, leave=False)
        started = self._epoch_started = time.perf_counter()
        seen_since_start = 0
        try:
            for images, labels in loader:
                if self.step_in_epoch >= self.steps_per_epoch:
                    break
                step_start = time.perf_counter()
                self._step_active = True
                loss_sum, correct = self._train_step(images, labels)
                self._step_active = False
                self.sums.loss += loss_sum
                self.sums.correct += correct
                self.sums.count += labels.numel()
                self.step_in_epoch += 1
                self.global_step += 1
                elapsed = time.perf_counter() - step_start
                self.sums.seconds += elapsed
                self.train_seconds += elapsed
                seen_since_start += labels.numel() * self.dist.world_size
                if bar is not None:
                    rate = seen_since_start / max(1e-9, time.perf_counter() - started)
                    bar.set_postfix(loss=f"{self.sums.loss / self.sums.count:.4f}",
                                    acc=f"{self.sums.correct / self.sums.count:.3f}", img_s=f"{rate:.0f}", refresh=False)
                    bar.update(1)
                if self.on_step is not None:
                    self.on_step(self)
                if self._stop_requested:
                    raise KeyboardInterrupt
                if self.time_budget is not None and self.elapsed >= self.time_budget:
                    self.budget_spent = True  # the epoch ends here, partial: validation, checkpoints, then the test
                    self.log(f"time budget of {cfg.time_budget_min:g} min spent at epoch {self.epoch + 1}, "
                             f"step {self.step_in_epoch} of {self.steps_per_epoch}")
                    break
        finally:
            if bar is not None:
                bar.close()
        self._end_epoch()

    def _train_step(self, images: torch.Tensor, labels: torch.Tensor) -> tuple[float, int]:
        images = images.to(self.device, non_blocking=True)
        labels = labels.to(self.device, non_blocking=True)
        full = images
        size = self._last_size = self.train_size()
        if images.shape[-1] != size:
            # a smaller version of the augmented batch (progressive sizes); antialiased, as torchvision resizes
            images = F.interpolate(images, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
        if self.settings.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
            if self.teacher is not None:
                full = full.contiguous(memory_format=torch.channels_last)
        with autocast_context(self.device, self.settings.amp_dtype):
            logits = self.ddp_model(images)
            loss = self.criterion(logits.float(), labels)
            if self.teacher is not None:
                # the teachers see the same augmented batch (consistent targets), at the size they were trained
                # at; no gradients reach them
                weight = self.settings.distill.weight
                loss = (1.0 - weight) * loss + weight * distillation_loss(
                    logits, self.teacher(full), self.teacher.temperature)
        # one all-reduce carries the loss (every rank sees a NaN anywhere) and this rank's clock (the mean is
        # the elapsed time all ranks agree on, so they take the same learning rate and stop at the same step)
        check = torch.stack([loss.detach().double().reshape(()),
                             torch.tensor(time.perf_counter() - self._clock_zero, dtype=torch.float64, device=loss.device)])
        all_reduce_sum(check, self.dist)
        total_loss, clock_sum = check.tolist()
        self.elapsed = clock_sum / self.dist.world_size
        if not math.isfinite(total_loss):
            raise TrainingDiverged(
                f"loss became {total_loss} at epoch {self.epoch + 1}, step {self.step_in_epoch + 1}; stopped: "
                f"{self._last_good_state()}. Try a lower --lr or --clip-grad 1.0"
            )
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        if self.clip_grad:
            self.scaler.unscale_(self.optimizer)
            nn.utils.clip_grad_norm_(self.model.parameters(), self.clip_grad)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.scheduler.step()
        if self.ema is not None:
            self.ema.update_parameters(self.model)
        correct = int((logits.detach().argmax(dim=1) == labels).sum().item())
        return float(loss.item()) * labels.numel(), correct

    def _end_epoch(self) -> None:
        cfg = self.config
        sums = self.sums.as_tensor().to(self.device)
        all_reduce_sum(sums, self.dist)
        loss_sum, correct, count = sums.tolist()
        broadcast_buffers(self.model, self.dist)
        if self.ema is not None:
            broadcast_buffers(self.ema, self.dist)
        record: dict[str, Any] = {
            "epoch": self.epoch + 1,
            "step": self.global_step,
            "lr": self.optimizer.param_groups[0]["lr"],
            "train_loss": loss_sum / count,
            "train_top1": correct / count,
            "train_images_per_s": count / max(1e-9, self.sums.seconds),
            "epoch_train_seconds": self.sums.seconds,
        }
        if self.settings.progressive_sizes is not None:
            record["train_size"] = self._last_size
        if self.bundle.val is not None:
            val = self._evaluate(self.bundle.val, cfg.limit_val_batches, "val")
            record.update(val_loss=val.loss, val_top1=val.top1, val_top5=val.top5)
        # wall-clock of the epoch in this process: data, steps and validation (a resumed epoch: its remainder)
        record["epoch_seconds"] = time.perf_counter() - self._epoch_started
        if self.time_budget is not None and not self.budget_spent:
            # spent during validation: stop here rather than after one more step and one more validation
            clock = torch.tensor([time.perf_counter() - self._clock_zero], dtype=torch.float64, device=self.device)
            all_reduce_sum(clock, self.dist)
            self.elapsed = clock.item() / self.dist.world_size
            self.budget_spent = self.elapsed >= self.time_budget
        self.history.append(record)
        self.epoch += 1
        self.step_in_epoch = 0
        self.sums = EpochSums()
        if "val_top1" in record:
            is_best = record["val_top1"] > self.best["val_top1"]
            if is_best:
                self.best = {"val_top1": record["val_top1"], "epoch": record["epoch"]}
        else:
            # no validation split (val_fraction 0): nothing to select with, so the latest epoch is the model
            # kept (training accuracy under augmentation would be a biased judge)
            is_best = True
            self.best = {"val_top1": None, "epoch": record["epoch"]}
        self._save_state("last.pt")
        if is_best and self.dist.is_main:
            self.folder.save_state("best.pt", self._state())
            self.folder.export_best(self.eval_model(), self.bundle.class_names, self.training_record())
        if self.dist.is_main:
            self.folder.write_metrics(self.history)
            shown = f", val top-1 {record['val_top1']:.2%}" if "val_top1" in record else ""
            self.log(
                f"epoch {record['epoch']}/{cfg.epochs}: train loss {record['train_loss']:.4f}, "
                f"train top-1 {record['train_top1']:.2%}{shown}, {record['train_images_per_s']:.0f} img/s"
                + (f" at {record['train_size']} px" if "train_size" in record else "")
                + (f", {self.elapsed / 60:.1f} of {cfg.time_budget_min:g} min" if self.time_budget else "")
                + (" (best)" if is_best and "val_top1" in record else "")
            )
            self.folder.log_scalars(record, cfg.tensorboard)
        barrier(self.dist)

    def _evaluate(self, dataset, limit: Optional[int], desc: str) -> EvalResult:
        settings = self.settings
        return run_eval(
            self.eval_model(), dataset, self.bundle.num_classes, device=self.device,
            batch_size=max(256, self.config.batch_size), workers=settings.workers, limit_batches=limit,
            amp_dtype=settings.amp_dtype, channels_last=settings.channels_last, info=self.dist,
            progress=self.config.progress, desc=desc,
        )

    def training_record(self) -> dict[str, Any]:
        cfg = self.config
        return {
            "dataset": cfg.dataset,
            "data_dir": cfg.data_dir,
            "val_fraction": cfg.val_fraction,
            "seed": cfg.seed,
            "recipe": cfg.recipe,
            "epochs": cfg.epochs,
            "batch_size": cfg.batch_size,
            "effective": self.effective,
            "best_epoch": self.best["epoch"],
            "best_val_top1": self.best["val_top1"],
            "eval_resize": self.bundle.eval_resize,
            "train_seconds": self.train_seconds,
        }

    def _finish(self) -> dict[str, Any]:
        """Test-set report of the best model, plots, results.json."""
        cfg = self.config
        # every rank loads the best weights so the sharded test evaluation uses the same model
        barrier(self.dist)
        if self.dist.enabled and not params_in_sync(self.model, self.dist):
            raise RuntimeError("DDP replicas diverged: parameters differ between ranks")
        if not (self.output / "best.pt").exists():
            raise RuntimeError(f"{self.output / 'best.pt'} is missing; the run saved no epoch")
        best_state = torch.load(self.output / "best.pt", map_location="cpu", weights_only=True)
        model = self.eval_model()
        current = {k: v.clone() for k, v in model.state_dict().items()}
        if self.ema is not None:
            self.ema.load_state_dict(best_state["ema"])
        else:
            self.model.load_state_dict(best_state["model"])
        test = self._evaluate(self.bundle.test, cfg.limit_val_batches, "test")
        results = run_results(cfg, test, best=self.best, history=self.history, train_seconds=self.train_seconds,
                              elapsed=self.elapsed, budget_spent=self.budget_spent)
        if self.dist.is_main:
            self.folder.export_best(model, self.bundle.class_names,
                                    {**self.training_record(), "test_top1": test.top1, "test_top5": test.top5})
            self.folder.write_results(
                results, confusion=test.confusion, class_names=self.bundle.class_names, history=self.history,
                confusion_title=f"{cfg.model} on {cfg.dataset} test: top-1 {test.top1:.2%}",
                per_class=test.to_dict(self.bundle.class_names)["per_class"])
        model.load_state_dict(current)
        return results

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


def _interrupt(signum, frame) -> None:
    raise KeyboardInterrupt


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
