"""sam_tools: the small layer our annotation services put around Segment Anything.

Everything in here used to live in three copies (the Label Studio backend, the
ROS node and the tracker). Keep the public surface small: engines in
``engine``, pure-numpy mask utilities in ``postprocess``.
"""

from .engine import CachedPromptEngine, PromptEngine, SamForward, build_engine
from .postprocess import (
    keep_largest_component,
    mask_to_polygons,
    mask_to_xyxy,
    overlay_mask,
    polygons_to_yolo,
)

__all__ = [
    "CachedPromptEngine",
    "PromptEngine",
    "SamForward",
    "build_engine",
    "keep_largest_component",
    "mask_to_polygons",
    "mask_to_xyxy",
    "overlay_mask",
    "polygons_to_yolo",
]

__version__ = "0.7.1"
