"""What `train` checks before it touches anything, and how one run at a time owns its output folder: settings,
dataset names and folders are refused before the folder is written; the folder is locked while a run trains;
a run that fails before its first checkpoint leaves the folder (and the run it was to replace) as it was."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from test_data import _fake_cifar, _fake_fmnist
from test_train import _history, config, crash_during, quiet, synthetic_bundle

import mobilenets
from mobilenets.cli import main
from mobilenets.data import DATASETS, DatasetNotFoundError, build_data, dataset_name
from mobilenets.data import fashion_mnist as fm
from mobilenets.train import OutputExists, TrainConfig, Trainer, TrainingDiverged, train
from mobilenets.train.run_lock import LOCK_NAME, OutputInUse, RunLock

pytestmark = pytest.mark.usefixtures("restore_threads")
TESTS = Path(__file__).resolve().parent


def _short(tmp_path: Path, **overrides) -> TrainConfig:
    return config(tmp_path, **{"epochs": 1, "limit_train_batches": 2, **overrides})


def _poison_after(step: int):
    """An on_step hook that makes the next step's loss NaN (the check runs before a step is applied)."""
    def poison(t: Trainer) -> None:
        if t.global_step == step:
            with torch.no_grad():
                t.model.classifier.weight.fill_(float("nan"))
    return poison


# -- the lock --------------------------------------------------------------------------------

def test_a_second_run_on_a_folder_in_use_is_refused_naming_the_first(tmp_path):
    cfg = _short(tmp_path, epochs=2)
    out = Path(cfg.output)
    trainer = Trainer(cfg, synthetic_bundle(), log=quiet)
    refusals: list[str] = []

    def second_run(t: Trainer) -> None:
        if t.global_step == 3:  # epoch 2: the first run has written its first epoch
            owner = json.loads((out / LOCK_NAME).read_text())
            assert owner["pid"] == os.getpid() and owner["host"] == socket.gethostname()
            for flags in ({}, {"resume": True}, {"overwrite": True}):
                with pytest.raises(OutputInUse) as info:
                    Trainer(_short(tmp_path, epochs=2, **flags), synthetic_bundle(), log=quiet)
                refusals.append(str(info.value))

    trainer.on_step = second_run
    trainer.fit()
    assert len(refusals) == 3
    for message in refusals:
        assert f"{out} is in use by process {os.getpid()} (this process) on {socket.gethostname()}" in message
    assert [r["epoch"] for r in _history(out)] == [1, 2]  # the refused runs wrote nothing
    assert not (out / LOCK_NAME).exists()


def test_a_lock_held_by_another_process_refuses_until_that_process_is_gone(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time\nfrom pathlib import Path\n"
         "from mobilenets.train.run_lock import RunLock\n"
         "RunLock.acquire(Path(sys.argv[1]), print)\nprint('locked', flush=True)\ntime.sleep(300)", str(out)],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(OutputInUse, match=f"in use by process {holder.pid} on "):
            Trainer(_short(tmp_path), synthetic_bundle(), log=quiet)
    finally:
        holder.kill()  # SIGKILL: nothing is cleaned up, the lock stays behind
        holder.wait()
        holder.stdout.close()
    assert json.loads((out / LOCK_NAME).read_text())["pid"] == holder.pid
    messages: list[str] = []
    train(_short(tmp_path), synthetic_bundle(), log=messages.append)
    assert any(f"replaced the stale lock {out / LOCK_NAME} of process {holder.pid} " in m for m in messages)
    assert not (out / LOCK_NAME).exists() and len(_history(out)) == 1


def _write_lock(folder: Path, **fields) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    owner = dict(pid=os.getpid(), host=socket.gethostname(), started=0.0, command="mobilenets train",
                 token="x", process_start=None)
    owner.update(fields)
    path = folder / LOCK_NAME
    path.write_text(json.dumps(owner))
    return path


