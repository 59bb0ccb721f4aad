"""Eager against torch.compile for one CPU training step of mobilenet_v3_small_minimal (batch 128, 28 px,
channels-last, 2 threads); prints the compile time, then three alternating measurements.

    .venv/bin/python benchmarks/experiments/compile_step.py WIDTH      # measured with WIDTH=0.5
"""
import time, torch, sys
torch.set_num_threads(2)
import mobilenets
name,w = "mobilenet_v3_small_minimal", float(sys.argv[1])
m = mobilenets.create_model(name, num_classes=10, in_chans=1, width_mult=w, small_input=True).to(memory_format=torch.channels_last)
opt = torch.optim.SGD(m.parameters(), lr=0.01, momentum=0.9)
crit = torch.nn.CrossEntropyLoss(label_smoothing=0.1)
x = torch.randn(128,1,28,28).contiguous(memory_format=torch.channels_last); y = torch.randint(0,10,(128,))
cm = torch.compile(m)
def bench(mod, n=6):
    ts=[]
    for _ in range(n):
        t=time.perf_counter()
        loss = crit(mod(x), y); opt.zero_grad(); loss.backward(); opt.step()
        ts.append(time.perf_counter()-t)
    ts.sort(); return 128/ts[len(ts)//2]
t=time.perf_counter(); bench(cm, 2); print(f"compile+2 steps {time.perf_counter()-t:.0f}s", flush=True)
for r in range(3):
    print(f"eager {bench(m):.0f}  compiled {bench(cm):.0f} img/s", flush=True)
