"""Dataset plumbing shared by every source: in-memory arrays, seeded per-sample augmentation, splits."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Optional, Sequence

import torch
from torch.utils.data import Dataset

__all__ = [
    "DatasetNotFoundError", "ArrayDataset", "TransformedView", "DataBundle", "split_indices", "held_out",
    "channel_stats", "registered_name", "training_record_data",
]


def registered_name(name: str, registered: tuple[str, ...], what: str) -> str:
    """The entry of ``registered`` that ``name`` means when case, '-' and '_' are ignored (``fashion-mnist`` is
    ``fashion_mnist``); an unknown name raises listing the accepted ones."""
    key = name.lower().replace("-", "").replace("_", "") if isinstance(name, str) else None
    for entry in registered:
        if entry.replace("_", "") == key:
            return entry
    raise ValueError(f"unknown {what} {name!r}; accepted: {', '.join(registered)} (case, '-' and '_' do not matter)")


class DatasetNotFoundError(FileNotFoundError):
    """The dataset is missing or unreadable; the message says where we looked and how to get it."""


class ArrayDataset(Dataset):
    """Images held in memory as a uint8 tensor (N, C, H, W) with int64 labels (N,)."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor) -> None:
        if images.dtype != torch.uint8 or images.ndim != 4:
            raise ValueError(f"images must be uint8 (N, C, H, W), got {images.dtype} {tuple(images.shape)}")
        if labels.shape != (images.shape[0],):
            raise ValueError(f"labels must have shape ({images.shape[0]},), got {tuple(labels.shape)}")
        self.images = images
        self.labels = labels.long()

    def __len__(self) -> int:
        return self.images.shape[0]

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        return self.images[index], int(self.labels[index])

    @property
    def targets(self) -> list[int]:
        return self.labels.tolist()


class TransformedView(Dataset):
    """A subset of ``base`` with a transform whose randomness depends only on (seed, epoch, sample index).

    torchvision's v2 transforms draw from torch's global generator, so the order in which samples are
    loaded (worker count, a resume in the middle of an epoch) would otherwise change the augmentation.
    Seeding per sample makes a resumed run see exactly the images an uninterrupted one would.
    """

    def __init__(
        self, base: Dataset, indices: Optional[Sequence[int]], transform: Optional[Callable[[Any], torch.Tensor]], seed: int = 0
    ) -> None:
        self.base = base
        self.indices = list(range(len(base))) if indices is None else list(indices)  # type: ignore[arg-type]
        self.transform = transform
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.indices)

    def _key(self, index: int) -> int:
        return (self.seed * 1_000_003 + self.epoch * 7_919 + index) % (2**63)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        if getattr(self.transform, "batched", False):
            return self.__getitems__([index])[0]
        image, label = self.base[self.indices[index]]
        if self.transform is None:
            return image, label
        generator = torch.default_generator  # torch.manual_seed would also seed every accelerator (slow)
        state = generator.get_state()
        generator.manual_seed(self._key(index))
        try:
            if getattr(self.transform, "joint", False):
                # detection and segmentation: the target (boxes, mask) moves with the image
                return self.transform(image, label)
            return self.transform(image), label
        finally:
            generator.set_state(state)

    def __getitems__(self, positions: Sequence[int]) -> list[tuple[torch.Tensor, int]]:
        """A whole batch at once (``DataLoader`` calls this when it exists): one call of a batched transform
        (:class:`~mobilenets.data.transforms.BatchedSmallImageTransform`) on in-memory images."""
        if not getattr(self.transform, "batched", False):
            return [self[i] for i in positions]
        rows = torch.as_tensor([self.indices[i] for i in positions], dtype=torch.long)
        images = self.transform(self.base.images[rows], [self._key(i) for i in positions])  # type: ignore[attr-defined]
        return list(zip(images.unbind(0), self.base.labels[rows].tolist()))  # type: ignore[attr-defined]

    @property
    def targets(self) -> list[int]:
        base_targets = getattr(self.base, "targets")
        return [base_targets[i] for i in self.indices]


