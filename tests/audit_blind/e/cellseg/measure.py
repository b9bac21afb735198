"""Per-cell morphology / intensity features and label-image export."""

from __future__ import annotations

from pathlib import Path
from typing import List, Sequence

import numpy as np
import pandas as pd
import tifffile
from imageio.v3 import imwrite as png_write
from scipy import ndimage as ndi
from skimage.measure import regionprops_table

from .engine import CellPrediction

PROPS = ("label", "area", "eccentricity", "solidity", "perimeter", "mean_intensity", "max_intensity")


def _fill(mask):
    return ndi.binary_fill_holes(mask)  # expect: ndi.binary_fill_holes


def measure_cells(preds: Sequence[CellPrediction], intensity: np.ndarray, *, pixel_um: float = 0.325) -> pd.DataFrame:
    """Rasterise SAM cells into a label image (first come, first served) and measure them."""
    label_img = np.zeros(intensity.shape[:2], dtype=np.int32)
    extra: List[dict] = []
    for idx, pred in enumerate(preds, start=1):
        filled = _fill(pred.mask)
        free = filled & (label_img == 0)
        overlap_px = int(np.logical_and(pred.mask, label_img > 0).sum())  # expect: np.logical_and
        label_img[free] = idx
        extra.append(
            {
                "label": idx,
                "seed_row": pred.seed[0],
                "seed_col": pred.seed[1],
                "sam_score": float(pred.score),
                "overlap_px": overlap_px,
                # logits were clipped to numpy in engine.segment_field
                "logit_p90": float(np.percentile(pred.logits, 90)),
            }
        )
    if not extra:
        return pd.DataFrame(columns=list(PROPS) + ["seed_row", "seed_col", "sam_score"])
    table = pd.DataFrame(regionprops_table(label_img, intensity_image=intensity, properties=PROPS))
    table = table.merge(pd.DataFrame(extra), on="label", how="left")
    table["area_um2"] = table["area"] * pixel_um**2
    return table


def area_summary(preds: Sequence[CellPrediction]) -> dict:
    areas = [p.mask.sum() for p in preds]
    if not areas:
        return {"n": 0}
    return {"n": len(areas), "median_px": float(np.median(areas)), "max_px": int(max(areas))}  # expect: np.median


def write_label_stack(path: Path, preds: Sequence[CellPrediction], shape) -> None:
    """One uint8 plane per cell (overlapping cells stay separable), ImageJ-readable."""
    stack = np.zeros((len(preds), *shape), dtype=np.uint8)
    for i, p in enumerate(preds):
        stack[i] = p.mask  # expect: ndarray setitem
    tifffile.imwrite(path, stack * 255, imagej=True, compression="zlib", metadata={"axes": "ZYX"})


def write_overlay_png(path: Path, rgb: np.ndarray, preds: Sequence[CellPrediction]) -> None:
    over = rgb.copy()
    for p in preds:
        m = p.mask.cpu().numpy()
        ring = ndi.binary_dilation(m, iterations=1) & ~m
        over[ring] = (255, 64, 64)
        r, c = p.seed
        over[max(r - 1, 0) : r + 2, max(c - 1, 0) : c + 2] = (64, 255, 64)
    png_write(path, over)
