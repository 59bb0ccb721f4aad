import json
import pickle

import pytest
import torch

import mobilenets
from mobilenets import CheckpointError, create_model, load, read_metadata, save
from mobilenets.checkpoint import atomic_write, load_state_dict_file


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


def test_exported_names():
    assert mobilenets.load is load and mobilenets.save is save