def split_indices(targets: Sequence[int], val_fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """Stratified hold-out: ``val_fraction`` of each class goes to validation, chosen with ``seed``."""
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
    generator = torch.Generator().manual_seed(seed)
    by_class: dict[int, list[int]] = {}
    for index, label in enumerate(targets):
        by_class.setdefault(int(label), []).append(index)
    train: list[int] = []
    val: list[int] = []
    for label in sorted(by_class):
        members = by_class[label]
        order = torch.randperm(len(members), generator=generator).tolist()
        n_val = int(round(len(members) * val_fraction))
        val += [members[i] for i in order[:n_val]]
        train += [members[i] for i in order[n_val:]]
    return sorted(train), sorted(val)


def held_out(count: int, val_fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """(kept, held out) indices of ``count`` items with no one label each (scenes, masks, boxes): ``val_fraction``
    of them at random with ``seed``, the split :func:`split_indices` makes of a single class."""
    return split_indices([0] * count, val_fraction, seed)


def channel_stats(images: torch.Tensor) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and std of uint8 images (N, C, H, W) scaled to [0, 1]."""
    x = images.to(torch.float64).div_(255.0)
    mean = x.mean(dim=(0, 2, 3))
    std = x.std(dim=(0, 2, 3))
    return tuple(round(v, 4) for v in mean.tolist()), tuple(round(v, 4) for v in std.tolist())


@dataclass
class DataBundle:
    """Everything the trainer needs from a dataset: splits, class names, and how images are fed."""

    name: str
    train: TransformedView
    val: Optional[TransformedView]
    test: TransformedView
    class_names: list[str]
    in_chans: int
    image_size: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    small_input: bool
    eval_resize: int  # resize the shorter side to this, then center-crop image_size
    source: str = ""
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (path, reason) of unreadable images

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def describe(self) -> dict[str, Any]:
        return {
            "dataset": self.name,
            "source": self.source,
            "train_images": len(self.train),
            "val_images": len(self.val) if self.val is not None else 0,
            "test_images": len(self.test),
            "num_classes": self.num_classes,
            "image_size": self.image_size,
            "in_chans": self.in_chans,
            "skipped_images": len(self.skipped),
        }


def training_record_data(
    checkpoint: Any, model: Any, meta: dict[str, Any], dataset: Optional[str], data_dir: Optional[str],
    build: Callable[..., DataBundle], dataset_name: Callable[[str], str] = str,
) -> tuple[DataBundle, str]:
    """``(bundle, dataset name)``: the data a checkpoint's training record (``meta["training"]``) names, or
    ``dataset``, rebuilt by ``build(name, data_dir, val_fraction=..., seed=...)`` with the run's validation
    fraction and seed, so the validation split is the run's own; its classes and channels checked against
    ``model``. ``data_dir`` defaults to the run's when the dataset is the run's; ``dataset_name`` gives the
    registered name of the one asked for."""
    training = meta.get("training") or {}
    name = dataset or training.get("dataset")
    if name is None:
        raise ValueError(f"{checkpoint}: no training record names its dataset; pass --dataset")
    name = dataset_name(name)
    if data_dir is None and name == training.get("dataset"):
        data_dir = training.get("data_dir")
    bundle = build(name, data_dir, val_fraction=float(training.get("val_fraction", 0.1)),
                   seed=int(training.get("seed", 0)))
    if bundle.num_classes != model.num_classes:
        raise ValueError(f"{checkpoint}: the model has {model.num_classes} classes but {name} has {bundle.num_classes}")
    if bundle.in_chans != model.options.in_chans:
        raise ValueError(f"{checkpoint}: the model takes {model.options.in_chans} channels, {name} has "
                         f"{bundle.in_chans}")
    return bundle, name
