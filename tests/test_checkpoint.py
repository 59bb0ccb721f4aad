import dataclasses
import json
import os
import pickle
import stat

import pytest
import torch

import mobilenets
from mobilenets import CheckpointError, create_model, load, read_metadata, save
from mobilenets.checkpoint import atomic_write, load_state_dict_file
from mobilenets.models.base import MobileNetFeatures


@pytest.fixture
def small_model():
    model = create_model("mobilenet_v3_small", width_mult=0.5, num_classes=4, in_chans=1, small_input=True)
    with torch.no_grad():  # random BN statistics so the round trip checks them too
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-1, 1)
                m.running_var.uniform_(0.5, 2)
    return model.eval()


def test_round_trip_rebuilds_model_from_file_alone(tmp_path, small_model):
    path = save(
        small_model,
        tmp_path / "m.safetensors",
        class_names=["a", "b", "c", "d"],
        mean=(0.286,),
        std=(0.353,),
        input_size=(1, 28, 28),
        training={"epochs": 3, "top1": 0.9},
    )
    model = load(path)
    x = torch.randn(2, 1, 28, 28)
    torch.testing.assert_close(model(x), small_model(x), rtol=0, atol=0)
    assert model.arch == "mobilenet_v3_small" and model.options == small_model.options
    assert model.info.mean == (0.286,) and model.info.input_size == (1, 28, 28)
    assert model.info.extra["class_names"] == ["a", "b", "c", "d"]
    assert model.info.extra["training"] == {"epochs": 3, "top1": 0.9}
    meta = read_metadata(path)
    assert meta["arch"] == "mobilenet_v3_small" and meta["options"]["width_mult"] == 0.5
    assert not model.training


def test_model_info_is_frozen_and_a_changed_one_is_a_new_object(small_model):
    """Preprocessing is given when an info is made (ModelInfo.updated); an info already handed out (to a
    feature extractor, say) never changes under its holder."""
    info = small_model.info
    with pytest.raises(dataclasses.FrozenInstanceError):
        info.mean = (0.5,)
    features = MobileNetFeatures(small_model)
    small_model.info = info.updated(mean=[0.5], input_size=[1, 32, 32], extra={"class_names": list("abcd")})
    small_model.reset_classifier(2)
    assert small_model.info.mean == (0.5,) and small_model.info.input_size == (1, 32, 32)
    assert small_model.info.extra == {"class_names": list("abcd")} and small_model.num_classes == 2
    assert features.info is info and info.mean == (0.485, 0.456, 0.406) and info.extra == {}
    assert info.options.num_classes == 4 and info.input_size == (1, 224, 224)


def test_pretrained_loads_into_chosen_architecture(tmp_path, small_model):
    path = save(small_model, tmp_path / "m.safetensors")
    model = create_model(
        "mobilenet_v3_small", width_mult=0.5, num_classes=4, in_chans=1, small_input=True, pretrained=str(path)
    ).eval()
    x = torch.randn(1, 1, 28, 28)
    torch.testing.assert_close(model(x), small_model(x))


def test_pretrained_mismatch_lists_tensors(tmp_path, small_model):
    path = save(small_model, tmp_path / "m.safetensors")
    with pytest.raises(CheckpointError) as exc:
        create_model("mobilenet_v3_small", width_mult=0.75, num_classes=4, in_chans=1, pretrained=str(path))
    msg = str(exc.value)
    assert str(path) in msg and "shape mismatch" in msg and "stem.conv.weight (8, 1, 3, 3) vs model (16, 1, 3, 3)" in msg
    assert "width_mult=0.5" in msg  # says what the file holds
    with pytest.raises(CheckpointError, match=r"missing \d+: .*unexpected \d+: "):
        create_model("mobilenet_v2", pretrained=str(path))


