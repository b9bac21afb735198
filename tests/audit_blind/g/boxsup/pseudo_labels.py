"""Turn box annotations into dense pseudo label maps.

A box is kept when the SAM-HQ mask is consistent with it (tight box IoU and
fill ratio); rejected boxes, mask boundaries and low-confidence pixels go to
IGNORE_INDEX so the segmentation loss skips them.
"""
from __future__ import annotations

from typing import Hashable, List, Optional, Sequence, Tuple

import cv2
import numpy as np

from .sam_wrapper import BoxPrompter, PromptResult

IGNORE_INDEX = 255


def box_region(box: Sequence[float], shape: Tuple[int, int]) -> np.ndarray:
    h, w = shape
    x0, y0, x1, y1 = np.clip(np.round(np.asarray(box)), 0, [w, h, w, h]).astype(int)
    region = np.zeros((h, w), dtype=bool)
    region[y0:y1, x0:x1] = True
    return region


def tight_box(mask) -> Optional[np.ndarray]:
    ys, xs = np.where(mask)  # expect: np.where
    if xs.size == 0:
        return None
    return np.array([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], dtype=np.float32)


def box_iou(a: np.ndarray, b: np.ndarray) -> float:
    ix0, iy0 = max(a[0], b[0]), max(a[1], b[1])
    ix1, iy1 = min(a[2], b[2]), min(a[3], b[3])
    inter = max(ix1 - ix0, 0.0) * max(iy1 - iy0, 0.0)
    area_a = (a[2] - a[0]) * (a[3] - a[1])
    area_b = (b[2] - b[0]) * (b[3] - b[1])
    return float(inter / max(area_a + area_b - inter, 1e-6))


def fill_ratio(mask, box: Sequence[float]) -> float:
    x0, y0, x1, y1 = (float(v) for v in box)
    box_area = max((x1 - x0) * (y1 - y0), 1.0)
    return float(mask.sum()) / box_area


def boundary_band(mask, width: int = 3) -> np.ndarray:
    m = mask.astype(np.uint8)  # expect: astype
    k = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * width + 1, 2 * width + 1))
    return (cv2.dilate(m, k) - cv2.erode(m, k)) > 0


def uncertain_region(logits, shape: Tuple[int, int], thresh: float = 1.0) -> np.ndarray:
    """Pixels whose low-res logit is close to the decision boundary."""
    h, w = shape
    low = (np.abs(logits) < thresh).astype(np.uint8)  # expect: np.abs
    return cv2.resize(low, (w, h), interpolation=cv2.INTER_NEAREST) > 0


def build_label_map(
    image: np.ndarray,
    boxes: Sequence[Sequence[float]],
    classes: Sequence[int],
    prompter: BoxPrompter,
    image_id: Optional[Hashable] = None,
    min_iou: float = 0.6,
    min_fill: float = 0.15,
    band: int = 2,
    use_logits: bool = True,
) -> Tuple[np.ndarray, List[Tuple[int, float, float]]]:
    h, w = image.shape[:2]
    label_map = np.zeros((h, w), dtype=np.uint8)
    ignore = np.zeros((h, w), dtype=bool)
    covered = np.zeros((h, w), dtype=bool)

    prompter.set_image(image, image_id=image_id)
    results: List[PromptResult] = prompter.prompt_boxes(boxes)

    # paint large objects first so that small ones stay on top
    order = sorted(range(len(results)), key=lambda i: results[i].area, reverse=True)
    kept: List[Tuple[int, float, float]] = []
    for i in order:
        r = results[i]
        tb = tight_box(r.mask)
        iou = box_iou(tb, r.box) if tb is not None else 0.0
        if iou < min_iou or fill_ratio(r.mask, r.box) < min_fill:
            ignore |= box_region(r.box, (h, w))
            continue
        label_map[r.mask] = int(classes[i]) + 1  # expect: ndarray[t_bool] assign
        covered |= r.mask  # expect: |= t
        if band:
            ignore |= boundary_band(r.mask, band)
        if use_logits and r.logits is not None:
            ignore |= uncertain_region(r.logits, (h, w))
        kept.append((i, iou, r.score))

    label_map[ignore] = IGNORE_INDEX
    return label_map, kept
