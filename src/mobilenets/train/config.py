"""What a training run is asked for (:class:`TrainConfig`, checked with the parameters' names) and what it
then uses (:class:`Settings`: every default filled in once, from the recipe, the model and the machine)."""

from __future__ import annotations

import dataclasses
import math
import numbers
import os
from dataclasses import dataclass
from typing import Any, Optional

import torch
from torch import nn

from .recipes import RecipeDefaults, default_clip_grad, resolve_recipe
from .tasks import TASKS, Task, task_for_model

__all__ = ["TrainConfig", "Settings", "resolve_settings", "NUMERIC_SETTINGS", "COMPILE_MODES", "RESUMABLE_CHANGES"]

COMPILE_MODES = ("off", "default", "reduce-overhead", "max-autotune")
AMP_MODES = ("auto", "off", "bf16", "fp16")
CHANNELS_LAST_MODES = {"auto": None, "on": True, "off": False}
# settings that may differ between a run and its resumption without changing the result
RESUMABLE_CHANGES = {"compile", "workers", "threads", "progress", "resume", "overwrite", "tensorboard", "device"}

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


def _task_dataset(task: Task, model: str, name: Optional[str]) -> str:
    """``name`` (or the task's default) as registered for ``task``; a dataset of another task is refused
    saying whose it is."""
    if name is None:
        return task.default_dataset
    try:
        return task.dataset_name(name)
    except ValueError as exc:
        for other in TASKS.values():
            if other.name != task.name:
                try:
                    found = other().dataset_name(name)
                except ValueError:
                    continue
                raise ValueError(f"dataset {found} is for {other.name} models and {model} is a {task.name} model; "
                                 f"its datasets: {', '.join(task.datasets)}") from None
        raise exc from None


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
    dataset: Optional[str] = None  # None: the task's default (fashion_mnist; segmentation: fashion_mnist_scenes)
    classes: Optional[list[str]] = None  # the names of mask values 0, 1, ... of a segmentation mask folder
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
    random_erasing: Optional[float] = None  # None: 0.25 for classification, none for the other tasks
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
        """Refuse settings no run can use, naming the parameter (every number finite and in its range, every
        mode one of its choices, combinations that exclude each other), and spell the dataset's name as
        registered (the training record keeps that). The trainer calls this again (fields may have changed
        since) before it reads data or touches the output folder; what needs the data, the model or the
        machine is checked by :func:`resolve_settings`."""
        task = task_for_model(self.model)
        self.dataset = _task_dataset(task, self.model, self.dataset)
        if self.random_erasing is None and task.name == "classification":
            self.random_erasing = 0.25
        for name in NUMERIC_SETTINGS:
            value = getattr(self, name)
            if value is not None:
                _check_number(name, value)
        if self.resume and self.overwrite:
            raise ValueError("resume and overwrite exclude each other")
        if self.amp not in AMP_MODES:
            raise ValueError(f"--amp must be auto, off, bf16 or fp16, got {self.amp!r}")
        if self.channels_last not in CHANNELS_LAST_MODES:
            raise ValueError(f"--channels-last must be auto, on or off, got {self.channels_last!r}")
        if self.compile not in COMPILE_MODES:
            raise ValueError(f"--compile must be one of {', '.join(COMPILE_MODES)}, got {self.compile!r}")
        recipe = resolve_recipe(self.recipe)
        if self.time_budget_min is not None and recipe.schedule != "cosine":
            raise ValueError(
                f"--time-budget runs the cosine schedule on elapsed time; recipe {self.recipe!r} decays per "
                "epoch, so give it --epochs instead"
            )
        if not self.teachers:
            given = [flag for flag, value in (("--distill-weight", self.distill_weight),
                                              ("--distill-temperature", self.distill_temperature)) if value is not None]
            if given:
                verb = "need" if len(given) > 1 else "needs"
                raise ValueError(f"{' and '.join(given)} {verb} at least one --teacher checkpoint to distill from")
        if self.distill_weight is not None and not 0.0 < self.distill_weight <= 1.0:
            raise ValueError(f"--distill-weight must be in (0, 1], got {self.distill_weight}")
        if self.distill_temperature is not None and not self.distill_temperature > 0:
            raise ValueError(f"--distill-temperature must be > 0, got {self.distill_temperature}")
        if self.classes is not None and (not isinstance(self.classes, (list, tuple)) or len(self.classes) < 2
                                         or not all(isinstance(c, str) and c for c in self.classes)):
            raise ValueError(f"--classes must name at least two classes (mask values 0, 1, ...), got {self.classes!r}")
        if self.classes is not None:
            self.classes = list(self.classes)
        task.check_config(self)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class Distillation:
    teachers: tuple[str, ...]
    weight: float  # share of the distillation term in the loss
    temperature: float


