"""Weight gradient of the depthwise convolutions of mobilenet_v3_small x0.5 (28 px, batch 128, 1 thread,
channels-last): PyTorch's own (oneDNN) against the same sum written as shifted products, eager and compiled
by Inductor (and the forward for scale), with the compile time and the error against the native result.

    .venv/bin/python benchmarks/experiments/dw_weight_grad.py
"""
import time, torch, torch.nn.functional as F
torch.set_num_threads(1)
def bench(fn, n=20):
    for _ in range(3): fn()
    t=time.perf_counter()
    for _ in range(n): fn()
    return (time.perf_counter()-t)/n*1e3
def gw_ref(x, g, k, s, p):
    # x, g channels-last (N,C,H,W) logical; returns (C,1,k,k)
    xp = F.pad(x, (p, p, p, p)).permute(0, 2, 3, 1)  # N,Hp,Wp,C
    gg = g.permute(0, 2, 3, 1)
    Ho, Wo = gg.shape[1], gg.shape[2]
    rows = []
    for i in range(k):
        for j in range(k):
            rows.append((xp[:, i:i + s * (Ho - 1) + 1:s, j:j + s * (Wo - 1) + 1:s, :] * gg).sum((0, 1, 2)))
    return torch.stack(rows, 1).view(-1, 1, k, k)
def main():
    N=128
    for (C,H,k,s) in [(288,4,5,1),(144,7,5,1),(40,28,3,2),(72,7,5,1),(144,7,5,2)]:
        p=k//2
        x=torch.randn(N,C,H,H).contiguous(memory_format=torch.channels_last); w=torch.randn(C,1,k,k)
        y=F.conv2d(x,w,stride=s,padding=p,groups=C); g=torch.randn_like(y).contiguous(memory_format=torch.channels_last)
        cb=lambda m: torch.ops.aten.convolution_backward(g,x,w,None,[s,s],[p,p],[1,1],False,[0,0],C,m)
        fwd=bench(lambda: F.conv2d(x,w,stride=s,padding=p,groups=C))
        gw_t=bench(lambda: cb([False,True,False])); ref=cb([False,True,False])[1]
        eager=bench(lambda: gw_ref(x,g,k,s,p))
        comp=torch.compile(gw_ref, dynamic=False)
        t0=time.perf_counter(); out=comp(x,g,k,s,p); ct=time.perf_counter()-t0
        c=bench(lambda: comp(x,g,k,s,p))
        e=((out-ref).abs().max()/ref.abs().max()).item()
        print(f"C{C} {H}x{H} k{k} s{s}: forward {fwd:5.2f} | native gw {gw_t:6.2f} | eager shifts {eager:6.2f} | compiled {c:6.2f} ms (compile {ct:.0f}s, err {e:.1e})", flush=True)


if __name__ == "__main__":
    main()
