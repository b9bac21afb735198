"""evalkit: the small toolbox shared by our interactive (NoC) and VOS benchmarks.

Keep this import-light: the benchmark scripts import it on cluster nodes
where matplotlib may not have a display backend.
"""
from .clicks import Click, ClickSimulator
from .engine import CachedPredictor, build_predictor, to_numpy
from .metrics import boundary_fscore, mask_iou, region_stats, summarize_noc

__all__ = [
    "Click",
    "ClickSimulator",
    "CachedPredictor",
    "build_predictor",
    "to_numpy",
    "boundary_fscore",
    "mask_iou",
    "region_stats",
    "summarize_noc",
]

__version__ = "0.3.1"