def test_pth_is_loaded_weights_only(tmp_path, small_model):
    good = tmp_path / "w.pth"
    torch.save({"state_dict": small_model.state_dict()}, good)
    tensors = load_state_dict_file(good)
    assert set(tensors) == set(small_model.state_dict())

    class Evil:
        def __reduce__(self):
            return (exec, ("raise SystemExit('unpickled')",))

    evil = tmp_path / "evil.pth"
    with open(evil, "wb") as fh:
        pickle.dump({"x": Evil()}, fh)
    with pytest.raises(CheckpointError, match="weights-only"):
        load_state_dict_file(evil)


@pytest.mark.parametrize("content", [b"", b"hello, not a checkpoint", b"\xff" * 64])
def test_not_a_checkpoint(tmp_path, content):
    path = tmp_path / "bad.safetensors"
    path.write_bytes(content)
    with pytest.raises(CheckpointError, match=r"bad\.safetensors: not a readable safetensors file"):
        load(path)


def test_truncated_file(tmp_path, small_model):
    path = save(small_model, tmp_path / "m.safetensors")
    data = path.read_bytes()
    cut = tmp_path / "cut.safetensors"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match=r"cut\.safetensors"):
        load(cut)


def test_missing_file_and_foreign_safetensors(tmp_path):
    with pytest.raises(CheckpointError, match="nope.safetensors: no such file"):
        load(tmp_path / "nope.safetensors")
    from safetensors.torch import save_file

    foreign = tmp_path / "foreign.safetensors"
    save_file({"w": torch.zeros(2)}, str(foreign))
    with pytest.raises(CheckpointError, match="without mobilenets metadata"):
        load(foreign)
    text = tmp_path / "x.txt"
    text.write_text("x")
    with pytest.raises(CheckpointError, match="unsupported file type '.txt'"):
        load_state_dict_file(text)


def test_metadata_from_newer_version_is_refused(tmp_path, small_model):
    from safetensors.torch import load_file, save_file

    path = save(small_model, tmp_path / "m.safetensors")
    meta = read_metadata(path)
    meta["options"]["fancy_new_option"] = 1
    save_file(load_file(str(path)), str(path), metadata={"mobilenets": json.dumps(meta)})
    with pytest.raises(CheckpointError, match="unknown model options fancy_new_option"):
        load(path)


def test_save_validation(tmp_path, small_model):
    with pytest.raises(ValueError, match="must end in .safetensors"):
        save(small_model, tmp_path / "m.pt")
    with pytest.raises(ValueError, match="class_names has 2 entries but the model has 4 classes"):
        save(small_model, tmp_path / "m.safetensors", class_names=["a", "b"])
    with pytest.raises(ValueError, match="not JSON-serialisable"):
        save(small_model, tmp_path / "m.safetensors", training={"x": object()})
    with pytest.raises(ValueError, match="reserved"):
        save(small_model, tmp_path / "m.safetensors", arch="other")
    assert not list(tmp_path.iterdir())  # nothing half-written left behind


def test_atomic_write_keeps_old_file_on_failure(tmp_path, small_model):
    path = save(small_model, tmp_path / "m.safetensors")
    before = path.read_bytes()

    def explode(tmp):
        with open(tmp, "wb") as fh:
            fh.write(b"partial")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        atomic_write(path, explode)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["m.safetensors"]


@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_atomic_write_gives_the_mode_a_plain_open_would(tmp_path, umask, mode):
    """The temporary file is private (0600); the file written is not: it follows the umask as open() does."""
    old = os.umask(umask)
    try:
        atomic_write(tmp_path / "a.txt", lambda tmp: open(tmp, "w").write("x"))
        with open(tmp_path / "b.txt", "w") as fh:
            fh.write("x")
    finally:
        os.umask(old)
    written, plain = (stat.S_IMODE(os.stat(tmp_path / name).st_mode) for name in ("a.txt", "b.txt"))
    assert written == plain == mode


def test_exported_names():
    assert mobilenets.load is load and mobilenets.save is save


