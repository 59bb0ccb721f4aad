import os
import sys
from pathlib import Path

import pytest
import torch

# two cores shared by the suite: keep torch from oversubscribing them
torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture(scope="module")
def one_thread():
    """One thread for a module: PyTorch's OpenMP barriers stall badly at 2 threads while another job holds a
    core (export and quantization tests, whose Inductor and ONNX Runtime runs are the suite's slowest)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def restore_threads():
    """For modules whose training runs set torch's threads (``--threads 1`` keeps them fast on a busy CPU): the
    rest of the suite gets torch's setting back."""
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


FMNIST = Path("/usr/share/datasets/fashion-mnist")


@pytest.fixture(scope="session")
def fmnist_run(tmp_path_factory) -> Path:
    """A `mobilenets train` run folder on real Fashion-MNIST, shared by the evaluate and INT8 tests: V3-Small at
    width 0.35 (squeeze-excite and h-swish, the ops INT8 must get right), 100 AdamW steps of 64 images, 256 test
    images. It reached 71% top-1 on them (70% on 1000; chance 10%) with a median top-1/top-2 logit margin of
    1.2, and INT8 agreed with fp32 on 97% of 1000 test images (ONNX Runtime and OpenVINO alike). On an untrained
    model the logits are near-ties and INT8's agreement measures rounding noise: 85% on one CPU, over 90% on
    another. AdamW and batch-norm momentum 0.9: with SGD, fewer steps or the default momentum a model this
    briefly trained predicted one class for every image."""
    from mobilenets.cli import main

    if not FMNIST.is_dir():
        pytest.skip("needs Debian's dataset-fashion-mnist (make data)")
    out = tmp_path_factory.mktemp("fmnist") / "run"
    threads = torch.get_num_threads()  # --threads sets torch's for the whole process
    code = main([
        "train", "--model", "mobilenet_v3_small", "--width-mult", "0.35", "--epochs", "1",
        "--limit-train-batches", "100", "--limit-val-batches", "1", "--batch-size", "64", "--threads", "1",
        "--opt", "adamw", "--lr", "0.01", "--bn-momentum", "0.9",
        "--data-dir", str(FMNIST), "--output", str(out), "--no-progress", "--no-tensorboard",
    ])
    torch.set_num_threads(threads)
    assert code == 0
    return out


@pytest.fixture
def keras(monkeypatch):
    """Keras 3 on the torch backend, seeded (test_convert, test_weights)."""
    monkeypatch.setenv("KERAS_BACKEND", "torch")
    if "keras" in sys.modules and sys.modules["keras"].backend.backend() != "torch":
        pytest.skip("keras already imported with another backend")
    module = pytest.importorskip("keras")
    # Keras draws initial weights from a global stream: seed it per test so that each test's random network,
    # and so its float32 rounding, does not depend on which tests ran before it
    module.utils.set_random_seed(0)
    return module
