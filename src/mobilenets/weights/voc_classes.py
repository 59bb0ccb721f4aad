"""The 21 Pascal VOC class names (background first), in the order of the segmentation heads' logits.

torchvision's segmentation weights are trained on the COCO images holding VOC's 20 categories; the names are
torchvision's (``torchvision.models._meta._VOC_CATEGORIES``), which ``tests/test_weights.py`` checks.
"""

VOC_CLASSES: tuple[str, ...] = (
    "__background__", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
    "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train", "tvmonitor",
)