def test_a_lock_from_another_host_is_refused_and_a_reused_pid_is_stale(tmp_path):
    path = _write_lock(tmp_path / "run", host="elsewhere.invalid", pid=1)
    with pytest.raises(OutputInUse, match=f"locked by process 1 on elsewhere.invalid.*once it has ended, delete {path}"):
        Trainer(_short(tmp_path), synthetic_bundle(), log=quiet)
    assert path.exists()  # not ours to remove
    if not Path(f"/proc/{os.getpid()}/stat").exists():
        pytest.skip("PID reuse is told by /proc start times")
    # our own PID, but a process that started at another time: the owner has gone and its PID was reused
    _write_lock(tmp_path / "run", process_start="1")
    messages: list[str] = []
    train(_short(tmp_path), synthetic_bundle(), log=messages.append)
    assert any("replaced the stale lock" in m for m in messages) and not path.exists()


def test_the_lock_goes_on_every_way_out_of_a_run(tmp_path):
    def held(t: Trainer) -> None:
        assert json.loads((Path(t.config.output) / LOCK_NAME).read_text())["pid"] == os.getpid()

    cfg = _short(tmp_path / "crash", epochs=2)
    crash_during(cfg, epoch=1, step=1)  # an exception
    assert not (Path(cfg.output) / LOCK_NAME).exists()
    cfg.resume = True
    trainer = Trainer(cfg, synthetic_bundle(), log=quiet)
    trainer.on_step = lambda t: (held(t), os.kill(os.getpid(), signal.SIGINT))  # Ctrl-C
    with pytest.raises(KeyboardInterrupt):
        trainer.fit()
    assert not (Path(cfg.output) / LOCK_NAME).exists()

    trainer = Trainer(_short(tmp_path / "nan", epochs=2), synthetic_bundle(), log=quiet)
    trainer.on_step = _poison_after(3)
    with pytest.raises(TrainingDiverged):
        trainer.fit()
    assert not (tmp_path / "nan" / "run" / LOCK_NAME).exists()

    # SIGTERM after the training loop, during the test-set evaluation
    trainer = Trainer(_short(tmp_path / "term"), synthetic_bundle(), log=quiet)
    evaluate = trainer._evaluate

    def terminated_during_test(dataset, limit, desc):
        if desc == "test":
            held(trainer)
            os.kill(os.getpid(), signal.SIGTERM)
        return evaluate(dataset, limit, desc)

    trainer._evaluate = terminated_during_test
    before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(KeyboardInterrupt):
        trainer.fit()
    assert not (tmp_path / "term" / "run" / LOCK_NAME).exists()
    assert signal.getsignal(signal.SIGTERM) is before


LOCKED_WORKER = """
import json, sys
from pathlib import Path
sys.path.insert(0, {tests!r})
from test_train import config, synthetic_bundle
from mobilenets.train import Trainer
from mobilenets.train.run_lock import OutputInUse

try:
    Trainer(config(Path({out!r})), synthetic_bundle(), log=print)
except OutputInUse as exc:
    import torch.distributed as dist
    Path({out!r}, f"rank{{dist.get_rank()}}.txt").write_text(str(exc))
    dist.destroy_process_group()
"""


def test_under_torchrun_rank_zero_owns_the_folder_and_every_rank_stops_when_it_is_in_use(tmp_path):
    """Only rank 0 checks and locks the folder; a refusal reaches the other ranks, which would otherwise wait
    for rank 0 in their first collective until torchrun's timeout."""
    (tmp_path / "run").mkdir()
    lock = RunLock.acquire(tmp_path / "run", quiet)
    script = tmp_path / "worker.py"
    script.write_text(LOCKED_WORKER.format(tests=str(TESTS), out=str(tmp_path)))
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", str(script)],
            capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"}, timeout=120)
    finally:
        lock.release()
    assert proc.returncode == 0, proc.stderr[-3000:]
    for rank in (0, 1):
        assert f"in use by process {os.getpid()} on" in (tmp_path / f"rank{rank}.txt").read_text()


# -- the output folder before the first checkpoint ----------------------------------------------

