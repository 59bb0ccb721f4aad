"""Validation and test top-1 of a training state's raw weights and of its EMA weights, side by side.

    .venv/bin/python benchmarks/experiments/ema_vs_raw.py runs/bench_tb/last.pt
"""
import sys, torch, mobilenets
from mobilenets.data import build_data
from mobilenets.train.evaluate import run_eval, state_weights
torch.set_num_threads(2)
state = torch.load(sys.argv[1], map_location="cpu", weights_only=True)
cfg = state["config"]
bundle = build_data("fashion_mnist", None, val_fraction=cfg["val_fraction"], seed=cfg["seed"], random_erasing=0.0)
model = mobilenets.create_model(cfg["model"], num_classes=10, in_chans=1, width_mult=cfg["width_mult"], small_input=True)
for name in ("model", "ema"):
    model.load_state_dict(state_weights(state, ema=name == "ema"))
    for split in ("val", "test"):
        r = run_eval(model.eval(), getattr(bundle, split), 10, batch_size=512)
        print(f"{sys.argv[1]} {name:5} {split}: top-1 {r.top1:.4f}")
