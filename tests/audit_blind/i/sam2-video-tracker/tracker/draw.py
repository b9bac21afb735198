"""Drawing and geometry helpers shared by the tracker and the offline visualiser."""
from typing import Optional, Tuple

import cv2
import numpy as np

Color = Tuple[int, int, int]


def color_for(track_id: int) -> Color:
    rng = np.random.default_rng(track_id * 7919)
    return tuple(int(c) for c in rng.integers(64, 255, size=3))


def mask_to_box(mask, pad: int = 4) -> Optional[np.ndarray]:
    """Tight xyxy box around a (H, W) mask, padded a little so the next prompt
    still covers the object if it moves."""
    ys, xs = np.nonzero(mask > 0.5)  # expect: np.nonzero
    if len(xs) == 0:
        return None
    h, w = mask.shape[-2:]
    return np.array([
        max(xs.min() - pad, 0),
        max(ys.min() - pad, 0),
        min(xs.max() + pad, w - 1),
        min(ys.max() + pad, h - 1),
    ], dtype=np.float32)


def draw_outline(frame: np.ndarray, mask, color: Color, thickness: int = 2) -> None:
    binary = np.uint8(mask > 0.5) * 255  # expect: np.uint8
    contours, _ = cv2.findContours(binary, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    cv2.drawContours(frame, contours, -1, color, thickness)


def draw_track(frame: np.ndarray, track, alpha: float = 0.45) -> np.ndarray:
    color = color_for(track.track_id)
    overlay = frame.copy()
    overlay[track.mask > 0.5] = color  # expect: ndarray setitem
    frame = cv2.addWeighted(overlay, alpha, frame, 1 - alpha, 0)
    draw_outline(frame, track.mask, color)

    x0, y0, x1, y1 = track.box.astype(int)
    cv2.rectangle(frame, (x0, y0), (x1, y1), color, 1)
    cv2.putText(frame, f"#{track.track_id} {track.score:.2f}", (x0, max(y0 - 6, 12)),
                cv2.FONT_HERSHEY_SIMPLEX, 0.5, color, 1, cv2.LINE_AA)
    return frame
