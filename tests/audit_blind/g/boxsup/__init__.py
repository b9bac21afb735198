"""boxsup - dense pseudo labels from bounding boxes with SAM-HQ.

Typical use::

    from boxsup import BoxPrompter, build_label_map
    prompter = BoxPrompter("vit_l")
    label_map, kept = build_label_map(image, boxes, classes, prompter, image_id="0001")

or from the command line::

    python -m boxsup.coco_export --images data/images --boxes data/labels --out work/pseudo
"""

from .sam_wrapper import BoxPrompter, PromptResult
from .pseudo_labels import IGNORE_INDEX, build_label_map, fill_ratio, tight_box
from .coco_export import CocoWriter

__all__ = [
    "BoxPrompter",
    "PromptResult",
    "IGNORE_INDEX",
    "build_label_map",
    "fill_ratio",
    "tight_box",
    "CocoWriter",
]

__version__ = "0.3.1"
