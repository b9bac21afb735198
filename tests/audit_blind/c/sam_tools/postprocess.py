"""Mask post-processing shared by the services.

All functions take an ``HxW`` boolean (or 0/1) mask as returned by
``SamPredictor.predict`` and return plain python / numpy values, so the
results can go straight into JSON or an annotation file.
"""

from __future__ import annotations

from typing import List, Optional, Sequence, Tuple

import cv2
import numpy as np

Box = Tuple[int, int, int, int]


def mask_to_xyxy(mask: np.ndarray, pad: int = 0) -> Optional[List[int]]:
    """Tight ``[x0, y0, x1, y1]`` box (exclusive max) around ``mask``.

    Returns ``None`` for an empty mask so callers can stop propagating.
    """
    ys, xs = np.where(mask)  # expect: np.where
    if ys.size == 0:
        return None
    h, w = mask.shape[-2:]
    x0 = max(int(xs.min()) - pad, 0)
    y0 = max(int(ys.min()) - pad, 0)
    x1 = min(int(xs.max()) + 1 + pad, w)
    y1 = min(int(ys.max()) + 1 + pad, h)
    return [x0, y0, x1, y1]


def keep_largest_component(mask: np.ndarray, min_area: int = 64) -> np.ndarray:
    """Drop the speckles SAM sometimes adds around thin structures."""
    m8 = mask.astype(np.uint8)  # expect: astype
    n, cc, stats, _ = cv2.connectedComponentsWithStats(m8, connectivity=8)
    if n <= 1:
        return m8.astype(bool)
    areas = stats[1:, cv2.CC_STAT_AREA]
    best = 1 + int(np.argmax(areas))
    if areas[best - 1] < min_area:
        return np.zeros(m8.shape, dtype=bool)
    return cc == best


def fill_small_holes(mask: np.ndarray, max_hole: int = 256) -> np.ndarray:
    """Fill holes smaller than ``max_hole`` pixels (expects a numpy mask)."""
    inv = (~mask.astype(bool)).astype(np.uint8)
    n, cc, stats, _ = cv2.connectedComponentsWithStats(inv, connectivity=4)
    out = mask.astype(bool).copy()
    for k in range(1, n):
        if stats[k, cv2.CC_STAT_AREA] <= max_hole:
            out[cc == k] = True
    return out


def mask_to_polygons(
    mask: np.ndarray, epsilon: float = 1.5, min_points: int = 3
) -> List[List[float]]:
    """Outer contours of ``mask`` as flat ``[x0, y0, x1, y1, ...]`` lists."""
    m8 = np.ascontiguousarray(mask, dtype=np.uint8)  # expect: np.ascontiguousarray
    contours, _ = cv2.findContours(m8, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    polys = []
    for cnt in contours:
        if epsilon > 0:
            cnt = cv2.approxPolyDP(cnt, epsilon, True)
        if len(cnt) < min_points:
            continue
        polys.append(cnt.reshape(-1).astype(float).tolist())
    return polys


def polygons_to_yolo(
    polys: Sequence[Sequence[float]], width: int, height: int
) -> List[List[float]]:
    """Normalise pixel polygons to YOLO-seg ``x y x y ...`` in [0, 1]."""
    out = []
    for poly in polys:
        arr = np.asarray(poly, dtype=np.float64).reshape(-1, 2)
        arr[:, 0] /= float(width)
        arr[:, 1] /= float(height)
        out.append(np.clip(arr, 0.0, 1.0).reshape(-1).round(6).tolist())
    return out


def overlay_mask(
    image: np.ndarray,
    mask: np.ndarray,
    color: Tuple[int, int, int] = (30, 144, 255),
    alpha: float = 0.5,
    outline: bool = True,
) -> np.ndarray:
    """Blend ``color`` into ``image`` where ``mask`` is set (RGB uint8 in, out)."""
    out = image.astype(np.float32)
    tint = np.asarray(color, dtype=np.float32)
    out[mask] = (1.0 - alpha) * out[mask] + alpha * tint  # expect: ndarray-index
    out = out.clip(0, 255).astype(np.uint8)
    if outline:
        m8 = mask.astype(np.uint8)  # expect: astype
        edges = cv2.morphologyEx(m8, cv2.MORPH_GRADIENT, np.ones((3, 3), np.uint8))
        out[edges > 0] = color
    return out


def box_iou(a: Box, b: Box) -> float:
    ix0, iy0 = max(a[0], b[0]), max(a[1], b[1])
    ix1, iy1 = min(a[2], b[2]), min(a[3], b[3])
    inter = max(ix1 - ix0, 0) * max(iy1 - iy0, 0)
    area_a = (a[2] - a[0]) * (a[3] - a[1])
    area_b = (b[2] - b[0]) * (b[3] - b[1])
    union = area_a + area_b - inter
    return inter / union if union > 0 else 0.0