def test_load_validates_class_names_as_save_does(tmp_path, small_model, capsys):
    """A file whose class_names do not fit its classifier (edited, or written by other code) is refused by
    load, which every command goes through, rather than crashing predict with an IndexError."""
    from safetensors.torch import load_file, save_file

    from mobilenets.cli import main

    path = save(small_model, tmp_path / "m.safetensors", class_names=["a", "b", "c", "d"])
    meta = read_metadata(path)
    for names, match in (
        ("abcd", "class_names must be a list of strings"),
        ([1, 2, 3, 4], "class_names must be a list of strings"),
        (["a", "b"], "class_names has 2 entries but the model has 4 classes"),
    ):
        meta["class_names"] = names
        save_file(load_file(str(path)), str(path), metadata={"mobilenets": json.dumps(meta)})
        with pytest.raises(CheckpointError, match=f"m.safetensors: metadata does not fit the model: {match}"):
            load(path)
    from PIL import Image

    Image.new("L", (28, 28), 128).save(tmp_path / "x.png")
    assert main(["predict", str(path), str(tmp_path / "x.png")]) == 2
    assert "metadata does not fit the model: class_names has 2 entries" in capsys.readouterr().err


def test_other_files_say_what_they_are(tmp_path, small_model):
    """load (and so export, evaluate and predict on a non-.pt file) on a training state, a PyTorch or Keras
    file says what the file is and what takes it, not that a safetensors header is too large."""
    from mobilenets.train.trainer import STATE_FORMAT

    state = tmp_path / "run" / "last.pt"
    state.parent.mkdir()
    torch.save({"format": STATE_FORMAT, "model": small_model.state_dict(), "ema": None, "optimizer": {}}, state)
    with pytest.raises(CheckpointError) as exc:
        load(state)
    message = str(exc.value)
    assert message.startswith(f"{state}: a mobilenets training state") and "header" not in message
    assert f"`mobilenets evaluate {state}`" in message and str(state.parent / "best.safetensors") in message

    weights = tmp_path / "weights.pth"
    torch.save(small_model.state_dict(), weights)
    with pytest.raises(CheckpointError, match=r"weights.pth: a PyTorch file of mobilenets tensors .*pretrained="):
        load(weights)
    import torchvision

    tv = tmp_path / "tv.pth"
    torch.save(torchvision.models.mobilenet_v3_small().state_dict(), tv)
    with pytest.raises(CheckpointError, match="tv.pth: a PyTorch file of torchvision weights.*--from torchvision"):
        load(tv)
    h5 = tmp_path / "keras.h5"
    h5.write_bytes(b"\x89HDF\r\n\x1a\n" + bytes(100))
    with pytest.raises(CheckpointError, match="keras.h5: a Keras weights file .*--from keras"):
        load(h5)
    pickled = tmp_path / "model.pth"
    torch.save(torch.nn.Linear(2, 2), pickled)  # a whole module, as torch.save(model) writes
    with pytest.raises(CheckpointError, match="model.pth: a PyTorch pickle holding Python objects"):
        load(pickled)


def test_atomic_write_errors_name_the_path_given(tmp_path):
    folder = tmp_path / "out"
    folder.mkdir()
    with pytest.raises(ValueError, match=f"{folder}: is a directory"):
        atomic_write(folder, lambda tmp: None)
    afile = tmp_path / "f.txt"
    afile.write_text("x")
    with pytest.raises(ValueError, match=f"{afile / 'sub' / 'x.bin'}: {afile} is a file, not a folder"):
        atomic_write(afile / "sub" / "x.bin", lambda tmp: None)

    def fails(tmp):
        raise PermissionError(13, "Permission denied", tmp)

    target = tmp_path / "x.bin"
    with pytest.raises(PermissionError) as exc:
        atomic_write(target, fails)
    assert exc.value.filename == str(target) and ".tmp" not in str(exc.value)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f.txt", "out"]
