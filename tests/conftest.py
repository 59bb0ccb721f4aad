import os

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
