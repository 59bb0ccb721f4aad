"""The training loop: one process or DistributedDataParallel, resumable to the exact same result.

A run writes into its output folder (rank 0 only):
``last.pt`` / ``best.pt`` (full training state, written atomically), ``best.safetensors`` (the best model,
self-describing, for ``mobilenets evaluate/predict``), ``metrics.jsonl`` (one line per epoch), ``curves.png``,
``confusion.png``, ``results.json`` and ``tb/`` (TensorBoard, when installed). Every setting, the dataset and
the model are checked before the folder is touched; the run locks the folder (``train.lock``, see
:mod:`.run_lock`) while it trains, and writes its first file with its first checkpoint, so a run that fails
before then leaves the folder as it found it (with ``overwrite``, the old run too).

Exact resume: the training state holds the model, EMA, optimizer, scheduler, grad scaler, the position in
the epoch, partial epoch sums and the RNG states of torch, numpy and python. The order of samples comes from
a sampler seeded by (seed, epoch) and each sample's augmentation from (seed, epoch, index), so a run resumed
mid-epoch sees the same batches in the same order and ends with the same weights and metrics (on CPU).
"""

from __future__ import annotations

import dataclasses
import gc
import json
import math
import numbers
import os
import random
import shutil
import signal
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Optional

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Sampler
from torch.utils.data.distributed import DistributedSampler

from ..checkpoint import CheckpointError, atomic_write, load_weights_into
from ..data import DataBundle, build_data, dataset_name
from .distill import EnsembleTeacher, distillation_loss, load_teachers
from .distributed import (
    all_reduce_sum, barrier, broadcast_buffers, cleanup, init_distributed, params_in_sync, run_on_main,
)
from .evaluate import EvalResult, autocast_context, run_eval
from .plots import plot_confusion, plot_curves
from .recipes import build_optimizer, default_clip_grad, ema_multi_avg_fn, lr_factor_fn, resolve_recipe
from .run_lock import OutputInUse, RunLock, ensure_free

__all__ = ["TrainConfig", "Trainer", "TrainingDiverged", "OutputExists", "OutputInUse", "train", "RUN_FILES"]

STATE_FORMAT = "mobilenets-train-state"
STATE_VERSION = 1
RUN_FILES = ("last.pt", "best.pt", "best.safetensors", "metrics.jsonl", "results.json")
# what --overwrite removes besides RUN_FILES, when the new run writes its first checkpoint
RUN_EXTRAS = ("curves.png", "confusion.png", "tb")
# settings that may differ between a run and its resumption without changing the result
COMPILE_MODES = ("off", "default", "reduce-overhead", "max-autotune")
RESUMABLE_CHANGES = {"compile", "workers", "threads", "progress", "resume", "overwrite", "tensorboard", "device"}


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite; the last good checkpoint is left untouched."""


class OutputExists(ValueError):
    """The output folder already holds a run and neither --resume nor --overwrite was given."""


# every number a run takes: (type, lowest, highest, which ends are allowed); each must also be finite
NUMERIC_SETTINGS: dict[str, tuple[type, float, float, str]] = {
    "epochs": (int, 1, math.inf, "[)"),
    "time_budget_min": (float, 0, math.inf, "()"),
    "batch_size": (int, 1, math.inf, "[)"),
    "image_size": (int, 1, math.inf, "[)"),
    "lr": (float, 0, math.inf, "()"),
    "weight_decay": (float, 0, math.inf, "[)"),
    "warmup_epochs": (float, 0, math.inf, "[)"),
    "label_smoothing": (float, 0, 1, "[)"),
    "ema_decay": (float, 0, 1, "[)"),
    "clip_grad": (float, 0, math.inf, "[)"),
    "random_erasing": (float, 0, 1, "[]"),
    "val_fraction": (float, 0, 1, "[)"),
    "workers": (int, 0, math.inf, "[)"),
    "threads": (int, 1, math.inf, "[)"),
    "limit_train_batches": (int, 1, math.inf, "[)"),
    "limit_val_batches": (int, 1, math.inf, "[)"),
}


def _check_number(name: str, value: Any) -> None:
    kind, low, high, ends = NUMERIC_SETTINGS[name]
    integral = isinstance(value, numbers.Integral) and not isinstance(value, bool)
    ok = integral or (kind is float and isinstance(value, numbers.Real) and not isinstance(value, bool))
    ok = ok and math.isfinite(value) and (low <= value if ends[0] == "[" else low < value) and (
        value <= high if ends[1] == "]" else value < high)
    if not ok:
        noun = "an integer" if kind is int else "a finite number"
        where = (f"{'>=' if ends[0] == '[' else '>'} {low}" if high == math.inf
                 else f"in {ends[0]}{low}, {high}{ends[1]}")
        raise ValueError(f"{name} must be {noun} {where}, got {value!r}")


@dataclass
class TrainConfig:
    model: str = "mobilenet_v2"
    output: str = "runs/train"
    dataset: str = "fashion_mnist"
    data_dir: Optional[str] = None
    width_mult: float = 1.0
    dropout: Optional[float] = None
    drop_path_rate: Optional[float] = None
    bn_momentum: Optional[float] = None
    small_input: Optional[bool] = None  # None: True for images of 64 px and less
    image_size: Optional[int] = None
    # train at these sizes in equal shares of the run (by steps, or by time with a budget); the last is the image
    # size the model is evaluated at
    progressive_sizes: Optional[list[int]] = None
    epochs: int = 10
    time_budget_min: Optional[float] = None  # train for this long (wall-clock); epochs become an upper bound
    batch_size: int = 128
    recipe: str = "default"
    opt: Optional[str] = None
    lr: Optional[float] = None
    weight_decay: Optional[float] = None
    warmup_epochs: Optional[float] = None
    label_smoothing: Optional[float] = None
    ema_decay: Optional[float] = None
    clip_grad: Optional[float] = None
    init_from: Optional[str] = None  # start from these weights (fine-tuning); --resume restores its own instead
    teachers: list[str] = dataclasses.field(default_factory=list)  # checkpoints to distill from (averaged)
    distill_weight: Optional[float] = None  # share of the distillation term in the loss (default 0.5)
    distill_temperature: Optional[float] = None  # softmax temperature of teacher and student (default 1.0)
    augment: str = "none"
    random_erasing: float = 0.25
    val_fraction: float = 0.1
    seed: int = 0
    amp: str = "auto"  # auto | off | bf16 | fp16
    channels_last: str = "auto"  # auto | on | off
    compile: str = "off"  # off | default | reduce-overhead | max-autotune: torch.compile of the training forward
    device: str = "auto"
    workers: Optional[int] = None
    threads: Optional[int] = None  # torch intra-op threads (None: torch's default)
    limit_train_batches: Optional[int] = None
    limit_val_batches: Optional[int] = None
    allow_download: bool = True
    progress: bool = True
    tensorboard: bool = True
    resume: bool = False
    overwrite: bool = False

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Refuse settings no run can use, naming the parameter (every number finite and in its range), and
        spell the dataset's name as registered (the training record keeps that). The trainer calls this again
        (fields may have changed since) before it reads data or touches the output folder."""
        self.dataset = dataset_name(self.dataset)
        for name in NUMERIC_SETTINGS:
            value = getattr(self, name)
            if value is not None:
                _check_number(name, value)
        if self.resume and self.overwrite:
            raise ValueError("resume and overwrite exclude each other")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass
