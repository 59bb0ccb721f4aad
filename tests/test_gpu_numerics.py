"""CUDA correctness of every model and of training under each mixed-precision mode (skipped without CUDA).

Numerics: each registered model, in eval mode with seeded random weights and BN statistics, on random inputs;
its CUDA output in fp32 (TF32 off), fp32 channels-last, and bf16/fp16 autocast, each against a float64 CPU
reference, as ||out - ref|| / ||ref||. Limits follow the rounding of each format: fp32 under 1e-4, autocast
under 3e-2 (bf16 keeps 8 bits of mantissa, and these networks are 50-100 layers deep). The one GPU session
so far (H200) measured fp32 1.3e-7 to 3.9e-7, bf16 2.7e-3 to 7.9e-3, fp16 3.4e-4 to 9.8e-4.

Training: ``Trainer`` on Fashion-MNIST (28 px, small_input) for 150 steps (EMA off) under amp off, bf16 and
fp16 (grad scaler): every loss finite, the last below the first, validation accuracy above 50% (chance: 10%).
CI has no GPU; run these on a lent one (``benchmarks/gpu/session.sh`` does).
"""

from __future__ import annotations

import math
import zlib

import pytest
import torch

import mobilenets
from mobilenets.data import build_data
from mobilenets.train import TrainConfig, Trainer

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA (run on a GPU machine)")

FP32_LIMIT = 1e-4
AUTOCAST_LIMIT = 3e-2
TRAIN_STEPS = 150


def _randomise_bn(model: torch.nn.Module, generator: torch.Generator) -> None:
    """BN with non-trivial statistics and affine terms, so that the check is not of an identity-like network."""
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            n = module.num_features
            module.running_mean.copy_(torch.randn(n, generator=generator) * 0.1)
            module.running_var.copy_(torch.rand(n, generator=generator) * 0.5 + 0.75)
            module.weight.data.copy_(torch.rand(n, generator=generator) * 0.5 + 0.75)
            module.bias.data.copy_(torch.randn(n, generator=generator) * 0.1)


def _relative_error(out: torch.Tensor, ref: torch.Tensor) -> float:
    out = out.double().cpu()
    if not torch.isfinite(out).all():
        return math.inf
    return float((out - ref).norm() / ref.norm())


def relative_errors(name: str, small_input: bool, device: torch.device, batch: int = 4) -> dict[str, float]:
    """||out - ref|| / ||ref|| of ``name`` on ``device`` in fp32, fp32 channels-last, bf16 and fp16 autocast."""
    size, chans = (28, 1) if small_input else (224, 3)
    generator = torch.Generator().manual_seed(zlib.crc32(f"{name}{small_input}".encode()))
    model = mobilenets.create_model(name, num_classes=10, in_chans=chans, small_input=small_input).eval()
    _randomise_bn(model, generator)
    x = torch.randn(batch, chans, size, size, generator=generator)
    errors = {}
    tf32 = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False  # fp32 means fp32
    try:
        with torch.no_grad():
            ref = model.double()(x.double())
            model.float().to(device)
            xd = x.to(device)
            errors["fp32"] = _relative_error(model(xd), ref)
            channels_last = model.to(memory_format=torch.channels_last)
            errors["fp32_channels_last"] = _relative_error(
                channels_last(xd.contiguous(memory_format=torch.channels_last)), ref)
            for dtype in (torch.bfloat16, torch.float16):
                with torch.autocast(device.type, dtype=dtype):
                    errors[str(dtype).removeprefix("torch.")] = _relative_error(model(xd), ref)
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = tf32
    return errors


@pytest.mark.parametrize("small_input", [False, True], ids=["3x224x224", "1x28x28_small_input"])
@pytest.mark.parametrize("name", mobilenets.list_models())
def test_cuda_output_matches_a_float64_cpu_reference(name, small_input):
    errors = relative_errors(name, small_input, torch.device("cuda"))
    assert errors["fp32"] < FP32_LIMIT, errors
    assert errors["fp32_channels_last"] < FP32_LIMIT, errors
    assert errors["bfloat16"] < AUTOCAST_LIMIT, errors
    assert errors["float16"] < AUTOCAST_LIMIT, errors


@pytest.fixture(scope="module")
def fashion_mnist():
    return build_data("fashion_mnist", random_erasing=0.0, allow_download=False)


@pytest.mark.parametrize("amp", ["off", "bf16", "fp16"])
def test_training_on_cuda_learns_under_each_amp_mode(amp, fashion_mnist, tmp_path):
    config = TrainConfig(model="mobilenet_v3_small", output=str(tmp_path / "run"), epochs=1, batch_size=128,
                         device="cuda", amp=amp, limit_train_batches=TRAIN_STEPS, limit_val_batches=10,
                         progress=False, tensorboard=False, overwrite=True, workers=2, ema_decay=0.0,
                         warmup_epochs=0.1)
    trainer = Trainer(config, fashion_mnist, log=lambda _message: None)
    losses: list[float] = []
    original = trainer._train_step

    def recording_step(images, labels):
        loss_sum, correct = original(images, labels)
        losses.append(loss_sum / labels.numel())
        return loss_sum, correct

    trainer._train_step = recording_step
    trainer.fit()
    assert len(losses) == TRAIN_STEPS
    assert all(math.isfinite(loss) for loss in losses), losses
    assert losses[-1] < losses[0], (losses[0], losses[-1])
    assert trainer.history[-1]["val_top1"] > 0.5, trainer.history[-1]
