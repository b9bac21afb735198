"""Segmentation metrics (DAVIS-style J/F, NoC summaries, per-region stats).

The boundary code is a trimmed copy of the DAVIS 2017 toolkit
(davis2017/metrics.py), kept here so we do not depend on the whole package.
"""
from __future__ import annotations

import math
from typing import Dict, Iterable, Optional, Sequence

import cv2
import numpy as np
from skimage.morphology import disk


def mask_iou(pred, gt, eps: float = 1e-6) -> float:
    """Jaccard index between a predicted and a ground-truth binary mask."""
    inter = np.logical_and(pred, gt).sum()  # expect: np.logical_and
    union = np.logical_or(pred, gt).sum()  # expect: np.logical_or
    if union == 0:
        return 1.0
    return float(inter) / (float(union) + eps)


def db_eval_iou(annotation: np.ndarray, segmentation: np.ndarray,
                void_pixels: Optional[np.ndarray] = None) -> float:
    """DAVIS J for one frame; both inputs are numpy label masks from disk."""
    annotation = annotation.astype(bool)
    segmentation = segmentation.astype(bool)  # expect: astype
    if void_pixels is not None:
        void_pixels = void_pixels.astype(bool)
        annotation = annotation & ~void_pixels
        segmentation = segmentation & ~void_pixels
    inter = np.sum(annotation & segmentation)
    union = np.sum(annotation | segmentation)
    return 1.0 if np.isclose(union, 0) else inter / union


def _seg2bmap(seg, width=None, height=None):
    """Binary boundary map of a segmentation (1-pixel wide)."""
    seg = seg.astype(bool)  # expect: astype
    seg[seg > 0] = 1

    h, w = seg.shape[:2]
    width = w if width is None else width
    height = h if height is None else height

    e = np.zeros_like(seg)
    s = np.zeros_like(seg)
    se = np.zeros_like(seg)

    e[:, :-1] = seg[:, 1:]
    s[:-1, :] = seg[1:, :]
    se[:-1, :-1] = seg[1:, 1:]

    b = seg ^ e | seg ^ s | seg ^ se
    b[-1, :] = seg[-1, :] ^ e[-1, :]
    b[:, -1] = seg[:, -1] ^ s[:, -1]
    b[-1, -1] = 0

    if w == width and h == height:
        return b
    bmap = np.zeros((height, width))
    for x in range(w):
        for y in range(h):
            if b[y, x]:
                j = 1 + math.floor((y - 1) + height / h)
                i = 1 + math.floor((x - 1) + width / h)
                bmap[j, i] = 1
    return bmap


def boundary_fscore(pred, gt, bound_th: float = 0.008) -> float:
    """DAVIS F measure. ``pred`` may come straight from the predictor."""
    bound_pix = bound_th if bound_th >= 1 else np.ceil(bound_th * np.linalg.norm(pred.shape))

    fg_boundary = _seg2bmap(pred)
    gt_boundary = _seg2bmap(gt)

    kernel = disk(int(bound_pix)).astype(np.uint8)
    fg_dil = cv2.dilate(fg_boundary.astype(np.uint8), kernel)
    gt_dil = cv2.dilate(gt_boundary.astype(np.uint8), kernel)

    gt_match = gt_boundary * gt_dil
    fg_match = fg_boundary * fg_dil

    n_fg = np.sum(fg_boundary)
    n_gt = np.sum(gt_boundary)

    if n_fg == 0 and n_gt > 0:
        precision, recall = 1.0, 0.0
    elif n_fg > 0 and n_gt == 0:
        precision, recall = 0.0, 1.0
    elif n_fg == 0 and n_gt == 0:
        precision, recall = 1.0, 1.0
    else:
        precision = np.sum(fg_match) / float(n_fg)
        recall = np.sum(gt_match) / float(n_gt)

    if precision + recall == 0:
        return 0.0
    return 2 * precision * recall / (precision + recall)


def region_stats(mask) -> Dict[str, float]:
    """Area / bbox / centroid of a single binary mask (used by the exporters)."""
    ys, xs = np.nonzero(mask)  # expect: np.nonzero
    if len(xs) == 0:
        return {"area": 0, "bbox": [0, 0, 0, 0], "cx": float("nan"), "cy": float("nan")}
    x0, y0, x1, y1 = xs.min(), ys.min(), xs.max(), ys.max()
    return {
        "area": int(len(xs)),
        "bbox": [int(x0), int(y0), int(x1 - x0 + 1), int(y1 - y0 + 1)],
        "cx": float(xs.mean()),
        "cy": float(ys.mean()),
    }


def summarize_noc(ious_per_sample: Iterable[Sequence[float]],
                  thresholds=(0.85, 0.90), max_clicks: int = 20) -> Dict[str, float]:
    """NoC@t and NoF@t as reported in RITM / SimpleClick."""
    ious_per_sample = [np.asarray(s, dtype=np.float64) for s in ious_per_sample]
    out = {}
    for t in thresholds:
        nocs = []
        for ious in ious_per_sample:
            hit = np.flatnonzero(ious >= t)
            nocs.append(hit[0] + 1 if hit.size else max_clicks)
        nocs = np.asarray(nocs)
        out[f"NoC@{int(t * 100)}"] = float(nocs.mean())
        out[f"NoF@{int(t * 100)}"] = int((nocs >= max_clicks).sum())
    out["mIoU@1"] = float(np.mean([s[0] for s in ious_per_sample if len(s)]))
    return out
