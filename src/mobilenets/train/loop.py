"""The epochs of a run: the loader, one optimizer step, and the end of an epoch (validation, the best model,
checkpoints, metrics).

:class:`EpochLoop` is a part of :class:`~.trainer.Trainer`; the trainer's setup makes the attributes it uses
(model, optimizer, scheduler, sums, folder, settings...), and it saves through the trainer's
``_save_state``.
"""

from __future__ import annotations

import math
import time
from typing import Any, Optional

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader

from .components import SkipSampler
from .distill import distillation_loss
from .distributed import all_reduce_sum, barrier, broadcast_buffers
from .eval_common import autocast_context
from .schedule import run_progress, stage_size
from .state import EpochSums


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite; the last good checkpoint is left untouched."""


class EpochLoop:
    """The training epochs of :class:`~.trainer.Trainer`: ``_run_epoch`` trains from the current position to
    the end of the epoch (or the time budget) and ends it."""

    def train_size(self) -> int:
        """The side of the training images at the current step (the image size without progressive sizes)."""
        if self.settings.progressive_sizes is None:
            return self.bundle.image_size
        progress = run_progress(self.global_step, self.steps_per_epoch * self.config.epochs, self.elapsed,
                                self.time_budget)
        return stage_size(progress, self.settings.progressive_sizes)

    def eval_model(self) -> nn.Module:
        """The model validated, tested and exported: the EMA when there is one."""
        return self.ema.module if self.ema is not None else self.model

    def _train_loader(self) -> DataLoader:
        self.train_sampler.set_epoch(self.epoch)
        self.bundle.train.set_epoch(self.epoch)
        skip = self.step_in_epoch * self.config.batch_size
        # a private generator: creating the iterator must not consume the global RNG (exact resume)
        generator = torch.Generator().manual_seed(self.config.seed * 1_000 + self.epoch)
        return DataLoader(
            self.bundle.train, batch_size=self.config.batch_size, sampler=SkipSampler(self.train_sampler, skip),
            num_workers=self.settings.workers, drop_last=True, pin_memory=self.device.type == "cuda", generator=generator,
            persistent_workers=False, collate_fn=self.task.collate_fn,
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
            for batch in loader:
                if self.step_in_epoch >= self.steps_per_epoch:
                    break
                step_start = time.perf_counter()
                self._step_active = True
                loss_sum, hits, total, images = self._train_step(batch)
                self._step_active = False
                self.sums.loss += loss_sum
                self.sums.correct += hits
                self.sums.count += total
                self.sums.images += images
                self.step_in_epoch += 1
                self.global_step += 1
                elapsed = time.perf_counter() - step_start
                self.sums.seconds += elapsed
                self.train_seconds += elapsed
                seen_since_start += images * self.dist.world_size
                if bar is not None:
                    rate = seen_since_start / max(1e-9, time.perf_counter() - started)
                    shown = {"acc": f"{self.sums.correct / self.sums.count:.3f}"} if self.sums.count else {}
                    bar.set_postfix(loss=f"{self.sums.loss / self.sums.images:.4f}", **shown, img_s=f"{rate:.0f}",
                                    refresh=False)
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

    def _train_step(self, batch: Any) -> tuple[float, int, int, int]:
        """One optimizer step on ``batch``; returns (mean loss x images, the task's statistic as hits and
        total, images)."""
        size = self._last_size = self.train_size()
        if self.settings.progressive_sizes is None and self.teacher is None:
            inputs, targets, images = self.task.to_device(batch, self.device, self.settings.channels_last)
        else:  # classification only (other tasks refuse progressive sizes and teachers)
            inputs, targets = (t.to(self.device, non_blocking=True) for t in batch)
            images = targets.numel()
            full = inputs
            if inputs.shape[-1] != size:
                # a smaller version of the augmented batch (progressive sizes); antialiased, as torchvision resizes
                inputs = F.interpolate(inputs, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
            if self.settings.channels_last:
                inputs = inputs.contiguous(memory_format=torch.channels_last)
                if self.teacher is not None:
                    full = full.contiguous(memory_format=torch.channels_last)
        with autocast_context(self.device, self.settings.amp_dtype):
            out = self.task.step(self.ddp_model, inputs, targets)
            loss = out.loss
            if self.teacher is not None:
                # the teachers see the same augmented batch (consistent targets), at the size they were trained
                # at; no gradients reach them
                weight = self.settings.distill.weight
                loss = (1.0 - weight) * loss + weight * distillation_loss(
                    out.outputs, self.teacher(full), self.teacher.temperature)
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
        return float(loss.item()) * images, int(out.hits), int(out.total), images

    def _end_epoch(self) -> None:
        cfg = self.config
        sums = self.sums.as_tensor().to(self.device)
        all_reduce_sum(sums, self.dist)
        loss_sum, correct, count, images = sums.tolist()
        broadcast_buffers(self.model, self.dist)
        if self.ema is not None:
            broadcast_buffers(self.ema, self.dist)
        record: dict[str, Any] = {
            "epoch": self.epoch + 1,
            "step": self.global_step,
            "lr": self.optimizer.param_groups[0]["lr"],
            "train_loss": loss_sum / images,
        }
        if self.task.train_statistic is not None:
            record[f"train_{self.task.train_statistic}"] = correct / max(1.0, count)
        record.update(train_images_per_s=images / max(1e-9, self.sums.seconds), epoch_train_seconds=self.sums.seconds)
        if self.settings.progressive_sizes is not None:
            record["train_size"] = self._last_size
        if self.bundle.val is not None:
            val = self._evaluate(self.bundle.val, cfg.limit_val_batches, "val")
            record.update({f"val_{key}": value for key, value in val.scalars().items()})
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
        metric = self.task.selection_metric
        if metric in record:
            is_best = record[metric] > self.best[metric]
            if is_best:
                self.best = {metric: record[metric], "epoch": record["epoch"]}
        else:
            # no validation split (val_fraction 0): nothing to select with, so the latest epoch is the model
            # kept (training accuracy under augmentation would be a biased judge)
            is_best = True
            self.best = {metric: None, "epoch": record["epoch"]}
        self._save_state("last.pt")
        if is_best and self.dist.is_main:
            self.folder.save_state("best.pt", self._state())
            self.folder.export_best(self.eval_model(), self.bundle.class_names, self.training_record())
        if self.dist.is_main:
            self.folder.write_metrics(self.history)
            self.log(
                f"epoch {record['epoch']}/{cfg.epochs}: train loss {record['train_loss']:.4f}, "
                f"{self.task.epoch_summary(record)}, {record['train_images_per_s']:.0f} img/s"
                + (f" at {record['train_size']} px" if "train_size" in record else "")
                + (f", {self.elapsed / 60:.1f} of {cfg.time_budget_min:g} min" if self.time_budget else "")
                + (" (best)" if is_best and metric in record else "")
            )
            self.folder.log_scalars(record, cfg.tensorboard)
        barrier(self.dist)

    def _evaluate(self, dataset, limit: Optional[int], desc: str) -> Any:
        """The task's result (:meth:`.tasks.Task.evaluate`) of the model kept on ``dataset``."""
        settings = self.settings
        return self.task.evaluate(
            self.eval_model(), dataset, self.bundle, device=self.device,
            batch_size=self.task.eval_batch_size(self.config.batch_size), workers=settings.workers, limit_batches=limit,
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
            f"best_{self.task.selection_metric}": self.best[self.task.selection_metric],
            "eval_resize": self.bundle.eval_resize,
            "train_seconds": self.train_seconds,
        }

