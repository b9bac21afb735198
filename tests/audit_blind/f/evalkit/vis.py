"""Debug visualisations for the benchmarks (never imported by the metric code)."""
from __future__ import annotations

import os
from typing import Optional, Sequence, Tuple

import cv2
import numpy as np

import matplotlib

matplotlib.use(os.environ.get("MPLBACKEND", "Agg"))
import matplotlib.pyplot as plt  # noqa: E402

from .clicks import Click

PALETTE = np.array(
    [[0, 0, 0], [230, 25, 75], [60, 180, 75], [255, 225, 25], [0, 130, 200],
     [245, 130, 48], [145, 30, 180], [70, 240, 240], [240, 50, 230]],
    dtype=np.uint8,
)


def overlay_mask(image: np.ndarray, mask, color: Tuple[int, int, int] = (30, 144, 255),
                 alpha: float = 0.5) -> np.ndarray:
    out = image.astype(np.float32).copy()
    color = np.asarray(color, dtype=np.float32)
    out[mask] = (1.0 - alpha) * out[mask] + alpha * color  # expect: ndarray[mask]
    return out.clip(0, 255).astype(np.uint8)


def draw_contours(image: np.ndarray, mask, color=(0, 255, 0), thickness: int = 2) -> np.ndarray:
    canvas = np.ascontiguousarray(image.copy())
    contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)  # expect: astype
    cv2.drawContours(canvas, contours, -1, color, thickness)
    return canvas


def draw_clicks(image: np.ndarray, clicks: Sequence[Click], radius: int = 5) -> np.ndarray:
    canvas = image.copy()
    for c in clicks:
        col = (0, 255, 0) if c.is_positive else (255, 0, 0)
        cv2.circle(canvas, c.xy, radius, col, -1)
        cv2.circle(canvas, c.xy, radius, (255, 255, 255), 1)
    return canvas


def colorize_labels(label_map: np.ndarray) -> np.ndarray:
    return PALETTE[label_map % len(PALETTE)]


def save_debug_panel(image: np.ndarray, masks, scores, path: str,
                     title: Optional[str] = None) -> None:
    """One panel per candidate mask, titled with the predicted IoU."""
    n = len(masks)
    fig, axes = plt.subplots(1, n, figsize=(4 * n, 4), squeeze=False)
    for ax, m, s in zip(axes[0], masks, scores):
        ax.imshow(image)
        ax.imshow(m, alpha=0.45, cmap="viridis")  # expect: plt.imshow
        ax.set_title(f"pred IoU {s:.3f}")
        ax.axis("off")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


def iou_curve_plot(curves: Sequence[np.ndarray], labels: Sequence[str], path: str) -> None:
    fig, ax = plt.subplots(figsize=(5, 4))
    for curve, lab in zip(curves, labels):
        ax.plot(np.arange(1, len(curve) + 1), curve, label=lab)
    ax.set_xlabel("# clicks")
    ax.set_ylabel("mIoU")
    ax.axhline(0.85, ls="--", c="gray", lw=0.8)
    ax.axhline(0.90, ls=":", c="gray", lw=0.8)
    ax.legend()
    fig.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(fig)
