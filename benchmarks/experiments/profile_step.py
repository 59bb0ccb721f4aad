"""Images/s at batch 128 and 256, then torch.profiler's op table for five training steps of
mobilenet_v3_small_minimal x0.5 (28 px, channels-last, 2 threads).

    .venv/bin/python benchmarks/experiments/profile_step.py
"""
import time, torch, sys
torch.set_num_threads(2)
import mobilenets
m = mobilenets.create_model("mobilenet_v3_small_minimal", num_classes=10, in_chans=1, width_mult=0.5, small_input=True).to(memory_format=torch.channels_last)
opt = torch.optim.SGD(m.parameters(), lr=0.01, momentum=0.9, nesterov=True)
crit = torch.nn.CrossEntropyLoss(label_smoothing=0.1)
for bs in (128, 256):
    x = torch.randn(bs,1,28,28).contiguous(memory_format=torch.channels_last); y = torch.randint(0,10,(bs,))
    def step():
        loss = crit(m(x), y); opt.zero_grad(); loss.backward(); opt.step()
    for _ in range(3): step()
    t=time.perf_counter()
    for _ in range(10): step()
    print(bs, round(10*bs/(time.perf_counter()-t)), "img/s")
x = torch.randn(128,1,28,28).contiguous(memory_format=torch.channels_last); y = torch.randint(0,10,(128,))
from torch.profiler import profile
with profile() as p:
    for _ in range(5):
        loss = crit(m(x), y); opt.zero_grad(); loss.backward(); opt.step()
print(p.key_averages().table(sort_by="self_cpu_time_total", row_limit=18))
