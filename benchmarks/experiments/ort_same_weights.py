"""ONNX Runtime latency of V3-Large exports: torchvision's, ours (random init), ours carrying torchvision's
weights, each with and without denormals-as-zero; interleaved in one process, 1 thread, batch 1, 224 px.

    .venv/bin/python benchmarks/experiments/ort_same_weights.py
"""
import time, statistics, torch, torchvision, tempfile, os, numpy as np
torch.set_num_threads(1)
import onnxruntime as ort
import mobilenets
from mobilenets.deploy.onnx_export import export_onnx
from mobilenets.convert import convert_state_dict
torch.manual_seed(0)
tv = torchvision.models.mobilenet_v3_large().eval()
ours_rand = mobilenets.create_model("mobilenet_v3_large").eval()
ours_tvw = convert_state_dict("torchvision", tv.state_dict(), "mobilenet_v3_large").eval()
d = tempfile.mkdtemp()
x = np.random.default_rng(0).standard_normal((1,3,224,224)).astype(np.float32)
sessions = {}
for name, m in (("tv", tv), ("ours_random", ours_rand), ("ours_tv_weights", ours_tvw)):
    p = export_onnx(m, os.path.join(d, name + ".onnx"), input_size=(3,224,224), dynamic_batch=True)
    for daz in (0, 1):
        so = ort.SessionOptions(); so.intra_op_num_threads = 1; so.inter_op_num_threads = 1
        so.add_session_config_entry("session.set_denormal_as_zero", str(daz))
        sessions[(name, daz)] = ort.InferenceSession(str(p), so, providers=["CPUExecutionProvider"])
times = {k: [] for k in sessions}
for r in range(30):
    for k, s in sessions.items():
        s.run(None, {"input": x} if s.get_inputs()[0].name == "input" else {s.get_inputs()[0].name: x})
        t = time.perf_counter()
        for _ in range(3):
            s.run(None, {s.get_inputs()[0].name: x})
        times[k].append((time.perf_counter() - t) / 3 * 1e3)
for k, v in times.items():
    print(k, f"{statistics.median(v):.2f} ms")
