#!/usr/bin/env bash
# One lent-GPU session, run from the repository root on the GPU machine (its own python3 and torch):
#   1. tests/test_gpu_numerics.py: every model's CUDA numerics against a float64 CPU reference, and training
#      under amp off / bf16 / fp16 (needs pytest in that python3);
#   2. the training-throughput comparison with torchvision's mobilenet_v3_small (same loop, on the GPU);
#   3. benchmarks/gpu/fmnist_runs.py: a Fashion-MNIST accuracy run (V2 x1.0) ending by MINUTES.
# Results go to $OUT (session.log, gpu_numerics.xml, the results files of steps 2 and 3, runs.tar.gz, and the
# best run's best.safetensors in parts of at most 15 MB: `cat best.safetensors.part* > best.safetensors`).
#
#   OUT=/tmp/out bash benchmarks/gpu/session.sh FASHION_MNIST_DIR MINUTES
set -u
data=${1:?usage: session.sh FASHION_MNIST_DIR MINUTES}
minutes=${2:?usage: session.sh FASHION_MNIST_DIR MINUTES}
out=${OUT:?set OUT to the folder for the results}
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 MOBILENETS_DATA="$data"
export PYTHONWARNINGS="ignore::UserWarning"
mkdir -p "$out" runs
start=$(date +%s)
{
    nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.sm,clocks.max.sm --format=csv
    python3 -c "import torch, torchvision; print('torch', torch.__version__, 'torchvision', torchvision.__version__)"
    echo "== 1. check ($(($(date +%s) - start)) s)"
    timeout 240 python3 -m pytest -q -p no:cacheprovider tests/test_gpu_numerics.py --junitxml "$out/gpu_numerics.xml" \
        || echo "check: exit $?"
    echo "== 2. throughput ($(($(date +%s) - start)) s)"
    timeout 90 python3 benchmarks/train_fashion_mnist.py --throughput-only --batch-size 256 --threads 4 \
        --steps 20 --repeats 7 --results "$out/train_fashion_mnist.json" || echo "throughput: exit $?"
    echo "== 3. accuracy runs ($(($(date +%s) - start)) s)"
    left=$(python3 -c "print(max(1.0, $minutes - ($(date +%s) - $start) / 60))")
    # one run: side by side, runs share the GPU by time-slicing and gain nothing (docs/training.md)
    python3 benchmarks/gpu/fmnist_runs.py --deadline-min "$left" --configs v2_x1.0 --output runs/gpu \
        --results "$out/gpu_fmnist_runs.json" || echo "runs: exit $?"
    echo "== done ($(($(date +%s) - start)) s)"
} 2>&1 | tee "$out/session.log"
tar czf "$out/runs.tar.gz" --exclude='*.pt' --exclude='*.safetensors' runs/gpu 2>/dev/null
best=$(python3 - <<'EOF'
import json, pathlib
p = pathlib.Path("runs/gpu/summary.json")
rows = [r for r in json.loads(p.read_text()) if r.get("test_top1") is not None] if p.exists() else []
print(max(rows, key=lambda r: r["test_top1"])["config"] if rows else "")
EOF
)
if [ -n "$best" ] && [ -f "runs/gpu/$best/best.safetensors" ]; then
    split -b 15M -d "runs/gpu/$best/best.safetensors" "$out/best_${best}.safetensors.part"
fi
ls -la "$out"