class _EpochSums:
    loss: float = 0.0
    correct: int = 0
    count: int = 0
    seconds: float = 0.0

    def as_tensor(self) -> torch.Tensor:
        return torch.tensor([self.loss, self.correct, self.count], dtype=torch.float64)


class _SkipSampler(Sampler[int]):
    """The epoch's order from ``DistributedSampler`` without its first ``skip`` indices (mid-epoch resume)."""

    def __init__(self, sampler: DistributedSampler, skip: int) -> None:
        self.sampler, self.skip = sampler, skip

    def __iter__(self) -> Iterator[int]:
        for i, index in enumerate(self.sampler):
            if i >= self.skip:
                yield index

    def __len__(self) -> int:
        return max(0, len(self.sampler) - self.skip)


def _rng_state() -> dict[str, Any]:
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": [kind, torch.from_numpy(keys.astype(np.int64)), int(pos), int(has_gauss), float(cached)],
        "python": random.getstate(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _pick_device(name: str, info_local_rank: int) -> torch.device:
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", info_local_rank)
        return torch.device("cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda asked for but CUDA is not available; use --device cpu")
    return device


def _amp_dtype(mode: str, device: torch.device) -> Optional[torch.dtype]:
    if mode not in ("auto", "off", "bf16", "fp16"):
        raise ValueError(f"--amp must be auto, off, bf16 or fp16, got {mode!r}")
    if mode == "off" or (mode == "auto" and device.type != "cuda"):
        # bf16 autocast pays off only on CPUs with AMX/AVX512-BF16; there, opt in with --amp bf16
        return None
    if mode == "auto":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.bfloat16 if mode == "bf16" else torch.float16


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
        local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        self.device = _pick_device(config.device, local_rank)
        self.dist = init_distributed(self.device)
        if self.device.type == "cuda":
            # fixed input sizes: let cuDNN pick the fastest kernels once (as torchvision's reference scripts do);
            # bitwise-exact resume is promised on the CPU only
            torch.backends.cudnn.benchmark = True
        self.recipe = resolve_recipe(config.recipe)
        self._lock: Optional[RunLock] = None  # held by rank 0 while fit() runs
        # rank 0 owns the folder; every rank stops when it refuses (none is left waiting in a collective)
        run_on_main(self._check_output, self.dist)
        self._seed_everything(config.seed)
        self.bundle = bundle or build_data(
            config.dataset, config.data_dir, val_fraction=config.val_fraction, seed=config.seed,
            image_size=config.image_size, augment=config.augment, random_erasing=config.random_erasing,
            allow_download=config.allow_download,
        )
        if self.bundle.skipped and self.dist.is_main:
            first_path, first_reason = self.bundle.skipped[0]
            self.log(f"skipped {len(self.bundle.skipped)} unreadable image(s); first: {first_path} ({first_reason})")
        self.amp_dtype = _amp_dtype(config.amp, self.device)
        # channels-last is what oneDNN (CPU) and cuDNN run depthwise and 1x1 convolutions fastest in: 1.5-2x
        # training throughput on CPU for these models (docs/training.md)
        self.channels_last = {"auto": self.device.type in ("cpu", "cuda"), "on": True, "off": False}.get(config.channels_last)
        if self.channels_last is None:
            raise ValueError(f"--channels-last must be auto, on or off, got {config.channels_last!r}")
        self.workers = config.workers if config.workers is not None else (0 if (os.cpu_count() or 1) <= 2 else min(8, (os.cpu_count() or 1) // 2))
        self.model = (self._build_model() if model is None else model).to(self.device)
        if config.init_from is not None and not config.resume:
            try:
                load_weights_into(self.model, config.init_from)
            except CheckpointError as exc:
                raise ValueError(f"--init-from: {exc}") from None
        self.teacher, self.distill_weight = self._build_teacher()
        if self.channels_last:
            self.model.to(memory_format=torch.channels_last)
        self.ddp_model: nn.Module = self.model
        if self.dist.enabled:
            self.ddp_model = nn.parallel.DistributedDataParallel(
                self.model, device_ids=[self.device.index] if self.device.type == "cuda" else None
            )
        if config.compile not in COMPILE_MODES:
            raise ValueError(f"--compile must be one of {', '.join(COMPILE_MODES)}, got {config.compile!r}")
        if config.compile != "off":
            # the training forward and backward only: checkpoints, EMA and evaluation use the plain module
            self.ddp_model = torch.compile(self.ddp_model, mode=config.compile)
        self.global_batch = config.batch_size * self.dist.world_size
        base_lr = config.lr if config.lr is not None else self.recipe.lr_per_256 * self.global_batch / 256
        self.base_lr = base_lr
        opt = config.opt or self.recipe.opt
        # --clip-grad, or the bound the model needs with this optimizer (0: none)
        self.clip_grad = config.clip_grad if config.clip_grad is not None else default_clip_grad(self.model, opt)
        self.optimizer = build_optimizer(
            self.model, opt, base_lr,
            config.weight_decay if config.weight_decay is not None else self.recipe.weight_decay,
        )
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
        warmup = config.warmup_epochs if config.warmup_epochs is not None else min(self.recipe.warmup_epochs, 0.1 * config.epochs)
        self.time_budget: Optional[float] = None
        self.elapsed = 0.0  # wall-clock of fit() so far, agreed across ranks (what --time-budget counts)
        self._clock_zero = time.perf_counter()
        self.budget_spent = False
        if config.time_budget_min is not None:
            if self.recipe.schedule != "cosine":
                raise ValueError(
                    f"--time-budget runs the cosine schedule on elapsed time; recipe {config.recipe!r} decays per "
                    "epoch, so give it --epochs instead"
                )
            self.time_budget = 60.0 * config.time_budget_min
        by_steps = lr_factor_fn(
            "exponential" if self.recipe.schedule == "exponential" else "cosine",
            self.steps_per_epoch, config.epochs, warmup, self.recipe.decay_rate,
        )
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, by_steps if self.time_budget is None else self._budget_factor(warmup))
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.amp_dtype == torch.float16)
        self.progressive_sizes = self._check_progressive_sizes()
        # the size the last step trained at: under a time budget it followed the clock, so it is kept, not recomputed
        self._last_size: Optional[int] = None
        ema_decay = config.ema_decay if config.ema_decay is not None else self.recipe.ema_decay
        self.ema: Optional[torch.optim.swa_utils.AveragedModel] = None
        if ema_decay > 0:
            self.ema = torch.optim.swa_utils.AveragedModel(
                self.model, multi_avg_fn=ema_multi_avg_fn(ema_decay), use_buffers=True)
        label_smoothing = config.label_smoothing if config.label_smoothing is not None else self.recipe.label_smoothing
        self.criterion = nn.CrossEntropyLoss(label_smoothing=label_smoothing)
        self.epoch = 0
        self.step_in_epoch = 0
        self.global_step = 0
        self.sums = _EpochSums()
        self.history: list[dict[str, Any]] = []
        self.best: dict[str, Any] = {"val_top1": -1.0, "epoch": None}
        self.train_seconds = 0.0
        self._stop_requested = False
        self._step_active = False
        self.on_step: Optional[Callable[["Trainer"], None]] = None  # hook for tests and callers
        self.tb = None
        self._tb_tried = False
        self._made_output = False  # fit() created the folder (removed again if the run leaves nothing in it)
        # --overwrite: the old run goes when this one writes its first checkpoint, not before
        self._replace_old_run = False
        # (epoch, step in epoch) of the training state in last.pt that this run wrote or resumed from
        self._checkpoint_at: Optional[tuple[int, int]] = None
        self._resumed_file: Optional[tuple[int, int]] = None  # (mtime_ns, size) of the last.pt read
        if config.resume:
            self._load_state(self.output / "last.pt")
        self.effective = {
            "opt": opt,
            "lr": base_lr,
            "weight_decay": config.weight_decay if config.weight_decay is not None else self.recipe.weight_decay,
            "schedule": self.recipe.schedule,
            "warmup_epochs": warmup,
            "time_budget_s": self.time_budget,
            "progressive_sizes": self.progressive_sizes,
            "label_smoothing": label_smoothing,
            "ema_decay": ema_decay,
            "clip_grad": self.clip_grad,
            "distill": None if self.teacher is None else {
                "teachers": list(config.teachers), "weight": self.distill_weight,
                "temperature": self.teacher.temperature},
            "global_batch": self.global_batch,
            "world_size": self.dist.world_size,
            "amp": str(self.amp_dtype).replace("torch.", "") if self.amp_dtype else "off",
            "channels_last": self.channels_last,
            "compile": config.compile,
            "device": str(self.device),
        }

    def _build_teacher(self) -> tuple[Optional[EnsembleTeacher], float]:
        """The frozen teachers of ``--teacher`` (None without) and the distillation term's weight."""
        cfg = self.config
        if not cfg.teachers:
            given = [flag for flag, value in (("--distill-weight", cfg.distill_weight),
                                              ("--distill-temperature", cfg.distill_temperature)) if value is not None]
            if given:
                verb = "need" if len(given) > 1 else "needs"
                raise ValueError(f"{' and '.join(given)} {verb} at least one --teacher checkpoint to distill from")
            return None, 0.0
        weight = 0.5 if cfg.distill_weight is None else cfg.distill_weight
        temperature = 1.0 if cfg.distill_temperature is None else cfg.distill_temperature
        if not 0.0 < weight <= 1.0:
            raise ValueError(f"--distill-weight must be in (0, 1], got {weight}")
        if not temperature > 0:
            raise ValueError(f"--distill-temperature must be > 0, got {temperature}")
        bundle = self.bundle
        teacher = load_teachers(
            cfg.teachers, num_classes=bundle.num_classes,
            input_size=(bundle.in_chans, bundle.image_size, bundle.image_size), mean=bundle.mean, std=bundle.std,
            class_names=bundle.class_names, temperature=temperature, device=self.device,
            channels_last=bool(self.channels_last),
        )
        return teacher, weight

    def _budget_factor(self, warmup_epochs: float) -> Callable[[int], float]:
        """``--time-budget``'s learning-rate multiplier: a linear warmup that ends after the warmup epochs or
        10% of the budget, whichever comes first, times a cosine over whichever is further along, the budget or
        the epochs (the upper bound), so the rate reaches zero at the limit that comes first. It reads
        ``self.elapsed``, the clock the ranks agreed on in the last step."""
        warmup = int(round(warmup_epochs * self.steps_per_epoch))

        def factor(step: int) -> float:
            by_steps = (step + 1) / warmup if warmup else 1.0
            ramp = min(1.0, max(by_steps, self.elapsed / (0.1 * self.time_budget)))
            return ramp * 0.5 * (1.0 + math.cos(math.pi * self._progress(step)))

        return factor

    def _progress(self, step: int) -> float:
        """How far the run is, in [0, 1]: by steps, or with a time budget by whichever of the agreed clock and
        the steps is further along (what the cosine and ``--progressive-sizes`` follow)."""
        progress = step / max(1, self.steps_per_epoch * self.config.epochs)
        if self.time_budget is not None:
            progress = max(progress, self.elapsed / self.time_budget)
        return min(1.0, progress)

    def _check_progressive_sizes(self) -> Optional[list[int]]:
        sizes = self.config.progressive_sizes
        if not sizes:
            return None
        sizes = [int(v) for v in sizes]
        full = self.bundle.image_size
        smallest = getattr(getattr(self.model, "info", None), "min_input_size", 1)
        if sizes[-1] != full:
            raise ValueError(
                f"--progressive-sizes must end at the image size the model is evaluated at, {full}; got "
                f"{','.join(map(str, sizes))}")
        if any(b < a for a, b in zip(sizes, sizes[1:])):
            raise ValueError(f"--progressive-sizes must not decrease, got {','.join(map(str, sizes))}")
        if sizes[0] < smallest:
            raise ValueError(f"--progressive-sizes: {self.config.model} takes images of {smallest} px and more, "
                             f"got {sizes[0]}")
        return sizes

    def train_size(self) -> int:
        """The side of the training images at the current step (the image size without ``--progressive-sizes``)."""
        if self.progressive_sizes is None:
            return self.bundle.image_size
        stage = int(self._progress(self.global_step) * len(self.progressive_sizes))
        return self.progressive_sizes[min(stage, len(self.progressive_sizes) - 1)]

    # -- setup -----------------------------------------------------------------------------
    def log(self, message: str) -> None:
        if self.dist.is_main:
            self.log_fn(message)

    def _check_output(self) -> list[str]:
        """The run files already in the output folder, after refusing a folder this run cannot use; reads only
        (checked again under the lock in :meth:`fit`, where the folder is first written)."""
        cfg = self.config
        out = self.output
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
        if cfg.resume:
            if not (out / "last.pt").is_file():
                raise FileNotFoundError(f"--resume: {out / 'last.pt'} does not exist; nothing to resume")
        elif existing and not cfg.overwrite:
            raise OutputExists(
                f"{out} already holds a run ({', '.join(existing)}); pass --resume to continue it or "
                "--overwrite to replace it"
            )
        return existing

    def _take_output(self) -> None:
        """Rank 0: lock the output folder (making it if needed) and check it again, now that no other run can
        change it."""
        if not self.output.is_dir():
            self.output.mkdir(parents=True)
            self._made_output = True
        self._lock = RunLock.acquire(self.output, self.log)
        existing = self._check_output()
        if self._resumed_file is not None and self._resumed_file != _file_id(self.output / "last.pt"):
            raise OutputExists(f"{self.output / 'last.pt'} changed since this run read it (another run wrote it); "
                               "resume again")
        self._replace_old_run = bool(existing) and self.config.overwrite

    def _release_output(self) -> None:
        if self._lock is None:
            return
        self._lock.release()
        self._lock = None
        if self._made_output and not any(self.output.iterdir()):
            self.output.rmdir()  # a run that stopped before its first checkpoint leaves no trace

    def _remove_old_run(self) -> None:
        """--overwrite: the old run's files go just before this run writes its first checkpoint."""
        if not self._replace_old_run:
            return
        self._replace_old_run = False
        for name in RUN_FILES + RUN_EXTRAS:
            path = self.output / name
            if path.is_dir():
                shutil.rmtree(path)
            else:
                path.unlink(missing_ok=True)

    def _seed_everything(self, seed: int) -> None:
        random.seed(seed)
        np.random.seed(seed % 2**32)
        torch.manual_seed(seed)

    def _build_model(self) -> nn.Module:
        import mobilenets

        cfg, bundle = self.config, self.bundle
        options: dict[str, Any] = {
            "num_classes": bundle.num_classes,
            "in_chans": bundle.in_chans,
            "width_mult": cfg.width_mult,
            "small_input": bundle.small_input if cfg.small_input is None else cfg.small_input,
        }
        if cfg.dropout is not None:
            options["dropout"] = cfg.dropout
        if cfg.drop_path_rate is not None:
            options["drop_path_rate"] = cfg.drop_path_rate
        if cfg.bn_momentum is not None:
            options["bn_momentum"] = cfg.bn_momentum
        model = mobilenets.create_model(cfg.model, **options)
        # the model carries how to feed it, so a checkpoint explains itself
        model.info.input_size = (bundle.in_chans, bundle.image_size, bundle.image_size)
        model.info.mean = tuple(bundle.mean)
        model.info.std = tuple(bundle.std)
        model.info.extra["class_names"] = list(bundle.class_names)
        # different dropout/drop-path draws per rank; identical weights come from DDP's broadcast
        torch.manual_seed(cfg.seed + self.dist.rank)
        return model

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
            "rng": _rng_state(),
        }

    def _save_state(self, name: str) -> Path:
        path = self.output / name
        if self.dist.is_main:
            self._remove_old_run()
            state = self._state()
            atomic_write(path, lambda tmp: torch.save(state, tmp))
        if name == "last.pt":
            self._checkpoint_at = (self.epoch, self.step_in_epoch)
        return path

    def _last_good_state(self) -> str:
        """Where the last consistent training state is, for the messages of a run that stopped; never a file
        this run did not write or resume from."""
        if self._checkpoint_at is None:
            kept = "the run it was to replace is left as it was" if self._replace_old_run else "nothing was written"
            return f"{kept} (it stopped before its first checkpoint)"
        epoch, step = self._checkpoint_at
        at = f"epoch {epoch}" if step == 0 else f"epoch {epoch + 1}, step {step}"
        return f"the last good checkpoint is {self.output / 'last.pt'} ({at})"

    def _load_state(self, path: Path) -> None:
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:
            raise ValueError(f"{path}: unreadable training state ({str(exc).splitlines()[0]})") from None
        if not isinstance(state, dict) or state.get("format") != STATE_FORMAT:
            raise ValueError(f"{path}: not a mobilenets training state")
        saved = state["config"]
        mine = self.config.to_dict()
        changed = [
            f"{k}: {saved.get(k)!r} -> {v!r}" for k, v in mine.items()
            if k not in RESUMABLE_CHANGES and saved.get(k) != v
        ]
        if changed:
            raise ValueError(
                f"--resume with different settings from the saved run ({'; '.join(changed)}); "
                "resume with the original command, or start a new --output"
            )
        self.model.load_state_dict(state["model"])
        if self.ema is not None:
            self.ema.load_state_dict(state["ema"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.scaler.load_state_dict(state["scaler"])
        self.epoch = int(state["epoch"])
        self.step_in_epoch = int(state["step_in_epoch"])
        self.global_step = int(state["global_step"])
        self.sums = _EpochSums(**state["sums"])
        self.train_seconds = float(state["train_seconds"])
        self.elapsed = float(state.get("elapsed_seconds", 0.0))
        self.budget_spent = bool(state.get("budget_spent", False))
        self.history = list(state["history"])
        self.best = dict(state["best"])
        _set_rng_state(state["rng"])
        if self.dist.enabled:
            # each rank restores the rank-0 generator; re-derive the per-rank dropout streams from it
            torch.manual_seed(int(torch.randint(0, 2**62, (1,)).item()) + self.dist.rank)
        self._checkpoint_at = (self.epoch, self.step_in_epoch)
        self._resumed_file = _file_id(path)
        self.log(f"resumed {path} at epoch {self.epoch + 1}, step {self.step_in_epoch}")

    # -- loop ------------------------------------------------------------------------------
    def request_stop(self) -> None:
        """Finish the current step, save ``last.pt`` and raise KeyboardInterrupt (what Ctrl-C does)."""
        self._stop_requested = True

    def eval_model(self) -> nn.Module:
        return self.ema.module if self.ema is not None else self.model

    def _train_loader(self) -> DataLoader:
        self.train_sampler.set_epoch(self.epoch)
        self.bundle.train.set_epoch(self.epoch)
        skip = self.step_in_epoch * self.config.batch_size
        # a private generator: creating the iterator must not consume the global RNG (exact resume)
        generator = torch.Generator().manual_seed(self.config.seed * 1_000 + self.epoch)
        return DataLoader(
            self.bundle.train, batch_size=self.config.batch_size, sampler=_SkipSampler(self.train_sampler, skip),
            num_workers=self.workers, drop_last=True, pin_memory=self.device.type == "cuda", generator=generator,
            persistent_workers=False,
        )

    def _train_step(self, images: torch.Tensor, labels: torch.Tensor) -> tuple[float, int]:
        images = images.to(self.device, non_blocking=True)
        labels = labels.to(self.device, non_blocking=True)
        full = images
        size = self._last_size = self.train_size()
        if images.shape[-1] != size:
            # a smaller version of the augmented batch (--progressive-sizes); antialiased, as torchvision resizes
            images = F.interpolate(images, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
        if self.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
            if self.teacher is not None:
                full = full.contiguous(memory_format=torch.channels_last)
        with autocast_context(self.device, self.amp_dtype):
            logits = self.ddp_model(images)
            loss = self.criterion(logits.float(), labels)
            if self.teacher is not None:
                # the teachers see the same augmented batch (consistent targets), at the size they were trained
                # at; no gradients reach them
                targets = self.teacher(full)
                loss = (1.0 - self.distill_weight) * loss + self.distill_weight * distillation_loss(
                    logits, targets, self.teacher.temperature)
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

    def _open_tensorboard(self) -> None:
        """After the first checkpoint (a run that fails before it writes nothing), on rank 0, when installed."""
        if self._tb_tried or not (self.config.tensorboard and self.dist.is_main):
            return
        self._tb_tried = True
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            return
        self.tb = SummaryWriter(str(self.output / "tb"))

    def close(self, completed: bool = True) -> None:
        """End the run's process group (several processes; nothing to do in one).

        After a completed run the DDP wrapper is dropped first, then the group destroyed. The wrapper holds the
        gloo process group, and ``destroy_process_group`` only unregisters it: while the wrapper lives, the
        group's worker threads outlive it into interpreter shutdown. A worker thread that is still releasing a
        finished collective's tensors then needs the GIL of a dying interpreter, and the process aborts with
        "terminate called without an active exception" (SIGABRT) after the run's work is done (3 of 25 runs
        of the two-process time-budget test on a quiet 2-core machine; gdb on the core dumps shows a gloo
        worker thread destroying an ``AsyncAllreduceWork`` during ``Py_FinalizeEx``). With the wrapper gone
        the group is destroyed at once and its threads are joined (docs/training.md, "Several processes").
        After a failed run the wrapper stays: a collective left in flight by the failure would block that
        join."""
        if completed and self.dist.enabled:
            self.ddp_model = self.model
            gc.collect()  # DDP's reducer and module form reference cycles
        cleanup(self.dist)

    def fit(self) -> dict[str, Any]:
        """Train, then report on the test split; the output folder is locked meanwhile (on every way out:
        return, exception, Ctrl-C or SIGTERM, the lock goes)."""
        # SIGTERM outside the training loop (which saves first) ends the run like Ctrl-C, through the finally
        previous = signal.getsignal(signal.SIGTERM)
        if _in_main_thread():
            signal.signal(signal.SIGTERM, _interrupt)
        try:
            run_on_main(self._take_output, self.dist)
            return self._fit()
        finally:
            self._release_output()
            if _in_main_thread():
                signal.signal(signal.SIGTERM, previous)

    def _fit(self) -> dict[str, Any]:
        cfg = self.config
        params = sum(p.numel() for p in self.model.parameters())
        self.log(
            f"training {cfg.model if hasattr(self.model, 'info') else type(self.model).__name__} (width {cfg.width_mult}, {params / 1e6:.2f}M params) on {self.bundle.name}: "
            f"{len(self.bundle.train)} train / {len(self.bundle.val) if self.bundle.val is not None else 0} val / "
            f"{len(self.bundle.test)} test images, {cfg.epochs} epochs x {self.steps_per_epoch} steps, "
            f"recipe {cfg.recipe} ({self.effective['opt']}, lr {self.base_lr:.4g}"
            + (f", gradient norm clipped to {self.clip_grad:g}" + (" (for this model's batch-normed pooled head)"
               if cfg.clip_grad is None else "") if self.clip_grad else "")
            + f"), device {self.device}, "
            f"{self.dist.world_size} process(es)"
            + (f", time budget {cfg.time_budget_min:g} min (epochs: upper bound)" if self.time_budget else "")
            + (f"; training images at {', '.join(map(str, self.progressive_sizes))} px in equal shares of the run"
               if self.progressive_sizes else "")
            + ("; no validation split: the last epoch is the model kept" if self.bundle.val is None else "")
        )
        # Ctrl-C and SIGTERM (what schedulers send before preempting a job) both save and stop cleanly
        stop_signals = (signal.SIGINT, signal.SIGTERM)
        previous = {sig: signal.getsignal(sig) for sig in stop_signals}
        if _in_main_thread():
            for sig in stop_signals:
                signal.signal(sig, self._on_sigint)
        try:
            self._clock_zero = time.perf_counter() - self.elapsed  # a resumed run's clock goes on from its state
            while self.epoch < cfg.epochs and not self.budget_spent:
                self._run_epoch()
        except KeyboardInterrupt:
            if self._step_active:  # a second Ctrl-C inside a step: the state is half-updated, keep the old file
                self.log(f"stopped inside a step; {self._last_good_state()}")
            else:
                self._save_state("last.pt")
                self.log(f"interrupted: saved {self.output / 'last.pt'}; continue with the same command and --resume")
            self._close()
            raise
        except TrainingDiverged:
            self._close()
            raise
        finally:
            if _in_main_thread():
                for sig, handler in previous.items():
                    signal.signal(sig, handler)
        return self._finish()

    def _on_sigint(self, signum, frame) -> None:
        if self._stop_requested:  # second Ctrl-C: stop now
            raise KeyboardInterrupt
        self._stop_requested = True

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
                    self.log(f"time budget of {self.config.time_budget_min:g} min spent at epoch {self.epoch + 1}, "
                             f"step {self.step_in_epoch} of {self.steps_per_epoch}")
                    break
        finally:
            if bar is not None:
                bar.close()
        self._end_epoch()

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
        if self.progressive_sizes is not None:
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
        self.sums = _EpochSums()
        if "val_top1" in record:
            is_best = record["val_top1"] > self.best["val_top1"]
            if is_best:
                self.best = {"val_top1": record["val_top1"], "epoch": record["epoch"]}
        else:
            # no validation split (--val-fraction 0): nothing to select with, so the latest epoch is the model
            # kept (training accuracy under augmentation would be a biased judge)
            is_best = True
            self.best = {"val_top1": None, "epoch": record["epoch"]}
        self._save_state("last.pt")
        if is_best and self.dist.is_main:
            atomic_write(self.output / "best.pt", lambda tmp: torch.save(self._state(), tmp))
            self._export_best(record)
        if self.dist.is_main:
            self._write_metrics()
            shown = f", val top-1 {record['val_top1']:.2%}" if "val_top1" in record else ""
            self.log(
                f"epoch {record['epoch']}/{cfg.epochs}: train loss {record['train_loss']:.4f}, "
                f"train top-1 {record['train_top1']:.2%}{shown}, {record['train_images_per_s']:.0f} img/s"
                + (f" at {record['train_size']} px" if "train_size" in record else "")
                + (f", {self.elapsed / 60:.1f} of {cfg.time_budget_min:g} min" if self.time_budget else "")
                + (" (best)" if is_best and "val_top1" in record else "")
            )
            self._open_tensorboard()
            if self.tb is not None:
                for key, value in record.items():
                    if key not in ("epoch", "step"):
                        self.tb.add_scalar(key, value, record["epoch"])
        barrier(self.dist)

    def _evaluate(self, dataset, limit: Optional[int], desc: str) -> EvalResult:
        return run_eval(
            self.eval_model(), dataset, self.bundle.num_classes, device=self.device, batch_size=max(256, self.config.batch_size),
            workers=self.workers, limit_batches=limit, amp_dtype=self.amp_dtype, channels_last=self.channels_last,
            info=self.dist, progress=self.config.progress, desc=desc,
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

    def _export_best(self, record: dict[str, Any], **extra: Any) -> None:
        import mobilenets

        model = self.eval_model()
        if not isinstance(model, mobilenets.MobileNet):
            return
        training = self.training_record()
        training.update(extra)
        mobilenets.save(model, self.output / "best.safetensors", class_names=self.bundle.class_names, training=training)

    def _finish(self) -> dict[str, Any]:
        """Test-set report of the best model, plots, results.json."""
        cfg = self.config
        # every rank loads the best weights so the sharded test evaluation uses the same model
        barrier(self.dist)
        if self.dist.enabled and not params_in_sync(self.model, self.dist):
            raise RuntimeError("DDP replicas diverged: parameters differ between ranks")
        best_state = torch.load(self.output / "best.pt", map_location="cpu", weights_only=True) if (self.output / "best.pt").exists() else None
        if best_state is None:
            raise RuntimeError(f"{self.output / 'best.pt'} is missing; the run saved no epoch")
        model = self.eval_model()
        current = {k: v.clone() for k, v in model.state_dict().items()}
        if self.ema is not None:
            self.ema.load_state_dict(best_state["ema"])
        else:
            self.model.load_state_dict(best_state["model"])
        test = self._evaluate(self.bundle.test, cfg.limit_val_batches, "test")
        results: dict[str, Any] = {
            "model": cfg.model,
            "width_mult": cfg.width_mult,
            "dataset": cfg.dataset,
            "epochs": cfg.epochs,
            "best_epoch": self.best["epoch"],
            "best_val_top1": self.best["val_top1"],
            "test_top1": test.top1,
            "test_top5": test.top5,
            "test_loss": test.loss,
            "test_images": test.count,
            "train_seconds": self.train_seconds,
            "elapsed_seconds": self.elapsed,
            "stopped_by": "time budget" if self.budget_spent else "epochs",
            "train_images_per_s": (
                sum(r["train_images_per_s"] * r["epoch_train_seconds"] for r in self.history)
                / max(1e-9, sum(r["epoch_train_seconds"] for r in self.history))
            ),
            "final": self.history[-1] if self.history else {},
            "output": str(self.output),
        }
        if self.dist.is_main:
            self._export_best({}, test_top1=test.top1, test_top5=test.top5)
            results["confusion_png"] = str(plot_confusion(
                test.confusion, self.bundle.class_names, self.output / "confusion.png",
                title=f"{cfg.model} on {cfg.dataset} test: top-1 {test.top1:.2%}",
            ))
            results["curves_png"] = str(plot_curves(self.history, self.output / "curves.png"))
            results["best_safetensors"] = str(self.output / "best.safetensors")
            results["per_class"] = test.to_dict(self.bundle.class_names)["per_class"]
            payload = json.dumps(results, indent=2)
            atomic_write(self.output / "results.json", lambda tmp: Path(tmp).write_text(payload))
        model.load_state_dict(current)
        self._close()
        return results

    def _close(self) -> None:
        if self.tb is not None:
            self.tb.close()
            self.tb = None

    # -- metrics file ------------------------------------------------------------------------
    def _write_metrics(self) -> None:
        """metrics.jsonl = the history of the checkpoint just written, whole and atomically (a resumed run's
        file never keeps epochs a killed run logged after its last.pt)."""
        text = "".join(json.dumps(r) + "\n" for r in self.history)
        atomic_write(self.output / "metrics.jsonl", lambda tmp: Path(tmp).write_text(text))


def _file_id(path: Path) -> Optional[tuple[int, int]]:
    """(modification time in ns, size) of a file: a run that rewrote it between two looks changed it."""
    try:
        stat = path.stat()
    except FileNotFoundError:
        return None
    return stat.st_mtime_ns, stat.st_size


def _interrupt(signum, frame) -> None:
    raise KeyboardInterrupt


def _in_main_thread() -> bool:
    import threading

    return threading.current_thread() is threading.main_thread()


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
