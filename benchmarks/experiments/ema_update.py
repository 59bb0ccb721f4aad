"""One EMA update of mobilenet_v3_small x0.5 (28 px, channels-last, 1 thread): AveragedModel with a per-tensor
``avg_fn`` (the trainer's EMA until 2026-11-28, a Python loop over every parameter and buffer) against
``ema_multi_avg_fn`` (one foreach lerp per dtype group); median of 50 updates each.

    .venv/bin/python benchmarks/experiments/ema_update.py
"""
import statistics, time
import torch
import mobilenets
from mobilenets.train.recipes import ema_multi_avg_fn

torch.set_num_threads(1)


def per_tensor_avg_fn(decay):
    def avg(averaged, current, num_averaged):
        n = float(num_averaged) if num_averaged is not None else 0.0
        d = min(decay, (1.0 + n) / (10.0 + n))
        return averaged * d + current * (1.0 - d)
    return avg


model = mobilenets.create_model("mobilenet_v3_small", num_classes=10, in_chans=1, small_input=True,
                                width_mult=0.5).to(memory_format=torch.channels_last)
for name, kw in [("per-tensor avg_fn", {"avg_fn": per_tensor_avg_fn(0.999)}),
                 ("foreach multi_avg_fn", {"multi_avg_fn": ema_multi_avg_fn(0.999)})]:
    ema = torch.optim.swa_utils.AveragedModel(model, use_buffers=True, **kw)
    for _ in range(5):
        ema.update_parameters(model)
    times = []
    for _ in range(50):
        start = time.perf_counter()
        ema.update_parameters(model)
        times.append(time.perf_counter() - start)
    print(f"{name:<22} {statistics.median(times) * 1e3:6.2f} ms per update")
