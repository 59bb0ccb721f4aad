"""Fashion-MNIST (Xiao et al., 2017, arXiv:1708.07747) from its four IDX ``.gz`` files.

Where the files are looked for: a ``data_dir`` given is the only place (the folder itself or its
``fashion-mnist/`` subfolder); without one, ``$MOBILENETS_DATA`` (likewise), then
``/usr/share/datasets/fashion-mnist`` (Debian's ``dataset-fashion-mnist``). When the place holds no files
they are downloaded from the upstream mirror (into ``data_dir``, ``$MOBILENETS_DATA/fashion-mnist`` or
``~/.cache/mobilenets/fashion-mnist``) and checked against the upstream MD5 sums (the same sums torchvision
lists). Debian recompresses the files, so its ``.gz`` bytes differ from upstream; local files are checked by
their IDX headers instead.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import struct
import urllib.request
from pathlib import Path
from typing import Callable, Optional

import numpy as np
import torch

from .base import ArrayDataset, DatasetNotFoundError

__all__ = ["FASHION_MNIST_FILES", "FASHION_MNIST_CLASSES", "MIRRORS", "candidate_dirs", "load_fashion_mnist", "download", "read_idx"]

FASHION_MNIST_CLASSES = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)
# upstream MD5 of each .gz file, as published with the dataset (zalandoresearch/fashion-mnist README) and
# listed in torchvision.datasets.FashionMNIST.resources
FASHION_MNIST_FILES: dict[str, str] = {
    "train-images-idx3-ubyte.gz": "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
    "train-labels-idx1-ubyte.gz": "25c81989df183df01b3e8a0aad5dffbe",
    "t10k-images-idx3-ubyte.gz": "bef4ecab320f06d8554ea6380940ec79",
    "t10k-labels-idx1-ubyte.gz": "bb300cfdad3c16e7a12a480ee83cd310",
}
MIRRORS = ("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",)
SYSTEM_DIR = Path("/usr/share/datasets/fashion-mnist")
HOW_TO_GET = (
    "install Debian's package ('sudo apt-get install dataset-fashion-mnist', or `make data`), "
    "or download the four .gz files from https://github.com/zalandoresearch/fashion-mnist into a folder "
    "and pass --data-dir or set MOBILENETS_DATA"
)

Fetch = Callable[[str, Path], None]


def _has_all(folder: Path) -> bool:
    return all((folder / name).is_file() for name in FASHION_MNIST_FILES)


def candidate_dirs(data_dir: Optional[str | os.PathLike] = None) -> list[Path]:
    """Folders searched, in order of preference: a ``data_dir`` given is used or refused, never replaced by a
    copy found elsewhere (the training record names it)."""
    if data_dir is not None:
        return [Path(data_dir), Path(data_dir) / "fashion-mnist"]
    out: list[Path] = []
    env = os.environ.get("MOBILENETS_DATA")
    if env:
        out += [Path(env), Path(env) / "fashion-mnist"]
    out.append(SYSTEM_DIR)
    return out


def _urlopen_fetch(url: str, dest: Path) -> None:
    with urllib.request.urlopen(url, timeout=60) as response, open(dest, "wb") as fh:
        while chunk := response.read(1 << 20):
            fh.write(chunk)


def md5sum(path: Path) -> str:
    digest = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as fh:
        while chunk := fh.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def download(folder: Path, fetch: Fetch = _urlopen_fetch) -> None:
    """Download the missing files into ``folder``, verify each MD5, and only then move it into place."""
    folder.mkdir(parents=True, exist_ok=True)
    for name, expected in FASHION_MNIST_FILES.items():
        target = folder / name
        if target.is_file():
            continue
        tmp = folder / f".{name}.part"
        errors = []
        for mirror in MIRRORS:
            try:
                fetch(mirror + name, tmp)
            except OSError as exc:
                errors.append(f"{mirror + name}: {exc}")
                continue
            actual = md5sum(tmp)
            if actual != expected:
                tmp.unlink(missing_ok=True)
                raise DatasetNotFoundError(
                    f"Fashion-MNIST download {mirror + name} is corrupt: MD5 {actual}, expected {expected}"
                )
            os.replace(tmp, target)
            break
        else:
            tmp.unlink(missing_ok=True)
            raise OSError("; ".join(errors))


def read_idx(path: Path) -> np.ndarray:
    """An IDX file (LeCun's MNIST format): magic (0, 0, dtype code, ndim), big-endian dims, data."""
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as fh:
            data = fh.read()
    except (OSError, EOFError) as exc:
        raise DatasetNotFoundError(f"{path}: unreadable IDX file ({exc})") from None
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] != 0x08:
        raise DatasetNotFoundError(f"{path}: not an unsigned-byte IDX file (bad magic number)")
    ndim = data[3]
    dims = struct.unpack(f">{ndim}I", data[4 : 4 + 4 * ndim])
    count = int(np.prod(dims))
    payload = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim)
    if payload.size != count:
        raise DatasetNotFoundError(f"{path}: IDX header says {dims} ({count} bytes) but holds {payload.size}")
    return payload.reshape(dims)


def _find_or_download(data_dir: Optional[str | os.PathLike], allow_download: bool, fetch: Fetch) -> Path:
    # a folder named explicitly is where the user wants the data: read it, download there or fail, never
    # silently train on files found elsewhere (a mistyped --data-dir, or one that lacks the files)
    if data_dir is not None and not Path(data_dir).is_dir() and not allow_download:
        raise DatasetNotFoundError(f"--data-dir {data_dir}: no such folder; {HOW_TO_GET}")
    candidates = candidate_dirs(data_dir)
    for folder in candidates:
        if _has_all(folder):
            return folder
    looked = ", ".join(str(c) for c in candidates)
    if allow_download:
        target = Path(data_dir) if data_dir is not None else (
            Path(os.environ["MOBILENETS_DATA"]) / "fashion-mnist" if os.environ.get("MOBILENETS_DATA")
            else Path.home() / ".cache" / "mobilenets" / "fashion-mnist"
        )
        try:
            download(target, fetch)
            return target
        except OSError as exc:
            raise DatasetNotFoundError(
                f"Fashion-MNIST not found (looked in {looked}) and the download into {target} failed ({exc}); "
                f"{HOW_TO_GET}"
            ) from None
    raise DatasetNotFoundError(f"Fashion-MNIST not found (looked in {looked}); {HOW_TO_GET}")


def load_fashion_mnist(
    data_dir: Optional[str | os.PathLike] = None, allow_download: bool = True, fetch: Fetch = _urlopen_fetch
) -> tuple[ArrayDataset, ArrayDataset, Path]:
    """(train, test, folder): 60,000 and 10,000 grayscale 28x28 images as uint8 tensors (N, 1, 28, 28)."""
    folder = _find_or_download(data_dir, allow_download, fetch)

    def split(prefix: str) -> ArrayDataset:
        images = read_idx(folder / f"{prefix}-images-idx3-ubyte.gz")
        labels = read_idx(folder / f"{prefix}-labels-idx1-ubyte.gz")
        if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
            raise DatasetNotFoundError(
                f"{folder}: {prefix} images {images.shape} and labels {labels.shape} do not match"
            )
        return ArrayDataset(torch.from_numpy(images.copy()).unsqueeze(1), torch.from_numpy(labels.astype(np.int64)))

    return split("train"), split("t10k"), folder
