"""One image decoder for training, evaluation and prediction (`mobilenets.data.load_image`), ImageFolder scans."""

from __future__ import annotations

import struct
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import mobilenets
from mobilenets.data import DatasetNotFoundError, build_data, load_image
from mobilenets.data.images import UnreadableImageError, convert_image
from mobilenets.train.predict import preprocess

WHITE, RED, BLUE = (255, 255, 255), (255, 0, 0), (0, 0, 255)


def _halves(left, right, size=(40, 40)) -> np.ndarray:
    """An (h, w, ...) array whose left half holds ``left`` and right half ``right``."""
    w, h = size
    array = np.empty((h, w, len(left)), dtype=np.asarray(left).dtype)
    array[:, : w // 2], array[:, w // 2 :] = left, right
    return array


def _write(kind: str, path: Path) -> tuple[Path, dict[tuple[int, int], tuple[int, ...]], int]:
    """An image file of ``kind``, the RGB values load_image must give at some (x, y), and a tolerance."""
    path = path.with_suffix(".jpg" if kind.endswith("jpeg") else ".tiff" if kind.endswith("tiff") else ".png")
    if kind == "png16":  # 40000 / 65535 of full scale
        Image.fromarray(np.full((40, 40), 40000, dtype=np.uint16)).save(path)
        return path, {(20, 20): (156,) * 3}, 0
    if kind == "float_tiff":  # floats in [0, 1]
        Image.fromarray(np.full((40, 40), 0.25, dtype=np.float32)).save(path)
        return path, {(20, 20): (64,) * 3}, 0
    if kind == "palette_transparent":
        image = Image.fromarray(_halves([0], [1])[..., 0].astype(np.uint8), mode="P")
        image.putpalette([*RED, *BLUE])
        image.save(path, transparency=0)
        return path, {(5, 20): WHITE, (35, 20): BLUE}, 0
    if kind == "rgba":
        Image.fromarray(_halves([0, 0, 0, 0], [200, 0, 0, 128]).astype(np.uint8), mode="RGBA").save(path)
        # alpha 128/255 over white: 200 * a + 255 * (1 - a), 255 * (1 - a)
        return path, {(5, 20): WHITE, (35, 20): (227, 127, 127)}, 1
    if kind == "la":
        Image.fromarray(_halves([10, 0], [10, 255]).astype(np.uint8), mode="LA").save(path)
        return path, {(5, 20): WHITE, (35, 20): (10,) * 3}, 0
    if kind == "cmyk_jpeg":
        Image.new("CMYK", (40, 40), (0, 255, 255, 0)).save(path, quality=95)
        return path, {(20, 20): RED}, 3
    if kind == "exif_rotated_jpeg":
        # stored 40 wide, 20 high, red left and blue right; orientation 6 says "rotate 90 degrees clockwise to
        # view", so the upright image is 20 wide, 40 high, red on top
        exif = Image.Exif()
        exif[0x0112] = 6
        Image.fromarray(_halves(RED, BLUE, size=(40, 20)).astype(np.uint8)).save(path, exif=exif, quality=95)
        return path, {(10, 5): RED, (10, 35): BLUE}, 3
    raise AssertionError(kind)


KINDS = ["png16", "float_tiff", "palette_transparent", "rgba", "la", "cmyk_jpeg", "exif_rotated_jpeg"]


@pytest.mark.parametrize("kind", KINDS)
def test_training_and_predict_see_the_same_pixels(kind, tmp_path):
    from mobilenets.train.predict import preprocess_file

    for split in ("train", "val"):
        (tmp_path / split / "only").mkdir(parents=True)
    path, expected, tolerance = _write(kind, tmp_path / "train" / "only" / "image")
    (tmp_path / "val" / "only" / path.name).write_bytes(path.read_bytes())
    bundle = build_data("imagefolder", tmp_path, val_fraction=0.0, image_size=32)
    assert bundle.skipped == []

    decoded = bundle.train.base[0][0]  # what the training loader hands the augmentation
    assert decoded.mode == "RGB"
    assert np.array_equal(np.asarray(decoded), np.asarray(load_image(path)))
    if kind == "exif_rotated_jpeg":
        assert decoded.size == (20, 40)
    for (x, y), rgb in expected.items():
        got = decoded.getpixel((x, y))
        assert max(abs(g - e) for g, e in zip(got, rgb)) <= tolerance, (kind, (x, y), got, rgb)

    meta = {  # what the trainer writes into best.safetensors
        "input_size": [bundle.in_chans, bundle.image_size, bundle.image_size],
        "mean": list(bundle.mean), "std": list(bundle.std), "training": {"eval_resize": bundle.eval_resize},
    }
    evaluated = bundle.test[0][0]
    predicted = preprocess_file(tmp_path / "val" / "only" / path.name, meta)
    assert evaluated.shape == (3, 32, 32) and torch.equal(evaluated, predicted)


def test_fixed_ranges_clipping_and_channels(tmp_path):
    floats = np.array([[-0.5, 0.0, 0.5, 1.0, 1.7]], dtype=np.float32)
    Image.fromarray(floats).save(tmp_path / "f.tiff")
    # floats are taken as [0, 1] and clipped, whatever the image's own maximum
    assert np.asarray(load_image(tmp_path / "f.tiff", channels=1)).tolist() == [[0, 0, 128, 255, 255]]
    Image.fromarray(np.array([[0, 257, 65535, 70000]], dtype=np.int32)).save(tmp_path / "i.tiff")
    assert Image.open(tmp_path / "i.tiff").mode == "I"
    assert np.asarray(load_image(tmp_path / "i.tiff", channels=1)).tolist() == [[0, 1, 255, 255]]
    assert np.asarray(load_image(tmp_path / "i.tiff")).shape == (1, 4, 3)

    # 1 channel (Fashion-MNIST-style models): ITU-R 601-2 luma of the composited RGB, as predict always did
    Image.new("RGB", (2, 2), RED).save(tmp_path / "red.png")
    assert load_image(tmp_path / "red.png", channels=1).mode == "L"
    assert load_image(tmp_path / "red.png", channels=1).getpixel((0, 0)) == 76
    assert convert_image(Image.fromarray(np.full((4, 4), 65535, dtype=np.uint16)), 1).getpixel((0, 0)) == 255
    assert convert_image(Image.fromarray(np.full((4, 4), 32768, dtype=np.uint16)), 1).getpixel((0, 0)) == 128
    assert convert_image(Image.new("RGBA", (3, 3), (0, 0, 0, 0)), 1).getpixel((0, 0)) == 255  # onto white

    for bad in (0, 2, 4, "3"):
        with pytest.raises(ValueError, match=r"channels must be 1 \(grayscale\) or 3 \(RGB\), got"):
            load_image(tmp_path / "red.png", channels=bad)
    with pytest.raises(FileNotFoundError, match="missing.png: no such image file"):
        load_image(tmp_path / "missing.png")
    (tmp_path / "fake.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    with pytest.raises(UnreadableImageError, match=r"fake.png: not a readable image \(UnidentifiedImageError"):
        load_image(tmp_path / "fake.png")


def _tree(root: Path, classes: dict[str, int]) -> None:
    for name, count in classes.items():
        (root / "train" / name).mkdir(parents=True)
        for i in range(count):
            Image.new("RGB", (20, 20), (40 * i, 0, 0)).save(root / "train" / name / f"{i}.png")


def test_image_folder_refuses_an_empty_class_folder(tmp_path):
    _tree(tmp_path, {"cat": 3, "dog": 0, "owl": 0})
    Image.new("RGB", (20, 20)).save(tmp_path / "train" / "owl" / "0.gif")
    with pytest.raises(DatasetNotFoundError, match=r"class folder\(s\) dog, owl hold no readable images "
                                                   r"\(1 file\(s\) skipped there\).*add images or remove"):
        build_data("imagefolder", tmp_path, image_size=32)


def test_image_folder_reports_unsupported_and_stray_files(tmp_path):
    _tree(tmp_path, {"cat": 3, "dog": 3})
    Image.new("RGB", (20, 20)).save(tmp_path / "train" / "cat" / "extra.gif")
    (tmp_path / "train" / "dog" / "README").write_text("no extension")
    (tmp_path / "train" / "labels.csv").write_text("outside any class folder")
    bundle = build_data("imagefolder", tmp_path, val_fraction=0.0, image_size=32)
    assert len(bundle.train) == 6
    reasons = {Path(p).name: reason for p, reason in bundle.skipped}
    assert sorted(reasons) == ["README", "extra.gif", "labels.csv"]
    assert reasons["extra.gif"].startswith("unsupported file type (.gif); accepted: .jpg, .jpeg, .png")
    assert reasons["README"].startswith("unsupported file type (without an extension)")
    assert reasons["labels.csv"] == "not inside a class folder"


def test_the_skipped_files_are_counted_by_why(tmp_path):
    """The line a training run logs counts undecodable images apart from files of other types and stray files."""
    from mobilenets.data.image_folder import describe_skipped

    _tree(tmp_path, {"cat": 3, "dog": 3})
    (tmp_path / "train" / "cat" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    Image.new("RGB", (20, 20)).save(tmp_path / "train" / "cat" / "extra.gif")
    (tmp_path / "train" / "dog" / "README").write_text("no extension")
    (tmp_path / "train" / "labels.csv").write_text("outside any class folder")
    skipped = build_data("imagefolder", tmp_path, val_fraction=0.0, image_size=32).skipped
    message = describe_skipped(skipped)
    assert message.startswith("skipped 1 unreadable image(s), 2 file(s) of another type, 1 file(s) outside a class "
                              "folder; first: ")
    assert message.endswith(f"; first: {skipped[0][0]} ({skipped[0][1]})")
    by_name = {Path(p).name: (p, reason) for p, reason in skipped}
    only_types = [by_name["extra.gif"], by_name["README"]]
    assert describe_skipped(only_types).startswith("skipped 2 file(s) of another type; first: ")
    assert describe_skipped([by_name["broken.png"]]).startswith("skipped 1 unreadable image(s); first: ")


def _png_header_only(path: Path, width: int, height: int) -> None:
    """A PNG that declares width x height pixels and holds none: enough for Pillow's size check."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IEND", b""))


def test_predict_on_a_decompression_bomb_is_one_line_naming_the_file(tmp_path):
    model = mobilenets.create_model("mobilenet_v3_small", width_mult=0.35, num_classes=2, small_input=True)
    mobilenets.save(model, tmp_path / "m.safetensors", class_names=["a", "b"], input_size=(3, 32, 32))
    _png_header_only(tmp_path / "huge.png", 20000, 20000)  # 400 M pixels, over twice Pillow's limit
    Image.new("RGB", (40, 40), RED).save(tmp_path / "fine.png")
    proc = subprocess.run(
        [sys.executable, "-m", "mobilenets", "predict", "m.safetensors", "fine.png", "huge.png"],
        cwd=tmp_path, capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode != 0 and proc.stdout == ""
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert lines[0].startswith("mobilenets predict: error: huge.png: not a readable image (DecompressionBombError")


@pytest.mark.parametrize("tag", ["torchvision:IMAGENET1K_V1", "torchvision:IMAGENET1K_V2"])
def test_predict_preprocesses_published_weights_as_their_source_does(tag):
    """A converted checkpoint's metadata carries its source's evaluation transform (resize, crop, interpolation,
    mean/std); predict must apply that one, not a training run's eval_resize."""
    import torchvision
    from mobilenets.weights import find

    entry = find("mobilenet_v3_large", 1.0, tag)
    pre = entry.preprocessing
    meta = {"input_size": (3, pre.crop, pre.crop), "mean": pre.mean, "std": pre.std, "preprocessing": pre.to_dict()}
    reference = torchvision.models.get_weight(f"MobileNet_V3_Large_Weights.{tag.split(':')[1]}").transforms()
    image = Image.fromarray(np.random.default_rng(0).integers(0, 256, (300, 260, 3), dtype=np.uint8))
    ours = preprocess(image, meta)
    assert ours.shape == (3, pre.crop, pre.crop)
    # torchvision resizes the PIL image, we the uint8 tensor: the two round some pixels one level apart
    one_level = 1.0 / (255 * min(pre.std))
    torch.testing.assert_close(ours, reference(image), atol=one_level * 1.01, rtol=0)
