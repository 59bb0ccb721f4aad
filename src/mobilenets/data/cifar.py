"""CIFAR-10 and CIFAR-100 (Krizhevsky, 2009) from the "python version" archive layout.

``cifar-10-batches-py/``: ``data_batch_1..5``, ``test_batch``, ``batches.meta`` (``label_names``).
``cifar-100-python/``: ``train``, ``test``, ``meta`` (``fine_label_names``). Each batch is a pickled dict with
``data`` (N x 3072 uint8, channel-major 32x32) and ``labels`` / ``fine_labels``. The folder may be given
directly or as its parent, as ``data_dir`` or else ``$MOBILENETS_DATA``. Unpickling is restricted to numpy
arrays, so a hostile file cannot run code.
"""

from __future__ import annotations

import os
import pickle
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch

from .base import ArrayDataset, DatasetNotFoundError

__all__ = ["CIFAR_LAYOUTS", "load_cifar"]

# name -> (archive folder, train files, test file, meta file, label key, class-name key)
CIFAR_LAYOUTS: dict[str, tuple[str, tuple[str, ...], str, str, str, str]] = {
    "cifar10": (
        "cifar-10-batches-py",
        tuple(f"data_batch_{i}" for i in range(1, 6)),
        "test_batch",
        "batches.meta",
        "labels",
        "label_names",
    ),
    "cifar100": ("cifar-100-python", ("train",), "test", "meta", "fine_labels", "fine_label_names"),
}
_URLS = {
    "cifar10": "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
    "cifar100": "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz",
}
_ALLOWED_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "scalar"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
}


class _NumpyOnlyUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in _ALLOWED_GLOBALS:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name}: a CIFAR batch holds only arrays and lists")
        return super().find_class(module, name)


def _unpickle(path: Path) -> dict[str, Any]:
    try:
        with open(path, "rb") as fh:
            raw = _NumpyOnlyUnpickler(fh, encoding="bytes").load()
    except (OSError, EOFError, pickle.UnpicklingError, ValueError) as exc:
        raise DatasetNotFoundError(f"{path}: unreadable CIFAR batch ({exc})") from None
    if not isinstance(raw, dict):
        raise DatasetNotFoundError(f"{path}: expected a pickled dict, got {type(raw).__name__}")
    return {k.decode() if isinstance(k, bytes) else k: v for k, v in raw.items()}


def _locate(name: str, data_dir: Optional[str | os.PathLike]) -> Path:
    folder_name = CIFAR_LAYOUTS[name][0]
    # a data_dir given is used or refused, never replaced by $MOBILENETS_DATA (the training record names it)
    root = data_dir if data_dir is not None else os.environ.get("MOBILENETS_DATA")
    candidates = [Path(root), Path(root) / folder_name] if root else []
    for folder in candidates:
        if (folder / CIFAR_LAYOUTS[name][3]).is_file():
            return folder
    looked = ", ".join(str(c) for c in candidates) or "nowhere: pass --data-dir or set MOBILENETS_DATA"
    raise DatasetNotFoundError(
        f"{name} not found (looked in {looked}); download and unpack {_URLS[name]} and pass --data-dir "
        f"pointing at the folder that holds {folder_name}/"
    )


def _batch(path: Path, label_key: str) -> tuple[np.ndarray, np.ndarray]:
    batch = _unpickle(path)
    if "data" not in batch or label_key not in batch:
        raise DatasetNotFoundError(f"{path}: missing 'data' or {label_key!r} entries")
    data = np.asarray(batch["data"], dtype=np.uint8)
    labels = np.asarray(batch[label_key], dtype=np.int64)
    if data.ndim != 2 or data.shape[1] != 3 * 32 * 32 or len(labels) != len(data):
        raise DatasetNotFoundError(f"{path}: expected data (N, 3072) and N labels, got {data.shape} and {labels.shape}")
    return data.reshape(-1, 3, 32, 32), labels


def load_cifar(name: str, data_dir: Optional[str | os.PathLike] = None) -> tuple[ArrayDataset, ArrayDataset, list[str], Path]:
    """(train, test, class_names, folder) for ``name`` in {"cifar10", "cifar100"}."""
    if name not in CIFAR_LAYOUTS:
        raise ValueError(f"unknown CIFAR variant {name!r}; accepted: {', '.join(CIFAR_LAYOUTS)}")
    _, train_files, test_file, meta_file, label_key, names_key = CIFAR_LAYOUTS[name]
    folder = _locate(name, data_dir)
    meta = _unpickle(folder / meta_file)
    class_names = [n.decode() if isinstance(n, bytes) else str(n) for n in meta.get(names_key, [])]
    if not class_names:
        raise DatasetNotFoundError(f"{folder / meta_file}: no {names_key!r} entry")

    def split(files: tuple[str, ...]) -> ArrayDataset:
        missing = [f for f in files if not (folder / f).is_file()]
        if missing:
            raise DatasetNotFoundError(f"{folder}: missing {', '.join(missing)} (incomplete {name} archive)")
        parts = [_batch(folder / f, label_key) for f in files]
        images = np.concatenate([p[0] for p in parts])
        labels = np.concatenate([p[1] for p in parts])
        if labels.min() < 0 or labels.max() >= len(class_names):
            raise DatasetNotFoundError(f"{folder}: labels outside 0..{len(class_names) - 1}")
        return ArrayDataset(torch.from_numpy(images), torch.from_numpy(labels))

    return split(train_files), split((test_file,)), class_names, folder
