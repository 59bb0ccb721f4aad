"""GPU correctness of every model and of training under each mixed-precision mode (needs CUDA; CI has none).

Part 1, numerics: each registered model, in eval mode with seeded random weights and BN statistics, on fresh
random inputs; CUDA output in fp32 (TF32 off), fp32 channels-last, and bf16/fp16 autocast, each against a
float64 CPU reference, as ||out - ref|| / ||ref||. Pass marks follow the usual rounding of each format: fp32
under 1e-4, autocast under 3e-2 (bf16 keeps 8 bits of mantissa, and these are 50-100 layers deep).

Part 2, training: ``Trainer`` on Fashion-MNIST (28 px, small_input) for --steps steps (EMA off) under amp off,
bf16 and fp16 (GradScaler); every loss finite, and validation accuracy well above chance (10%).

    python benchmarks/gpu/check.py --json gpu_check.json
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
import time
import zlib

import torch

import mobilenets
from mobilenets.data import build_data
from mobilenets.train import TrainConfig, Trainer

FP32_LIMIT = 1e-4
AUTOCAST_LIMIT = 3e-2


def _randomise_bn(model: torch.nn.Module, generator: torch.Generator) -> None:
    """BN with non-trivial statistics and affine terms, so that the check is not of an identity-like network."""
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            n = module.num_features
            module.running_mean.copy_(torch.randn(n, generator=generator) * 0.1)
            module.running_var.copy_(torch.rand(n, generator=generator) * 0.5 + 0.75)
            module.weight.data.copy_(torch.rand(n, generator=generator) * 0.5 + 0.75)
            module.bias.data.copy_(torch.randn(n, generator=generator) * 0.1)


def _rel(out: torch.Tensor, ref: torch.Tensor) -> float:
    out = out.double().cpu()
    if not torch.isfinite(out).all():
        return math.inf
    return float((out - ref).norm() / ref.norm())


def numerics(device: torch.device, batch: int, names: list[str]) -> list[dict]:
    rows = []
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    for name in names:
        for small in (False, True):
            size = 28 if small else 224
            generator = torch.Generator().manual_seed(zlib.crc32(f"{name}{small}".encode()))
            model = mobilenets.create_model(name, num_classes=10, in_chans=1 if small else 3, small_input=small).eval()
            _randomise_bn(model, generator)
            x = torch.randn(batch, 1 if small else 3, size, size, generator=generator)
            with torch.no_grad():
                ref = model.double()(x.double())
                model.float().to(device)
                xd = x.to(device)
                row = {"model": name, "input": f"{x.shape[1]}x{size}x{size}"}
                row["fp32"] = _rel(model(xd), ref)
                row["fp32_channels_last"] = _rel(
                    model.to(memory_format=torch.channels_last)(xd.contiguous(memory_format=torch.channels_last)), ref)
                for dtype in (torch.bfloat16, torch.float16):
                    with torch.autocast(device.type, dtype=dtype):
                        row[str(dtype).replace("torch.", "")] = _rel(model(xd), ref)
            row["ok"] = (row["fp32"] < FP32_LIMIT and row["fp32_channels_last"] < FP32_LIMIT
                         and row["bfloat16"] < AUTOCAST_LIMIT and row["float16"] < AUTOCAST_LIMIT)
            rows.append(row)
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
    return rows


def training(device: torch.device, steps: int, data_dir: str | None, amps: list[str]) -> list[dict]:
    rows = []
    bundle = build_data("fashion_mnist", data_dir, random_erasing=0.0)
    for amp in amps:
        losses: list[float] = []
        with tempfile.TemporaryDirectory() as out:
            config = TrainConfig(model="mobilenet_v3_small", output=out, epochs=1, batch_size=128, device=str(device),
                                 amp=amp, limit_train_batches=steps, limit_val_batches=10, progress=False,
                                 tensorboard=False, overwrite=True, workers=4, ema_decay=0.0, warmup_epochs=0.1)
            trainer = Trainer(config, bundle, log=lambda _m: None)
            original = trainer._train_step

            def step(images, labels, _original=original):
                loss_sum, correct = _original(images, labels)
                losses.append(loss_sum / labels.numel())
                return loss_sum, correct

            trainer._train_step = step
            start = time.perf_counter()
            result = trainer.fit()
            seconds = time.perf_counter() - start
        record = trainer.history[-1]
        rows.append({
            "amp": amp, "steps": len(losses), "first_loss": losses[0], "last_loss": losses[-1],
            "all_finite": all(math.isfinite(v) for v in losses), "val_top1": record["val_top1"],
            "test_top1": result["test_top1"], "train_images_per_s": record["train_images_per_s"],
            "seconds": seconds,
            "ok": all(math.isfinite(v) for v in losses) and record["val_top1"] > 0.5 and losses[-1] < losses[0],
        })
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=4, help="images per numerics check")
    parser.add_argument("--steps", type=int, default=150, help="training steps per amp mode")
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--device", default="cuda", help="cuda (the check); cpu only dry-runs the script")
    parser.add_argument("--amp", nargs="+", default=["off", "bf16", "fp16"], help="amp modes to train under")
    parser.add_argument("--models", nargs="*", default=None, help="default: every registered model")
    parser.add_argument("--json", default=None, help="write the results here")
    args = parser.parse_args()
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print("CUDA is not available: this check needs a GPU (--device cpu dry-runs the script)", file=sys.stderr)
        return 2
    gpu = torch.cuda.get_device_name(0) if device.type == "cuda" else "none"
    print(f"torch {torch.__version__}, device {device} ({gpu}), cuDNN {torch.backends.cudnn.version()}")
    num = numerics(device, args.batch, args.models or mobilenets.list_models())
    print(f"\nnumerics vs float64 CPU, ||out - ref|| / ||ref|| (fp32 < {FP32_LIMIT:g}, autocast < {AUTOCAST_LIMIT:g}):")
    print(f"  {'model':<28} {'input':<10} {'fp32':>9} {'fp32 CL':>9} {'bf16':>9} {'fp16':>9}")
    for r in num:
        print(f"  {r['model']:<28} {r['input']:<10} {r['fp32']:9.2e} {r['fp32_channels_last']:9.2e} "
              f"{r['bfloat16']:9.2e} {r['float16']:9.2e}  {'ok' if r['ok'] else 'FAIL'}")
    train = training(device, args.steps, args.data_dir, args.amp)
    print(f"\ntraining mobilenet_v3_small (28 px) {args.steps} steps x 128 per amp mode:")
    for r in train:
        print(f"  amp {r['amp']:<5} loss {r['first_loss']:.3f} -> {r['last_loss']:.3f}, val top-1 {r['val_top1']:.2%}, "
              f"{r['train_images_per_s']:.0f} img/s, {r['seconds']:.1f} s  {'ok' if r['ok'] else 'FAIL'}")
    ok = all(r["ok"] for r in num + train)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"torch": torch.__version__, "gpu": gpu, "numerics": num,
                       "training": train, "ok": ok}, f, indent=1)
    print("\nALL OK" if ok else "\nSOME CHECKS FAILED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
