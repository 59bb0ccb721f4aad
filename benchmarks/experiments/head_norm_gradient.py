"""Why MobileNetV4 needs its gradient clipped under SGD: the gradient norm reaching the body at initialisation.

On one Fashion-MNIST training batch (128 images, 28 px, small_input, label-smoothed loss), for freshly built
models: the norm of the gradient of the stem and stages (the blocks), and for V4 the same with the head's batch norm on the
pooled features frozen (eval mode: running statistics of 0 and 1, so it passes the features through). Also the
spread over the batch of the pooled features that norm divides by (median over channels). docs/notes.md,
"MobileNetV4 under SGD clips its gradient".

    .venv/bin/python benchmarks/experiments/head_norm_gradient.py
"""

from __future__ import annotations

import argparse

import torch
from torch.utils.data import DataLoader

import mobilenets
from mobilenets.data import build_data
from mobilenets.models.base import PooledConvNormAct


def body_gradient(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> tuple[float, float]:
    spread: dict[str, torch.Tensor] = {}
    head = getattr(model, "head_fc", None)
    hook = None

    def keep_input(module, inputs, output) -> None:  # returns None: the module's output stays as it is
        spread["bn_in"] = inputs[0].detach().flatten(1)

    if isinstance(head, PooledConvNormAct):
        hook = head.bn.register_forward_hook(keep_input)
    loss = torch.nn.functional.cross_entropy(model(x), y, label_smoothing=0.1)
    loss.backward()
    if hook is not None:
        hook.remove()
    norm = torch.stack([p.grad.detach().norm() for n, p in model.named_parameters()
                        if n.startswith(("stem", "stages")) and p.grad is not None]).norm()
    return float(norm), float(spread["bn_in"].std(0).median()) if spread else float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", nargs="*", default=["mobilenet_v4_conv_small", "mobilenet_v3_small"])
    parser.add_argument("--width-mult", type=float, default=0.5)
    parser.add_argument("--data-dir", default=None)
    args = parser.parse_args()
    bundle = build_data("fashion_mnist", args.data_dir, random_erasing=0.0)
    x, y = next(iter(DataLoader(bundle.train, batch_size=128, shuffle=True,
                                generator=torch.Generator().manual_seed(0))))
    for name in args.models:
        variants = [("as built", False)]
        torch.manual_seed(0)
        probe = mobilenets.create_model(name, num_classes=10, in_chans=1, width_mult=args.width_mult, small_input=True)
        if isinstance(getattr(probe, "head_fc", None), PooledConvNormAct):
            variants.append(("head norm frozen", True))
        for label, frozen in variants:
            torch.manual_seed(0)
            model = mobilenets.create_model(
                name, num_classes=10, in_chans=1, width_mult=args.width_mult, small_input=True).train()
            if frozen:
                model.head_fc.bn.eval()
            norm, spread = body_gradient(model, x, y)
            extra = (f"; batch spread of the pooled features its head norm divides by: {spread:.3f}"
                     if spread == spread else "")  # NaN: no such norm
            print(f"{name} x{args.width_mult} ({label}): gradient norm of stem + blocks {norm:.3f}{extra}")


if __name__ == "__main__":
    main()
