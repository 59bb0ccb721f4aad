"""A training step of mobilenet_v3_small x0.5 (28 px, batch 128, 1 thread, channels-last) with PyTorch's own
depthwise-convolution backward against one whose weight gradient is the Inductor-compiled shifted-product
sum of dw_weight_grad.py (grad_input stays PyTorch's). Same weights, same batch, interleaved blocks; prints
images/s of each, the compile time and the largest weight-gradient difference after one step.

    .venv/bin/python benchmarks/experiments/dw_grad_step.py
"""
import copy, statistics, sys, time
from pathlib import Path
import torch, torch.nn as nn, torch.nn.functional as F
import mobilenets

sys.path.insert(0, str(Path(__file__).resolve().parent))
from dw_weight_grad import gw_ref  # noqa: E402  the shifted-product sum measured alone there

torch.set_num_threads(1)


_gw_compiled = torch.compile(gw_ref, dynamic=False)


class _DepthwiseConv(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, w, stride, padding):
        ctx.save_for_backward(x, w)
        ctx.conf = (stride, padding)
        return F.conv2d(x, w, None, stride, padding, 1, x.shape[1])

    @staticmethod
    def backward(ctx, g):
        x, w = ctx.saved_tensors
        s, p = ctx.conf
        g = g.contiguous(memory_format=torch.channels_last)
        gi = torch.ops.aten.convolution_backward(g, x, w, None, [s, s], [p, p], [1, 1], False, [0, 0], x.shape[1],
                                                 [True, False, False])[0]
        return gi, _gw_compiled(x, g, w.shape[-1], s, p), None, None


def patch(model):
    for m in model.modules():
        if isinstance(m, nn.Conv2d) and m.groups == m.in_channels > 1 and m.kernel_size[0] > 1 and m.bias is None:
            s, p = m.stride[0], m.padding[0]
            m.forward = lambda x, m=m, s=s, p=p: _DepthwiseConv.apply(x, m.weight, s, p)
    return model


def main() -> int:
    torch.manual_seed(0)
    base = mobilenets.create_model("mobilenet_v3_small", num_classes=10, in_chans=1, width_mult=0.5, small_input=True,
                                    dropout=0.0)  # the same forward in both: no random mask
    models = {"native": base.to(memory_format=torch.channels_last),
              "compiled dw grad": patch(copy.deepcopy(base).to(memory_format=torch.channels_last))}
    x = torch.randn(128, 1, 28, 28).contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 10, (128,))
    crit = nn.CrossEntropyLoss(label_smoothing=0.1)
    grads = {}
    for name, m in models.items():
        start = time.perf_counter()
        m.zero_grad()
        crit(m(x), y).backward()
        grads[name] = {n: p.grad.clone() for n, p in m.named_parameters()}
        print(f"{name}: first step {time.perf_counter() - start:.1f} s (compiles)", flush=True)
    diff = max(((grads["native"][n] - grads["compiled dw grad"][n]).abs().max() / grads["native"][n].abs().max().clamp(min=1e-12)).item()
               for n in grads["native"])
    print(f"largest relative gradient difference: {diff:.1e}")
    opts = {name: torch.optim.SGD(m.parameters(), lr=0.01, momentum=0.9, nesterov=True) for name, m in models.items()}
    rates = {name: [] for name in models}
    for _ in range(int(sys.argv[1]) if len(sys.argv) > 1 else 5):
        for name, m in models.items():
            start = time.perf_counter()
            for _ in range(5):
                loss = crit(m(x), y)
                opts[name].zero_grad()
                loss.backward()
                opts[name].step()
            rates[name].append(5 * 128 / (time.perf_counter() - start))
    for name, r in rates.items():
        print(f"{name:<18} {statistics.median(r):6.0f} img/s  {[round(v) for v in r]}")
    print(f"ratio: {statistics.median(rates['compiled dw grad']) / statistics.median(rates['native']):.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
