"""``mobilenets train``, ``mobilenets evaluate`` and ``mobilenets predict``.

``train`` runs unchanged under ``torchrun --nproc_per_node N`` (DistributedDataParallel; rank 0 writes).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

from ..argtypes import non_negative_float, positive_float, positive_int
from ..checkpoint import CheckpointError, read_metadata
from ..data import DATASETS, SEGMENTATION_DATASETS, dataset_name
from ..data.detection import DETECTION_DATASETS, detection_dataset_name
from ..data.segmentation import segmentation_dataset_name
from .config import TrainConfig
from .detection_eval import format_detection_report
from .evaluate import EVAL_BACKENDS, PREDICT_BACKENDS, evaluate_checkpoint, format_report, resolve_checkpoint
from .predict import predict_files
from .segmentation_eval import format_segmentation_report
from .tasks import task_for_model, task_name_of
from .trainer import TrainingDiverged, train

__all__ = ["register", "config_from_args"]

DATASET_HELP = (f"{', '.join(DATASETS)}; for segmentation models {', '.join(SEGMENTATION_DATASETS)}; for detection "
                f"models {', '.join(DETECTION_DATASETS)} (case, '-' and '_' do not matter: fashion-mnist, CIFAR-10)")


def _dataset(text: str) -> str:
    """--dataset as users write it, to the registered name (of a classification, segmentation or detection
    dataset; whether it fits the model is checked with the model)."""
    try:
        return dataset_name(text)
    except ValueError as exc:
        for other in (segmentation_dataset_name, detection_dataset_name):
            try:
                return other(text)
            except ValueError:
                continue
        raise argparse.ArgumentTypeError(
            f"{exc}; for segmentation models: {', '.join(SEGMENTATION_DATASETS)}; for detection models: "
            f"{', '.join(DETECTION_DATASETS)}") from None


def _classes(text: str) -> list[str]:
    """``background,cat,dog``: the names of mask values 0, 1, 2 ..."""
    names = [part.strip() for part in text.split(",")]
    if len(names) < 2 or not all(names):
        raise argparse.ArgumentTypeError(f"expected at least two comma-separated class names such as "
                                         f"background,cat,dog, got {text!r}")
    return names


def _on_off_auto(text: str):
    return {"auto": None, "on": True, "off": False}[text]


def _sizes(text: str) -> list[int]:
    """``16,20,24,28``: image sides in pixels, for --progressive-sizes."""
    try:
        sizes = [int(part) for part in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers such as 16,20,24,28, got {text!r}") from None
    if any(size < 1 for size in sizes):
        raise argparse.ArgumentTypeError(f"sizes must be >= 1 pixel, got {text}")
    return sizes


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "train", help="train a model on Fashion-MNIST, CIFAR or an image folder (segmentation: scenes, VOC, masks)",
        description="Train a MobileNet (a classification or a segmentation model). Writes last/best checkpoints, "
                    "best.safetensors, metrics.jsonl and plots to --output.",
    )
    g = p.add_argument_group("model")
    g.add_argument("--model", default="mobilenet_v2", help="model name (see `mobilenets list`)")
    g.add_argument("--width-mult", type=float, default=1.0, help="width multiplier alpha")
    g.add_argument("--dropout", type=non_negative_float, default=None, help="dropout before the classifier (model default)")
    g.add_argument("--drop-path-rate", type=non_negative_float, default=None, help="stochastic depth rate (model default)")
    g.add_argument("--bn-momentum", type=float, default=None,
                   help="batch-norm running-statistics momentum (model default 0.1; raise it for very short runs)")
    g.add_argument("--small-input", choices=("auto", "on", "off"), default="auto",
                   help="stride-1 stem for 28-64 px images (auto: on for those sizes)")
    g = p.add_argument_group("data")
    g.add_argument("--dataset", type=_dataset, default=None, metavar="NAME",
                   help=f"{DATASET_HELP}; default: fashion_mnist, for segmentation and detection models "
                        "fashion_mnist_scenes")
    g.add_argument("--classes", type=_classes, default=None, metavar="NAME,NAME,...",
                   help="segmentation mask_folder data: the names of mask values 0, 1, ... (255 is ignored)")
    g.add_argument("--data-dir", default=None, help="dataset folder (default: $MOBILENETS_DATA, then system locations)")
    g.add_argument("--image-size", type=positive_int, default=None,
                   help="input size (default: native, 224 for imagefolder; segmentation: 128 for the scenes, 512 "
                        "for VOC and mask folders, the training crop and the evaluation shorter side)")
    g.add_argument("--progressive-sizes", type=_sizes, default=None, metavar="S1,S2,...",
                   help="train on the augmented images resized to these sides, in equal shares of the run (of its "
                        "steps, or of its time with --time-budget); the last must be the image size")
    g.add_argument("--val-fraction", type=float, default=0.1, help="part of the training set held out for model selection")
    g.add_argument("--augment", choices=("none", "autoaugment", "randaugment", "trivialaugment"), default="none",
                   help="extra policy for imagefolder data")
    g.add_argument("--random-erasing", type=float, default=None,
                   help="probability of random erasing (default 0.25; 0 disables; classification only)")
    g.add_argument("--no-download", action="store_true", help="never download missing data")
    g.add_argument("--workers", type=int, default=None, help="data loader processes (default: 0 on <= 2 cores)")
    g = p.add_argument_group("optimisation")
    g.add_argument("--epochs", type=positive_int, default=10)
    g.add_argument("--time-budget", type=positive_float, default=None, metavar="MINUTES",
                   help="train for this many minutes of wall-clock (validation included), the cosine schedule "
                        "running on elapsed time; --epochs becomes an upper bound")
    g.add_argument("--batch-size", type=positive_int, default=128, help="per process")
    g.add_argument("--recipe", choices=("default", "paper"), default="default",
                   help="default: SGD nesterov, warmup + cosine, label smoothing, EMA; paper: RMSProp, exponential decay")
    g.add_argument("--opt", choices=("sgd", "adamw", "rmsprop"), default=None, help="override the recipe's optimizer")
    g.add_argument("--lr", type=float, default=None, help="base learning rate (default: recipe's, scaled by batch/256)")
    g.add_argument("--weight-decay", type=non_negative_float, default=None)
    g.add_argument("--warmup-epochs", type=non_negative_float, default=None)
    g.add_argument("--label-smoothing", type=non_negative_float, default=None)
    g.add_argument("--ema-decay", type=non_negative_float, default=None, help="EMA of weights (0 disables)")
    g.add_argument("--clip-grad", type=non_negative_float, default=None, help="clip the gradient norm to this value")
    g.add_argument("--seed", type=int, default=0)
    g.add_argument("--init-from", default=None, metavar="CKPT",
                   help="start from these weights (a .safetensors of the same model and classes) instead of random")
    g = p.add_argument_group("distillation")
    g.add_argument("--teacher", action="append", default=[], metavar="CKPT",
                   help="a trained .safetensors to distill from; repeat it for an ensemble (probabilities averaged)")
    g.add_argument("--distill-weight", type=positive_float, default=None,
                   help="share of the distillation term in the loss, in (0, 1] (default 0.5; the labels get the rest)")
    g.add_argument("--distill-temperature", type=positive_float, default=None,
                   help="softmax temperature of teacher and student in the distillation term (default 1.0)")
    g = p.add_argument_group("hardware")
    g.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N")
    g.add_argument("--threads", type=positive_int, default=None,
                   help="torch CPU threads (default: torch's; 1 is fastest on a CPU shared with other jobs)")
    g.add_argument("--amp", choices=("auto", "off", "bf16", "fp16"), default="auto",
                   help="mixed precision (auto: bf16/fp16 on CUDA, off on CPU)")
    g.add_argument("--channels-last", choices=("auto", "on", "off"), default="auto", help="auto: on for CPU and CUDA")
    g.add_argument("--compile", choices=("off", "default", "reduce-overhead", "max-autotune"), default="off",
                   help="torch.compile the training forward/backward (reduce-overhead: CUDA graphs on a GPU)")
    g = p.add_argument_group("run")
    g.add_argument("--output", required=True, help="folder for checkpoints, metrics and plots")
    g.add_argument("--resume", action="store_true", help="continue the run in --output from last.pt")
    g.add_argument("--overwrite", action="store_true", help="replace a run already in --output")
    g.add_argument("--limit-train-batches", type=positive_int, default=None, help="steps per epoch (for quick checks)")
    g.add_argument("--limit-val-batches", type=positive_int, default=None, help="batches of validation/test")
    g.add_argument("--no-progress", action="store_true", help="no progress bars")
    g.add_argument("--no-tensorboard", action="store_true")
    g.add_argument("--json", action="store_true", help="print the results as one JSON object at the end")
    p.set_defaults(func=_cmd_train)

    p = subparsers.add_parser("evaluate", help="top-1/top-5, per-class accuracy and confusion matrix of a checkpoint "
                                               "(segmentation: mIoU, pixel accuracy, per-class IoU)")
    p.add_argument("checkpoint", type=Path,
                   help="a .safetensors file, a training output folder (its best model) or a training state "
                        "(last.pt/best.pt: its EMA weights)")
    p.add_argument("--dataset", type=_dataset, default=None, metavar="NAME",
                   help=f"{DATASET_HELP}; default: the one it was trained on")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--split", choices=("test", "val"), default="test")
    p.add_argument("--batch-size", type=positive_int, default=256)
    p.add_argument("--workers", type=int, default=0)
    p.add_argument("--limit-batches", type=positive_int, default=None)
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=positive_int, default=None, help="torch CPU threads (default: torch's)")
    p.add_argument("--confusion", type=Path, default=None,
                   help="confusion matrix PNG (default: confusion_<split>.png beside the checkpoint)")
    p.add_argument("--backend", choices=EVAL_BACKENDS, default="pytorch",
                   help="pytorch (as loaded), or an inference backend: BN folded (eager), torch.compile, ONNX Runtime "
                        "fp32 or INT8, PT2E INT8 through Inductor, OpenVINO fp32 or INT8 (every INT8 calibrated on "
                        "validation images)")
    p.add_argument("--json", action="store_true",
                   help="print one JSON object (top1/top5, or miou/pixel_accuracy/per_class_iou, as fractions)")
    p.set_defaults(func=_cmd_evaluate)

    p = subparsers.add_parser("predict", help="class probabilities for image files (segmentation: mask PNGs)")
    p.add_argument("checkpoint", type=Path,
                   help="a .safetensors file, a training output folder or a training state (last.pt/best.pt)")
    p.add_argument("images", type=Path, nargs="+")
    p.add_argument("--top-k", type=positive_int, default=None, help="classes shown per image (default 5)")
    p.add_argument("--output-dir", type=Path, default=None,
                   help="segmentation models: where NAME_mask.png (class indices, VOC palette) and NAME_overlay.png "
                        "(the mask over the image, with a legend) go; detectors: NAME_detections.png (the boxes, "
                        "classes and scores drawn) (default: the current folder)")
    p.add_argument("--score-threshold", type=float, default=None,
                   help="detectors: the lowest score of a box drawn and listed (default 0.5)")
    p.add_argument("--backend", choices=PREDICT_BACKENDS, default="pytorch",
                   help="pytorch (as loaded), eager (BN folded), compile, onnxruntime or openvino")
    p.add_argument("--threads", type=positive_int, default=None, help="CPU threads (torch, ONNX Runtime, OpenVINO)")
    p.add_argument("--json", action="store_true", help="print one JSON list")
    p.set_defaults(func=_cmd_predict)


def config_from_args(args: argparse.Namespace):
    return TrainConfig(
        model=args.model, output=args.output, dataset=args.dataset, classes=args.classes, data_dir=args.data_dir,
        width_mult=args.width_mult,
        dropout=args.dropout, drop_path_rate=args.drop_path_rate, bn_momentum=args.bn_momentum, small_input=_on_off_auto(args.small_input),
        image_size=args.image_size, progressive_sizes=args.progressive_sizes, epochs=args.epochs,
        time_budget_min=args.time_budget, batch_size=args.batch_size, recipe=args.recipe, opt=args.opt,
        lr=args.lr, weight_decay=args.weight_decay, warmup_epochs=args.warmup_epochs,
        label_smoothing=args.label_smoothing, ema_decay=args.ema_decay, clip_grad=args.clip_grad, augment=args.augment,
        init_from=args.init_from, teachers=list(args.teacher), distill_weight=args.distill_weight,
        distill_temperature=args.distill_temperature, random_erasing=args.random_erasing,
        val_fraction=args.val_fraction, seed=args.seed, amp=args.amp,
        channels_last=args.channels_last, compile=args.compile, device=args.device, workers=args.workers, threads=args.threads,
        limit_train_batches=args.limit_train_batches, limit_val_batches=args.limit_val_batches,
        allow_download=not args.no_download, progress=not args.no_progress and sys.stderr.isatty(),
        tensorboard=not args.no_tensorboard, resume=args.resume, overwrite=args.overwrite,
    )


def _cmd_train(args: argparse.Namespace) -> int:
    try:
        results = train(config_from_args(args))
    except TrainingDiverged as exc:
        print(f"mobilenets train: error: {exc}", file=sys.stderr)
        return 1
    if "curves_png" not in results:  # not rank 0
        return 0
    if args.json:
        print(json.dumps(results))
        return 0
    task = task_for_model(args.model)
    chosen = (f"best epoch {results['best_epoch']}" if results[f"best_{task.selection_metric}"] is not None
              else f"last epoch {results['best_epoch']}, no validation split")
    print(
        f"{task.test_summary(results)} "
        f"({results['test_images']} images; {chosen}, "
        f"{results['train_seconds'] / 60:.1f} min of training, {results['train_images_per_s']:.0f} img/s)"
    )
    print(f"model: {results['best_safetensors']}")
    print(f"plots: {', '.join(results[k] for k in ('curves_png', 'confusion_png') if k in results)}")
    return 0


def _cmd_evaluate(args: argparse.Namespace) -> int:
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    checkpoint = resolve_checkpoint(args.checkpoint)
    png = args.confusion or checkpoint.parent / f"confusion_{args.split}.png"
    if args.confusion is None and _is_detector(checkpoint):
        png = None  # a detector has no confusion matrix
    result = evaluate_checkpoint(
        checkpoint, args.dataset, args.data_dir, args.split, args.batch_size, args.workers, args.limit_batches,
        png, args.device, progress=sys.stderr.isatty(), backend=args.backend, threads=args.threads,
    )
    if args.json:
        print(json.dumps(result))
    else:
        report = (format_detection_report if "map" in result else format_segmentation_report if "miou" in result
                  else format_report)
        print(report(result))
    return 0


def _is_detector(checkpoint: Path) -> bool:
    """Whether a resolved checkpoint (a .safetensors file, or a training state beside its best.safetensors)
    holds a registered detector; an unreadable one is left to the command to report."""
    source = checkpoint if checkpoint.suffix == ".safetensors" else checkpoint.parent / "best.safetensors"
    try:
        arch = read_metadata(source).get("arch")
    except CheckpointError:
        return False
    return isinstance(arch, str) and task_name_of(arch) == "detection"


def _cmd_predict(args: argparse.Namespace) -> int:
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    results = predict_files(args.checkpoint, args.images, args.top_k, backend=args.backend, threads=args.threads,
                            output_dir=args.output_dir, score_threshold=args.score_threshold)
    if args.json:
        print(json.dumps(results))
        return 0
    for item in results:
        if "detections" in item:
            found = ", ".join(f"{d['class']} {d['score']:.2f}" for d in item["detections"]) or "no boxes"
            print(f"{item['image']}: {found}; {item['output']}")
            continue
        if "overlay_png" in item:
            found = ", ".join(f"{name} {share:.1%}" for name, share in item["classes"].items())
            print(f"{item['image']}: {found}; {item['overlay_png']}, {item['mask_png']}")
            continue
        best = ", ".join(f"{p['class']} {p['probability']:.1%}" for p in item["predictions"])
        print(f"{item['image']}: {best}")
    return 0
