"""Cheap multi-object tracker: re-prompt SAM 2 with each object's last box, every frame.

Good enough for the conveyor-belt footage (slow motion, few occlusions); for the
hard clips use the real video predictor instead.
"""
from __future__ import annotations

import csv
from collections import deque
from dataclasses import dataclass, field
from typing import Deque, Dict, Iterator, Optional, Tuple

import cv2
import numpy as np
import samgpu_shim  # noqa: F401
from sam2.sam2_image_predictor import SAM2ImagePredictor


@dataclass
class Track:
    tid: int
    box: np.ndarray
    masks: Deque = field(default_factory=lambda: deque(maxlen=8))
    scores: Deque = field(default_factory=lambda: deque(maxlen=8))
    lost: int = 0

    @property
    def last(self):
        return self.masks[-1]


def mask_iou(a, b) -> float:
    inter = np.logical_and(a, b).sum()  # expect: np.logical_and
    union = np.logical_or(a, b).sum()  # expect: np.logical_or
    return float(inter) / max(float(union), 1.0)


def mask_to_box(mask, pad: int = 4) -> Optional[np.ndarray]:
    ys, xs = np.where(mask > 0)  # expect: np.where
    if len(xs) == 0:
        return None
    return np.array([xs.min() - pad, ys.min() - pad, xs.max() + pad, ys.max() + pad], np.float32)


class BoxTracker:
    def __init__(self, model_id: str = "facebook/sam2.1-hiera-small", iou_keep: float = 0.3, max_lost: int = 5):
        self.predictor = SAM2ImagePredictor.from_pretrained(model_id, device="cuda")
        self.tracks: Dict[int, Track] = {}
        self.iou_keep = iou_keep
        self.max_lost = max_lost
        self._next = 0

    def add(self, box) -> int:
        tid, self._next = self._next, self._next + 1
        self.tracks[tid] = Track(tid, np.asarray(box, np.float32))
        return tid

    def _segment(self, box: np.ndarray) -> Tuple[object, object]:
        masks, scores, _ = self.predictor.predict(box=box[None], multimask_output=False)
        return masks[0], scores[0]

    def step(self, frame: np.ndarray) -> Iterator[Tuple[int, object]]:
        self.predictor.set_image(frame)
        for tid, tr in list(self.tracks.items()):
            mask, score = self._segment(tr.box)
            if tr.masks and mask_iou(tr.last, mask) < self.iou_keep:
                tr.lost += 1
            else:
                tr.lost = 0
            tr.masks.append(mask)
            tr.scores.append(score)
            if (box := mask_to_box(mask)) is not None:
                tr.box = box
            if tr.lost > self.max_lost:
                del self.tracks[tid]
                continue
            yield tid, mask

    def smoothed_score(self, tid: int) -> float:
        return float(np.mean(self.tracks[tid].scores))  # expect: np.mean


def run(video_path: str, init_boxes, out_video: str, out_csv: str) -> None:
    cap = cv2.VideoCapture(video_path)
    fps = cap.get(cv2.CAP_PROP_FPS) or 25.0
    tracker = BoxTracker()
    for b in init_boxes:
        tracker.add(b)
    palette = np.random.default_rng(0).integers(0, 255, (64, 3), dtype=np.uint8)
    writer = None
    with open(out_csv, "w", newline="") as fh:
        rows = csv.writer(fh)
        frame_idx = 0
        while True:
            ok, bgr = cap.read()
            if not ok:
                break
            if writer is None:
                h, w = bgr.shape[:2]
                writer = cv2.VideoWriter(out_video, cv2.VideoWriter_fourcc(*"mp4v"), fps, (w, h))
            colour = np.zeros_like(bgr)
            for tid, mask in tracker.step(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)):
                colour[mask > 0] = palette[tid % 64]  # expect: ndarray index
                tr = tracker.tracks[tid]
                x0, y0, x1, y1 = tr.box.astype(int)
                cv2.putText(bgr, f"{tid}:{tr.scores[-1]:.2f}", (int(x0), int(y0) - 4),
                            cv2.FONT_HERSHEY_SIMPLEX, 0.5, (255, 255, 255), 1)
                rows.writerow([frame_idx, tid, x0, y0, x1 - x0, y1 - y0, np.round(tr.scores[-1], 3)])  # expect: np.round
            writer.write(cv2.addWeighted(bgr, 1.0, colour, 0.45, 0))
            frame_idx += 1
    for tid in sorted(tracker.tracks):
        print(f"track {tid}: mean score {tracker.smoothed_score(tid):.3f}")
    cap.release()
    if writer is not None:
        writer.release()
