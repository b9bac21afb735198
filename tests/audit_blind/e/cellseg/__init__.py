"""Nucleus-prompted SAM segmentation for high-content screening plates.

Typical use::

    from cellseg import open_predictor, find_seeds, segment_field, measure_cells

    with open_predictor("weights/sam_vit_b_01ec64.pth") as sam:
        sam.set_image(rgb)
        cells = list(segment_field(sam, rgb, find_seeds(dapi)))
    table = measure_cells(cells, intensity=gfp)
"""

from .engine import CellPrediction, find_seeds, open_predictor, segment_field, to_rgb
from .measure import measure_cells, write_label_stack, write_overlay_png

__all__ = [
    "CellPrediction",
    "find_seeds",
    "measure_cells",
    "open_predictor",
    "segment_field",
    "to_rgb",
    "write_label_stack",
    "write_overlay_png",
]

__version__ = "0.4.1"