def test_output_that_is_a_file_is_refused_with_a_message(tmp_path, capsys):
    target = tmp_path / "notes.txt"
    target.write_text("not a run folder")
    with pytest.raises(ValueError, match="notes.txt is a file; give a folder"):
        Trainer(config(tmp_path, output=str(target)), synthetic_bundle(), log=quiet)
    with pytest.raises(ValueError, match=r"notes.txt is a file, so no folder can be made below it"):
        Trainer(config(tmp_path, output=str(target / "run")), synthetic_bundle(), log=quiet)
    assert main(["train", "--output", str(target), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("mobilenets train: error: output ") and "is a file" in err and "Traceback" not in err
    assert target.read_text() == "not a run folder"


@pytest.mark.parametrize("setting, value, message", [
    ("lr", float("nan"), "lr must be a finite number > 0, got nan"),
    ("lr", 0.0, "lr must be a finite number > 0, got 0.0"),
    ("weight_decay", -1e-4, "weight_decay must be a finite number >= 0, got -0.0001"),
    ("warmup_epochs", float("inf"), "warmup_epochs must be a finite number >= 0, got inf"),
    ("label_smoothing", 1.0, r"label_smoothing must be a finite number in \[0, 1\), got 1.0"),
    ("ema_decay", float("nan"), r"ema_decay must be a finite number in \[0, 1\), got nan"),
    ("clip_grad", -1.0, "clip_grad must be a finite number >= 0, got -1.0"),
    ("time_budget_min", float("inf"), "time_budget_min must be a finite number > 0, got inf"),
    ("epochs", 0, "epochs must be an integer >= 1, got 0"),
    ("batch_size", 2.5, "batch_size must be an integer >= 1, got 2.5"),
    ("random_erasing", 1.5, r"random_erasing must be a finite number in \[0, 1\], got 1.5"),
])
def test_settings_no_run_can_use_are_refused_naming_the_parameter(tmp_path, setting, value, message):
    with pytest.raises(ValueError, match=message):
        config(tmp_path, **{setting: value})
    cfg = config(tmp_path)
    setattr(cfg, setting, value)  # changed after construction: the trainer checks again
    with pytest.raises(ValueError, match=message):
        Trainer(cfg, synthetic_bundle(), log=quiet)
    assert not (tmp_path / "run").exists()


def test_cli_lr_nan_is_refused_before_anything_is_written(tmp_path, capsys):
    assert main(["train", "--lr", "nan", "--output", str(tmp_path / "run"), "--no-progress"]) == 2
    assert "mobilenets train: error: lr must be a finite number > 0, got nan" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


def test_a_run_that_fails_before_its_first_checkpoint_leaves_nothing_behind(tmp_path):
    cfg = _short(tmp_path)
    out = Path(cfg.output)
    crash_during(cfg, epoch=0, step=1)
    assert not out.exists()  # no empty metrics.jsonl, no tb/: a retry is not refused
    trainer = Trainer(cfg, synthetic_bundle(), log=quiet)
    trainer.on_step = _poison_after(1)
    with pytest.raises(TrainingDiverged) as info:
        trainer.fit()
    message = str(info.value)
    assert "nothing was written (it stopped before its first checkpoint)" in message and "last.pt" not in message
    with pytest.raises(FileNotFoundError, match="nothing to resume"):
        Trainer(_short(tmp_path, resume=True), synthetic_bundle(), log=quiet)
    train(cfg, synthetic_bundle(), log=quiet)  # the retry
    assert len(_history(out)) == 1


def test_overwrite_keeps_the_old_run_until_the_new_one_writes_its_first_checkpoint(tmp_path):
    train(_short(tmp_path, epochs=2), synthetic_bundle(), log=quiet)
    out = tmp_path / "run"
    before = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}
    assert {"last.pt", "best.pt", "best.safetensors", "metrics.jsonl", "results.json"} <= set(before)
    # a setting refused after the data and the model are built
    with pytest.raises(ValueError, match="--progressive-sizes must end at the image size"):
        Trainer(_short(tmp_path, overwrite=True, small_input=True, progressive_sizes=[16, 24]), synthetic_bundle(),
                log=quiet)
    with pytest.raises(ValueError, match="unknown dataset 'mnist'"):
        Trainer(_short(tmp_path, overwrite=True, dataset="mnist"), log=quiet)
    # divergence before the new run's first checkpoint
    trainer = Trainer(_short(tmp_path, overwrite=True), synthetic_bundle(), log=quiet)
    trainer.on_step = _poison_after(1)
    with pytest.raises(TrainingDiverged, match="the run it was to replace is left as it was"):
        trainer.fit()
    assert {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()} == before
    results = train(_short(tmp_path, overwrite=True, limit_train_batches=3), synthetic_bundle(), log=quiet)
    assert [r["step"] for r in _history(out)] == [3] and results["final"]["step"] == 3


# -- dataset names and folders ---------------------------------------------------------------------

@pytest.mark.parametrize("written, registered", [
    ("fashion_mnist", "fashion_mnist"), ("fashion-mnist", "fashion_mnist"), ("FashionMNIST", "fashion_mnist"),
    ("Fashion-MNIST", "fashion_mnist"), ("cifar-10", "cifar10"), ("CIFAR100", "cifar100"),
    ("image_folder", "imagefolder"), ("ImageFolder", "imagefolder"),
])
def test_dataset_names_as_users_write_them(written, registered):
    assert dataset_name(written) == registered
    assert TrainConfig(dataset=written).dataset == registered


def test_an_unknown_dataset_name_lists_the_accepted_ones(capsys):
    with pytest.raises(ValueError, match="unknown dataset 'mnist'; accepted: fashion_mnist, cifar10, cifar100, "
                                         "imagefolder"):
        dataset_name("mnist")
    with pytest.raises(ValueError, match="unknown dataset 'cifar-1O'"):
        TrainConfig(dataset="cifar-1O")
    from mobilenets.cli import build_parser

    assert build_parser().parse_args(["train", "--output", "x", "--dataset", "CIFAR-10"]).dataset == "cifar10"
    assert build_parser().parse_args(["evaluate", "run", "--dataset", "fashion-mnist"]).dataset == "fashion_mnist"
    with pytest.raises(SystemExit):
        build_parser().parse_args(["train", "--output", "x", "--dataset", "svhn"])
    assert f"unknown dataset 'svhn'; accepted: {', '.join(DATASETS)}" in capsys.readouterr().err


def test_a_run_records_the_registered_name_and_the_folder_it_read(tmp_path, monkeypatch):
    _fake_fmnist(tmp_path / "fmnist", n_train=40, n_test=16)
    _fake_fmnist(tmp_path / "env", n_train=50)
    monkeypatch.setenv("MOBILENETS_DATA", str(tmp_path / "env"))
    results = train(config(tmp_path, dataset="Fashion-MNIST", data_dir=str(tmp_path / "fmnist"), model="mobilenet_v1",
                           epochs=1, batch_size=12, random_erasing=0.0, allow_download=False), log=quiet)
    assert results["dataset"] == "fashion_mnist" and results["test_images"] == 16
    training = mobilenets.read_metadata(tmp_path / "run" / "best.safetensors")["training"]
    assert (training["dataset"], training["data_dir"]) == ("fashion_mnist", str(tmp_path / "fmnist"))


def test_a_data_dir_without_the_data_is_refused_never_replaced(tmp_path, monkeypatch):
    """The folder given is used (read, or downloaded into) or refused; the copy in $MOBILENETS_DATA or the
    system's is never read in its place."""
    _fake_fmnist(tmp_path / "env" / "fashion-mnist")
    _fake_cifar(tmp_path / "env", "cifar10")
    monkeypatch.setenv("MOBILENETS_DATA", str(tmp_path / "env"))
    empty = tmp_path / "empty"
    empty.mkdir()
    for name in ("fashion_mnist", "cifar10"):
        with pytest.raises(DatasetNotFoundError) as info:
            build_data(name, empty, allow_download=False)
        assert str(empty) in str(info.value) and str(tmp_path / "env") not in str(info.value)
    with pytest.raises(DatasetNotFoundError):
        Trainer(config(tmp_path, data_dir=str(empty), allow_download=False), log=quiet)
    assert not (tmp_path / "run").exists()
    # with downloads allowed, the files go into the folder given
    source = tmp_path / "mirror"
    _fake_fmnist(source, n_train=30)
    monkeypatch.setattr(fm, "FASHION_MNIST_FILES", {name: fm.md5sum(source / name) for name in fm.FASHION_MNIST_FILES})
    train_set, _, folder = fm.load_fashion_mnist(
        empty, allow_download=True, fetch=lambda url, dest: dest.write_bytes((source / url.rsplit("/", 1)[1]).read_bytes()))
    assert folder == empty and len(train_set) == 30
