"""Model loading and point-prompted segmentation of single cells."""

from __future__ import annotations

import logging
from contextlib import contextmanager
from typing import Iterable, Iterator, NamedTuple, Sequence, Tuple

import numpy as np
import torch
from segment_anything import SamPredictor, sam_model_registry
from skimage.feature import peak_local_max
from skimage.filters import gaussian, threshold_otsu

log = logging.getLogger(__name__)

# nuclei smaller/larger than this (in pixels at 20x) are debris or clumps
MIN_CELL_PX = 150
MAX_CELL_PX = 12_000


class CellPrediction(NamedTuple):
    seed: Tuple[int, int]  # (row, col) of the nucleus peak
    mask: "torch.Tensor | np.ndarray"
    score: "torch.Tensor | float"
    logits: "torch.Tensor | np.ndarray"


@contextmanager
def open_predictor(checkpoint: str, model_type: str = "vit_b", device: str = "cuda") -> Iterator[SamPredictor]:
    """Load SAM once per worker and free the GPU memory when done."""
    sam = sam_model_registry[model_type](checkpoint=checkpoint)
    sam.to(device=device).eval()
    try:
        yield SamPredictor(sam)
    finally:
        del sam
        if device.startswith("cuda"):
            torch.cuda.empty_cache()


def to_rgb(channel: np.ndarray, lo_pct: float = 1.0, hi_pct: float = 99.8) -> np.ndarray:
    """Contrast-stretch a uint16 channel into the uint8 RGB image SAM expects."""
    lo, hi = np.percentile(channel, (lo_pct, hi_pct))
    scaled = np.clip((channel.astype(np.float32) - lo) / max(hi - lo, 1e-6), 0.0, 1.0)
    grey = (scaled * 255).astype(np.uint8)
    return np.repeat(grey[..., None], 3, axis=-1)


def find_seeds(dapi: np.ndarray, min_distance: int = 7) -> list:
    """Nucleus centres from the DAPI channel (plain numpy / scikit-image)."""
    smooth = gaussian(dapi.astype(np.float32), sigma=2)
    fg = smooth > threshold_otsu(smooth)
    peaks = peak_local_max(smooth, min_distance=min_distance, labels=fg.astype(np.uint8))
    return [tuple(int(v) for v in p) for p in peaks]


def _plausible(mask, min_px: int = MIN_CELL_PX, max_px: int = MAX_CELL_PX) -> bool:
    area = np.count_nonzero(mask)  # expect: np.count_nonzero
    return min_px <= area <= max_px


def _touches_border(mask) -> bool:
    return bool(mask[0, :].any() or mask[-1, :].any() or mask[:, 0].any() or mask[:, -1].any())


def segment_field(
    predictor: SamPredictor,
    image_rgb: np.ndarray,
    seeds: Sequence[Tuple[int, int]],
    *,
    refine: bool = True,
) -> Iterator[CellPrediction]:
    """Prompt SAM with one positive click per nucleus; yield accepted cells.

    ``predictor.set_image(image_rgb)`` must already have been called.
    """
    ones = np.ones(1, dtype=np.int64)
    for row, col in seeds:
        pts = np.array([[col, row]], dtype=np.float32)
        masks, scores, logits = predictor.predict(point_coords=pts, point_labels=ones, multimask_output=True)
        k = int(scores.argmax())
        if refine:
            # second pass seeded with the best low-res logits sharpens the boundary
            masks, scores, logits = predictor.predict(
                point_coords=pts,
                point_labels=ones,
                mask_input=logits[k][None, :, :],
                multimask_output=False,
            )
            k = 0
        cell = masks[k]
        if _touches_border(cell) or not _plausible(cell):
            continue
        log.debug("seed %s accepted, score %.3f", (row, col), scores[k])
        yield CellPrediction((row, col), cell, scores[k], np.clip(logits[k], -20.0, 20.0))  # expect: np.clip


def segment_many(predictor: SamPredictor, images: Iterable[np.ndarray], seeds_per_image) -> Iterator[list]:
    for rgb, seeds in zip(images, seeds_per_image):
        predictor.set_image(rgb)
        yield list(segment_field(predictor, rgb, seeds))
