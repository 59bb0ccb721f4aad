"""Datasets: Fashion-MNIST files and download verification, CIFAR archives, ImageFolder trees, splits, transforms."""

from __future__ import annotations

import gzip
import hashlib
import pickle
import shutil
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from mobilenets.data import DatasetNotFoundError, build_data
from mobilenets.data import fashion_mnist as fm
from mobilenets.data.base import ArrayDataset, TransformedView, split_indices
from mobilenets.data.cifar import load_cifar

SYSTEM_FMNIST = Path("/usr/share/datasets/fashion-mnist")


def _write_idx(path: Path, array: np.ndarray) -> None:
    header = bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    with gzip.open(path, "wb") as fh:
        fh.write(header + array.astype(np.uint8).tobytes())


def _fake_fmnist(folder: Path, n_train: int = 40, n_test: int = 20) -> None:
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True, exist_ok=True)
    _write_idx(folder / "train-images-idx3-ubyte.gz", rng.integers(0, 256, (n_train, 28, 28)))
    _write_idx(folder / "train-labels-idx1-ubyte.gz", np.arange(n_train) % 10)
    _write_idx(folder / "t10k-images-idx3-ubyte.gz", rng.integers(0, 256, (n_test, 28, 28)))
    _write_idx(folder / "t10k-labels-idx1-ubyte.gz", np.arange(n_test) % 10)


def test_idx_reader_round_trip_and_rejects_bad_magic(tmp_path):
    array = np.arange(2 * 3 * 4).reshape(2, 3, 4) % 256
    _write_idx(tmp_path / "a.gz", array)
    np.testing.assert_array_equal(fm.read_idx(tmp_path / "a.gz"), array)
    (tmp_path / "bad").write_bytes(b"\x01\x02\x03\x04rest")
    with pytest.raises(DatasetNotFoundError, match="bad magic"):
        fm.read_idx(tmp_path / "bad")


def test_fashion_mnist_search_order_data_dir_then_env(tmp_path, monkeypatch):
    _fake_fmnist(tmp_path / "explicit", n_train=30)
    _fake_fmnist(tmp_path / "env" / "fashion-mnist", n_train=50)
    monkeypatch.setenv("MOBILENETS_DATA", str(tmp_path / "env"))
    train, test, folder = fm.load_fashion_mnist(tmp_path / "explicit", allow_download=False)
    assert folder == tmp_path / "explicit" and len(train) == 30 and len(test) == 20
    train, _, folder = fm.load_fashion_mnist(None, allow_download=False)
    assert folder == tmp_path / "env" / "fashion-mnist" and len(train) == 50
    assert train.images.shape == (50, 1, 28, 28) and train.images.dtype == torch.uint8


def test_missing_fashion_mnist_says_where_it_looked_and_how_to_get_it(tmp_path, monkeypatch):
    monkeypatch.setenv("MOBILENETS_DATA", str(tmp_path / "env"))
    monkeypatch.setattr(fm, "SYSTEM_DIR", tmp_path / "system")
    with pytest.raises(DatasetNotFoundError, match="nowhere: no such folder"):
        build_data("fashion_mnist", tmp_path / "nowhere", allow_download=False)
    (tmp_path / "nowhere").mkdir()  # a folder given is the only place looked in (tests/test_train_inputs.py)
    with pytest.raises(DatasetNotFoundError, match=r"looked in .*nowhere, .*nowhere/fashion-mnist\); "):
        build_data("fashion_mnist", tmp_path / "nowhere", allow_download=False)
    with pytest.raises(DatasetNotFoundError) as info:
        build_data("fashion_mnist", None, allow_download=False)
    message = str(info.value)
    for place in (tmp_path / "env", tmp_path / "system"):
        assert str(place) in message
    assert "apt-get install dataset-fashion-mnist" in message and "--data-dir" in message


def test_download_verifies_md5_then_installs(tmp_path, monkeypatch):
    source = tmp_path / "mirror"
    _fake_fmnist(source)
    sums = {name: hashlib.md5((source / name).read_bytes()).hexdigest() for name in fm.FASHION_MNIST_FILES}
    monkeypatch.setattr(fm, "FASHION_MNIST_FILES", sums)
    fetched = []

    def fetch(url: str, dest: Path) -> None:
        fetched.append(url)
        shutil.copy(source / url.rsplit("/", 1)[1], dest)

    monkeypatch.setattr(fm, "SYSTEM_DIR", tmp_path / "system")
    monkeypatch.delenv("MOBILENETS_DATA", raising=False)
    train, test, folder = fm.load_fashion_mnist(tmp_path / "data", allow_download=True, fetch=fetch)
    assert folder == tmp_path / "data" and len(train) == 40 and len(test) == 20
    assert sorted(u.rsplit("/", 1)[1] for u in fetched) == sorted(sums)
    assert all(u.startswith(fm.MIRRORS[0]) for u in fetched)
    assert not list((tmp_path / "data").glob(".*part"))


