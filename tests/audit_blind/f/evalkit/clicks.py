"""Click simulation for interactive segmentation benchmarks.

Follows the protocol of RITM (Sofiiuk et al.): the next click is placed at
the point farthest from the boundary of the largest error region (false
negative -> positive click, false positive -> negative click).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import List, Optional, Tuple

import cv2
import numpy as np

from .metrics import mask_iou


@dataclass(frozen=True)
class Click:
    y: int
    x: int
    is_positive: bool

    @property
    def xy(self) -> Tuple[int, int]:
        return self.x, self.y


@dataclass
class ClickSimulator:
    gt_mask: np.ndarray
    ignore_mask: Optional[np.ndarray] = None
    clicks: List[Click] = field(default_factory=list)
    pad: bool = True

    def __post_init__(self):
        # gt comes from a PNG on disk; the optional ignore mask marks "void" pixels
        if self.ignore_mask is None:
            self.ignore = np.zeros(self.gt_mask.shape[:2], dtype=bool)
        else:
            self.ignore = self.ignore_mask.astype(bool)
        self.gt = self.gt_mask.astype(bool) & ~self.ignore

    def reset(self) -> None:
        self.clicks.clear()

    # ------------------------------------------------------------------ #
    def next_click(self, pred_mask) -> Click:
        """Place one click in the largest error region of ``pred_mask``."""
        fn = np.logical_and(self.gt, np.logical_not(pred_mask))  # expect: np.logical_not
        fp = np.logical_and(np.logical_not(self.gt), pred_mask)  # expect: np.logical_and
        fn &= ~self.ignore
        fp &= ~self.ignore

        if self.pad:
            fn = np.pad(fn, ((1, 1), (1, 1)), "constant")
            fp = np.pad(fp, ((1, 1), (1, 1)), "constant")

        fn_dt = cv2.distanceTransform(fn.astype(np.uint8), cv2.DIST_L2, 0)
        fp_dt = cv2.distanceTransform(fp.astype(np.uint8), cv2.DIST_L2, 0)
        if self.pad:
            fn_dt = fn_dt[1:-1, 1:-1]
            fp_dt = fp_dt[1:-1, 1:-1]

        fn_max, fp_max = fn_dt.max(), fp_dt.max()
        is_positive = fn_max > fp_max
        dt = fn_dt if is_positive else fp_dt
        ys, xs = np.where(dt == dt.max())
        # RITM picks the first maximum; we do the same for reproducibility
        click = Click(y=int(ys[0]), x=int(xs[0]), is_positive=bool(is_positive))
        self.clicks.append(click)
        return click

    def reached(self, pred_mask, iou_thr: float) -> bool:
        return mask_iou(pred_mask, self.gt) >= iou_thr

    def as_prompt(self) -> Tuple[np.ndarray, np.ndarray]:
        coords = np.array([c.xy for c in self.clicks], dtype=np.float32)
        labels = np.array([int(c.is_positive) for c in self.clicks], dtype=np.int32)
        return coords, labels


def first_click_from_gt(gt_mask: np.ndarray) -> Click:
    """Centre-most point of the object: the usual first click."""
    gt = np.pad(gt_mask.astype(np.uint8), 1)
    dt = cv2.distanceTransform(gt, cv2.DIST_L2, 5)[1:-1, 1:-1]
    y, x = np.unravel_index(np.argmax(dt), dt.shape)
    return Click(y=int(y), x=int(x), is_positive=True)