@dataclass(frozen=True)
class Settings:
    """What a run uses: each unset option resolved once, from the recipe, the model, the data and the machine.
    Its :meth:`to_dict` is the ``effective`` record a checkpoint's training metadata keeps."""

    opt: str
    lr: float  # at the global batch size
    weight_decay: float
    schedule: str  # the recipe's: "cosine" or "exponential"
    decay_rate: float  # the recipe's per-epoch factor of the exponential schedule (not part of the record)
    warmup_epochs: float
    time_budget_s: Optional[float]
    progressive_sizes: Optional[tuple[int, ...]]
    label_smoothing: float
    ema_decay: float
    clip_grad: float  # 0: none
    distill: Optional[Distillation]
    global_batch: int
    world_size: int
    amp_dtype: Optional[torch.dtype]
    channels_last: bool
    compile: str
    device: torch.device
    workers: int  # data-loading processes (not part of the record: it does not change the result)

    def to_dict(self) -> dict[str, Any]:
        return {
            "opt": self.opt,
            "lr": self.lr,
            "weight_decay": self.weight_decay,
            "schedule": self.schedule,
            "warmup_epochs": self.warmup_epochs,
            "time_budget_s": self.time_budget_s,
            "progressive_sizes": None if self.progressive_sizes is None else list(self.progressive_sizes),
            "label_smoothing": self.label_smoothing,
            "ema_decay": self.ema_decay,
            "clip_grad": self.clip_grad,
            "distill": None if self.distill is None else {
                "teachers": list(self.distill.teachers), "weight": self.distill.weight,
                "temperature": self.distill.temperature},
            "global_batch": self.global_batch,
            "world_size": self.world_size,
            "amp": str(self.amp_dtype).replace("torch.", "") if self.amp_dtype else "off",
            "channels_last": self.channels_last,
            "compile": self.compile,
            "device": str(self.device),
        }


def pick_device(name: str, local_rank: int) -> torch.device:
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", local_rank)
        return torch.device("cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda asked for but CUDA is not available; use --device cpu")
    return device


def _amp_dtype(mode: str, device: torch.device) -> Optional[torch.dtype]:
    if mode == "off" or (mode == "auto" and device.type != "cuda"):
        # bf16 autocast pays off only on CPUs with AMX/AVX512-BF16; there, opt in with --amp bf16
        return None
    if mode == "auto":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.bfloat16 if mode == "bf16" else torch.float16


def _progressive_sizes(config: TrainConfig, image_size: int, min_input_size: int) -> Optional[tuple[int, ...]]:
    if not config.progressive_sizes:
        return None
    sizes = tuple(int(v) for v in config.progressive_sizes)
    shown = ",".join(map(str, sizes))
    if sizes[-1] != image_size:
        raise ValueError(
            f"--progressive-sizes must end at the image size the model is evaluated at, {image_size}; got {shown}")
    if any(b < a for a, b in zip(sizes, sizes[1:])):
        raise ValueError(f"--progressive-sizes must not decrease, got {shown}")
    if sizes[0] < min_input_size:
        raise ValueError(f"--progressive-sizes: {config.model} takes images of {min_input_size} px and more, "
                         f"got {sizes[0]}")
    return sizes


def resolve_settings(config: TrainConfig, *, model: nn.Module, image_size: int, world_size: int,
                     device: torch.device, task: Optional[Task] = None) -> Settings:
    """Fill in what ``config`` leaves to the recipe (:mod:`.recipes`), the model (the gradient bound its head
    needs, the smallest input it takes), the data (the image size it is evaluated at) and the machine."""
    recipe: RecipeDefaults = resolve_recipe(config.recipe)
    global_batch = config.batch_size * world_size
    opt = config.opt or recipe.opt
    cpus = os.cpu_count() or 1
    distill = None
    if config.teachers:
        distill = Distillation(
            tuple(config.teachers), 0.5 if config.distill_weight is None else config.distill_weight,
            1.0 if config.distill_temperature is None else config.distill_temperature)

    def given(name: str, default: Any) -> Any:
        value = getattr(config, name)
        return default if value is None else value

    return Settings(
        opt=opt,
        lr=given("lr", recipe.lr_per_256 * global_batch / 256),
        weight_decay=given("weight_decay", recipe.weight_decay),
        schedule=recipe.schedule,
        decay_rate=recipe.decay_rate,
        warmup_epochs=given("warmup_epochs", min(recipe.warmup_epochs, 0.1 * config.epochs)),
        time_budget_s=None if config.time_budget_min is None else 60.0 * config.time_budget_min,
        progressive_sizes=_progressive_sizes(
            config, image_size, getattr(getattr(model, "info", None), "min_input_size", 1)),
        label_smoothing=given("label_smoothing", recipe.label_smoothing if task is None or task.label_smoothing is None
                              else task.label_smoothing),
        ema_decay=given("ema_decay", recipe.ema_decay if task is None or task.ema_decay is None else task.ema_decay),
        # the bound the model needs with this optimizer when none is given (0: none)
        clip_grad=given("clip_grad", default_clip_grad(model, opt)),
        distill=distill,
        global_batch=global_batch,
        world_size=world_size,
        amp_dtype=_amp_dtype(config.amp, device),
        # channels-last is what oneDNN (CPU) and cuDNN run depthwise and 1x1 convolutions fastest in
        channels_last=(device.type in ("cpu", "cuda") if CHANNELS_LAST_MODES[config.channels_last] is None
                       else CHANNELS_LAST_MODES[config.channels_last]),
        compile=config.compile,
        device=device,
        workers=given("workers", 0 if cpus <= 2 else min(8, cpus // 2)),
    )