def test_download_with_one_flipped_byte_is_refused_and_nothing_installed(tmp_path, monkeypatch):
    source = tmp_path / "mirror"
    _fake_fmnist(source)
    sums = {name: hashlib.md5((source / name).read_bytes()).hexdigest() for name in fm.FASHION_MNIST_FILES}
    monkeypatch.setattr(fm, "FASHION_MNIST_FILES", sums)
    broken = "t10k-labels-idx1-ubyte.gz"

    def fetch(url: str, dest: Path) -> None:
        data = bytearray((source / url.rsplit("/", 1)[1]).read_bytes())
        if url.endswith(broken):
            data[len(data) // 2] ^= 0x01  # corrupted in transit
        dest.write_bytes(bytes(data))

    monkeypatch.setattr(fm, "SYSTEM_DIR", tmp_path / "system")
    monkeypatch.delenv("MOBILENETS_DATA", raising=False)
    with pytest.raises(DatasetNotFoundError, match=f"{broken} is corrupt: MD5 [0-9a-f]{{32}}, expected {sums[broken]}"):
        fm.load_fashion_mnist(tmp_path / "data", allow_download=True, fetch=fetch)
    assert not (tmp_path / "data" / broken).exists()
    assert not list((tmp_path / "data").glob(".*part"))  # no temporary file left behind either


@pytest.mark.skipif(not SYSTEM_FMNIST.is_dir(), reason="needs Debian's dataset-fashion-mnist")
def test_download_with_real_checksums_rejects_files_that_differ_from_upstream(tmp_path, monkeypatch):
    # Debian recompresses the .gz files, so their bytes cannot match the upstream MD5 sums: a download that
    # delivered them must be refused and nothing left in place.
    monkeypatch.setattr(fm, "SYSTEM_DIR", tmp_path / "system")
    monkeypatch.delenv("MOBILENETS_DATA", raising=False)

    def fetch(url: str, dest: Path) -> None:
        shutil.copy(SYSTEM_FMNIST / url.rsplit("/", 1)[1], dest)

    with pytest.raises(DatasetNotFoundError, match="corrupt: MD5 .* expected 8d4fb7e6c68d591d4c3dfef9ec88bf0d"):
        fm.load_fashion_mnist(tmp_path / "data", allow_download=True, fetch=fetch)
    assert not (tmp_path / "data" / "train-images-idx3-ubyte.gz").exists()


def test_offline_download_failure_names_places_and_remedy(tmp_path, monkeypatch):
    monkeypatch.setattr(fm, "SYSTEM_DIR", tmp_path / "system")
    monkeypatch.delenv("MOBILENETS_DATA", raising=False)

    def fetch(url: str, dest: Path) -> None:
        raise OSError("network is unreachable")

    with pytest.raises(DatasetNotFoundError, match="download into .* failed .*unreachable.*dataset-fashion-mnist"):
        fm.load_fashion_mnist(tmp_path / "data", allow_download=True, fetch=fetch)


def _fake_cifar(root: Path, name: str) -> list[str]:
    rng = np.random.default_rng(1)
    if name == "cifar10":
        folder, label_key, names_key = root / "cifar-10-batches-py", b"labels", b"label_names"
        files, meta_file, test_file, classes = [f"data_batch_{i}" for i in range(1, 6)], "batches.meta", "test_batch", 10
    else:
        folder, label_key, names_key = root / "cifar-100-python", b"fine_labels", b"fine_label_names"
        files, meta_file, test_file, classes = ["train"], "meta", "test", 100
    folder.mkdir(parents=True)
    class_names = [f"class{i}" for i in range(classes)]
    with open(folder / meta_file, "wb") as fh:
        pickle.dump({names_key: [n.encode() for n in class_names]}, fh)
    for fname, n in [(f, 6) for f in files] + [(test_file, 4)]:
        with open(folder / fname, "wb") as fh:
            pickle.dump({b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
                         label_key: [int(v) for v in rng.integers(0, classes, n)]}, fh)
    return class_names


@pytest.mark.parametrize("name, train_size", [("cifar10", 30), ("cifar100", 6)])
def test_cifar_archive_layout(tmp_path, name, train_size):
    class_names = _fake_cifar(tmp_path, name)
    train, test, names, folder = load_cifar(name, tmp_path)
    assert names == class_names and len(train) == train_size and len(test) == 4
    assert train.images.shape[1:] == (3, 32, 32) and train.images.dtype == torch.uint8
    # channel-major rows: the first 1024 bytes of a row are the red plane
    raw = pickle.load(open(folder / ("test_batch" if name == "cifar10" else "test"), "rb"))[b"data"]
    assert torch.equal(test.images[0, 0].flatten(), torch.from_numpy(raw[0, :1024]))
    bundle = build_data(name, tmp_path, val_fraction=0.0)
    assert bundle.in_chans == 3 and bundle.image_size == 32 and bundle.small_input and bundle.class_names == class_names


def test_cifar_refuses_pickles_that_would_run_code(tmp_path):
    _fake_cifar(tmp_path, "cifar10")

    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    with open(tmp_path / "cifar-10-batches-py" / "test_batch", "wb") as fh:
        pickle.dump({b"data": Evil()}, fh)
    with pytest.raises(DatasetNotFoundError, match="refusing to load builtins.print"):
        load_cifar("cifar10", tmp_path)


def test_missing_cifar_explains(tmp_path):
    with pytest.raises(DatasetNotFoundError, match="cifar-10-python.tar.gz"):
        load_cifar("cifar10", tmp_path)


def test_image_folder_skips_and_reports_corrupt_files(tmp_path):
    from PIL import Image

    for split, per_class in (("train", 5), ("val", 2)):
        for cls in ("cat", "dog"):
            folder = tmp_path / split / cls
            folder.mkdir(parents=True)
            for i in range(per_class):
                Image.new("RGB", (40 + i, 30), (i * 40, 0, 0)).save(folder / f"{i}.png")
    (tmp_path / "train" / "cat" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    good = (tmp_path / "train" / "dog" / "0.png").read_bytes()
    (tmp_path / "train" / "dog" / "truncated.png").write_bytes(good[: len(good) // 2])
    (tmp_path / "train" / "dog" / "notes.txt").write_text("not an image: skipped and counted too")
    bundle = build_data("imagefolder", tmp_path, val_fraction=0.2, image_size=32)
    assert bundle.class_names == ["cat", "dog"]
    assert sorted(Path(p).name for p, _ in bundle.skipped) == ["broken.jpg", "notes.txt", "truncated.png"]
    assert len(bundle.train) + len(bundle.val) == 10 and len(bundle.test) == 4
    image, label = bundle.train[0]
    assert image.shape == (3, 32, 32) and image.dtype == torch.float32
    assert bundle.test[0][0].shape == (3, 32, 32)


def test_image_folder_without_train_dir_is_explained(tmp_path):
    with pytest.raises(DatasetNotFoundError, match="train/<class>/"):
        build_data("imagefolder", tmp_path)


def test_stratified_split_is_deterministic_and_disjoint():
    targets = [i % 3 for i in range(300)]
    train, val = split_indices(targets, 0.1, seed=5)
    assert split_indices(targets, 0.1, seed=5) == (train, val)
    assert set(train).isdisjoint(val) and len(train) + len(val) == 300
    assert [sum(targets[i] == c for i in val) for c in range(3)] == [10, 10, 10]
    assert split_indices(targets, 0.1, seed=6)[1] != val


@pytest.mark.parametrize("batched", [False, True], ids=["torchvision", "batched"])
def test_augmentation_depends_only_on_seed_epoch_and_index(batched):
    from mobilenets.data.transforms import BatchedSmallImageTransform, small_image_train

    images = torch.randint(0, 256, (8, 1, 28, 28), dtype=torch.uint8)
    base = ArrayDataset(images, torch.arange(8) % 2)
    transform = (
        BatchedSmallImageTransform((0.5,), (0.25,), padding=3, flip=True, erasing=0.5)
        if batched else small_image_train(28, (0.5,), (0.25,), erasing=0.5)
    )
    view = TransformedView(base, None, transform, seed=3)
    first = torch.stack([view[i][0] for i in range(8)])
    # a whole batch (what DataLoader asks for) gives each sample what it gets alone, in any batch order
    batch = view.__getitems__([5, 0, 3])
    assert [label for _, label in batch] == [1, 0, 1]
    assert all(torch.equal(image, first[i]) for (image, _), i in zip(batch, [5, 0, 3]))
    torch.manual_seed(123)  # global RNG state must not matter, and must not be consumed
    state = torch.get_rng_state()
    again = torch.stack([view[i][0] for i in reversed(range(8))]).flip(0)
    assert torch.equal(first, again) and torch.equal(torch.get_rng_state(), state)
    view.set_epoch(1)
    assert not torch.equal(first, torch.stack([view[i][0] for i in range(8)]))
    assert first.shape == (8, 1, 28, 28) and first.dtype == torch.float32


def _unnormalise(x: torch.Tensor, mean: tuple, std: tuple) -> torch.Tensor:
    """Back to uint8 pixels from a normalised (N, C, H, W) batch."""
    m, s = torch.tensor(mean).view(1, -1, 1, 1), torch.tensor(std).view(1, -1, 1, 1)
    return (x * s + m).mul(255).round().to(torch.uint8)


def test_batched_augmentation_is_a_padded_crop_and_flip_of_each_image():
    from mobilenets.data.transforms import BatchedSmallImageTransform

    torch.manual_seed(0)
    images = torch.randint(1, 256, (64, 2, 12, 10), dtype=torch.uint8)  # no zero pixel: padding is recognisable
    transform = BatchedSmallImageTransform((0.3, 0.6), (0.2, 0.4), padding=2, flip=True)
    out = transform(images, list(range(100, 164)))
    assert out.shape == (64, 2, 12, 10) and out.dtype == torch.float32
    restored = _unnormalise(out, (0.3, 0.6), (0.2, 0.4))
    padded = torch.nn.functional.pad(images, (2, 2, 2, 2))
    found = set()
    for i in range(64):
        matches = [
            (dy, dx, flip)
            for dy in range(5) for dx in range(5) for flip in (False, True)
            if torch.equal(restored[i], (lambda c: c.flip(-1) if flip else c)(padded[i, :, dy:dy + 12, dx:dx + 10]))
        ]
        assert len(matches) == 1, f"sample {i} is not one crop of its padded image: {matches}"
        found.add(matches[0])
    # offsets and flips vary across the batch (25 x 2 possibilities, 64 samples)
    assert len({(dy, dx) for dy, dx, _ in found}) >= 12 and {f for _, _, f in found} == {False, True}
    plain = BatchedSmallImageTransform((0.3, 0.6), (0.2, 0.4))
    assert torch.equal(_unnormalise(plain(images, range(64)), (0.3, 0.6), (0.2, 0.4)), images)


def test_batched_random_erasing_blanks_one_rectangle_at_the_requested_rate():
    from mobilenets.data.transforms import BatchedSmallImageTransform

    images = torch.full((2000, 1, 28, 28), 200, dtype=torch.uint8)
    out = BatchedSmallImageTransform((0.5,), (0.25,), erasing=0.4)(images, range(2000))
    erased = out[:, 0] == 0.0
    rate = erased.flatten(1).any(1).float().mean().item()
    assert abs(rate - 0.4) < 0.04
    for mask in erased[erased.flatten(1).any(1)][:200]:
        rows, cols = mask.any(1).nonzero().flatten(), mask.any(0).nonzero().flatten()
        box = mask[rows.min():rows.max() + 1, cols.min():cols.max() + 1]
        assert box.all() and box.sum() == mask.sum()  # one filled rectangle
        assert 0.02 * 784 - 28 <= mask.sum() <= 0.33 * 784 + 28  # torchvision's area range, up to rounding
    with pytest.raises(ValueError, match="uint8"):
        BatchedSmallImageTransform((0.5,), (0.25,))(images.float(), range(2000))


@pytest.mark.skipif(not SYSTEM_FMNIST.is_dir(), reason="needs Debian's dataset-fashion-mnist")
def test_real_fashion_mnist_bundle():
    bundle = build_data("fashion_mnist", SYSTEM_FMNIST)
    assert (len(bundle.train), len(bundle.val), len(bundle.test)) == (54_000, 6_000, 10_000)
    assert bundle.class_names[0] == "T-shirt/top" and bundle.class_names[9] == "Ankle boot"
    assert bundle.in_chans == 1 and bundle.image_size == 28 and bundle.small_input
    # the widely quoted Fashion-MNIST statistics are mean 0.2860, std 0.3530 over all 60,000 images
    assert abs(bundle.mean[0] - 0.286) < 0.003 and abs(bundle.std[0] - 0.353) < 0.003
    assert sorted({int(bundle.test.base.labels[i]) for i in range(10_000)}) == list(range(10))
