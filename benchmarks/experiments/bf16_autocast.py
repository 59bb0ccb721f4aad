"""fp32 against bf16 autocast, one CPU training step (batch 128, 28 px, channels-last), four small models.

    .venv/bin/python benchmarks/experiments/bf16_autocast.py THREADS     # measured with THREADS=1
"""
import time, torch, sys
torch.set_num_threads(int(sys.argv[1]))
import mobilenets
for name, w in [("mobilenet_v3_small_minimal",0.5),("mobilenet_v3_small",0.5),("mobilenet_v3_small",1.0),("mobilenet_v1",0.5)]:
    m = mobilenets.create_model(name, num_classes=10, in_chans=1, width_mult=w, small_input=True).to(memory_format=torch.channels_last)
    opt = torch.optim.SGD(m.parameters(), lr=0.01, momentum=0.9)
    x = torch.randn(128,1,28,28).contiguous(memory_format=torch.channels_last); y = torch.randint(0,10,(128,))
    res={}
    for amp in (False, True, False, True):
        def step():
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=amp):
                loss = torch.nn.functional.cross_entropy(m(x).float(), y)
            opt.zero_grad(); loss.backward(); opt.step()
        for _ in range(2): step()
        ts=[]
        for _ in range(5):
            t=time.perf_counter(); step(); ts.append(time.perf_counter()-t)
        ts.sort(); res.setdefault(amp,[]).append(128/ts[2])
    print(f"{name} x{w}: fp32 {max(res[False]):.0f} bf16 {max(res[True]):.0f} img/s", flush=True)
