"""The convolution backward calls of one training step of mobilenet_v3_small x0.5 (28 px, batch 128, 1 thread,
channels-last), by input shape, slowest first (torch.profiler, 5 steps).

    .venv/bin/python benchmarks/experiments/conv_backward_shapes.py
"""
import time, torch
torch.set_num_threads(1)
import mobilenets
m = mobilenets.create_model("mobilenet_v3_small", num_classes=10, in_chans=1, width_mult=0.5, small_input=True).to(memory_format=torch.channels_last)
opt = torch.optim.SGD(m.parameters(), lr=0.01, momentum=0.9, nesterov=True)
crit = torch.nn.CrossEntropyLoss(label_smoothing=0.1)
x = torch.randn(128,1,28,28).contiguous(memory_format=torch.channels_last); y = torch.randint(0,10,(128,))
for _ in range(3):
    loss = crit(m(x), y); opt.zero_grad(); loss.backward(); opt.step()
from torch.profiler import profile
with profile(record_shapes=True) as p:
    for _ in range(5):
        loss = crit(m(x), y); opt.zero_grad(); loss.backward(); opt.step()
rows = [e for e in p.key_averages(group_by_input_shape=True) if e.key in ("aten::convolution_backward",)]
rows.sort(key=lambda e: -e.cpu_time_total)
for e in rows[:14]:
    print(f"{e.cpu_time_total/1e3/5:8.2f} ms/step  calls/step {e.count//5:3d}  {str(e.input_shapes)[:150]}")
