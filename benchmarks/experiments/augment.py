"""Fashion-MNIST augmentation throughput, 1 thread: torchvision v2 per sample against BatchedSmallImageTransform
(5,120 training images, through TransformedView.__getitems__ as DataLoader calls it).

    .venv/bin/python benchmarks/experiments/augment.py
"""
import time, torch
torch.set_num_threads(1)
from mobilenets.data import build_data
from mobilenets.data.base import TransformedView
from mobilenets.data.transforms import small_image_train
bundle = build_data("fashion_mnist", random_erasing=0.25)
batched = bundle.train
per_sample = TransformedView(batched.base, batched.indices, small_image_train(28, bundle.mean, bundle.std, erasing=0.25), 0)
for name, view in (("torchvision v2, per sample", per_sample), ("BatchedSmallImageTransform", batched)):
    start = time.perf_counter()
    for first in range(0, 5120, 128):
        view.__getitems__(list(range(first, first + 128)))
    print(f"augmentation {name}: {5120 / (time.perf_counter() - start):.0f} img/s (1 thread)")
