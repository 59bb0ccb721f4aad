"""Draw docs/images/scenes.png: Fashion-MNIST scenes (image with the boxes of the visible garments, and the mask).

    python benchmarks/scenes_picture.py [--output docs/images/scenes.png] [--seed 0]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.colors import ListedColormap  # noqa: E402
from matplotlib.patches import Rectangle  # noqa: E402

from mobilenets.checkpoint import atomic_write  # noqa: E402
from mobilenets.data.scenes import SCENE_CLASSES  # noqa: E402
from mobilenets.data.segmentation import build_segmentation_data  # noqa: E402


def draw(output: Path, seed: int, count: int = 6) -> None:
    scenes = build_segmentation_data("fashion_mnist_scenes", train_scenes=count, test_scenes=1, seed=seed).train
    colours = ListedColormap(["black"] + [plt.get_cmap("tab10")(i) for i in range(10)])
    fig, axes = plt.subplots(2, count, figsize=(2.2 * count, 4.8))
    for i in range(count):
        scene = scenes.scene(i)
        axes[0, i].imshow(scene.image[0], cmap="gray", vmin=0, vmax=255)
        for (x0, y0, x1, y1), label in zip(scene.boxes.tolist(), scene.labels.tolist()):
            axes[0, i].add_patch(Rectangle((x0 - 0.5, y0 - 0.5), x1 - x0, y1 - y0, fill=False,
                                           edgecolor=colours(label), linewidth=1.2))
            axes[0, i].text(x0, y0 - 1, SCENE_CLASSES[label], color=colours(label), fontsize=6, va="bottom")
        axes[1, i].imshow(scene.mask, cmap=colours, vmin=0, vmax=10, interpolation="nearest")
        for ax in axes[:, i]:
            ax.set_xticks([])
            ax.set_yticks([])
    axes[0, 0].set_ylabel("image + boxes")
    axes[1, 0].set_ylabel("mask (0-10)")
    fig.suptitle(f"fashion_mnist_scenes, training split, seed {seed}", fontsize=10)
    fig.tight_layout()
    atomic_write(output, lambda tmp: fig.savefig(tmp, dpi=110, format="png"))
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", type=Path, default=Path(__file__).parent.parent / "docs" / "images" / "scenes.png")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    draw(args.output, args.seed)
    print(args.output)


if __name__ == "__main__":
    main()
