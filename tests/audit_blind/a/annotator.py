"""Click-to-segment annotation session with undo/redo, driven by the Qt canvas."""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import List, Optional

import cv2
import numpy as np
from PIL import Image


@dataclass
class Step:
    points: np.ndarray
    labels: np.ndarray
    logits: Optional[object] = None
    score: float = 0.0


@dataclass
class SessionState:
    history: List[Step] = field(default_factory=list)
    redo: List[Step] = field(default_factory=list)


class AnnotationSession:
    def __init__(self, sam_predictor, image: np.ndarray, n_classes: int = 20):
        self.sam_predictor = sam_predictor
        self.image = image
        self.sam_predictor.set_image(image)
        self.state = SessionState()
        self.mask = None
        self.label_map = np.zeros(image.shape[:2], dtype=np.uint8)
        self.n_classes = n_classes

    # -- prompts -----------------------------------------------------------
    def _points(self):
        if not self.state.history:
            return np.zeros((0, 2), np.float32), np.zeros((0,), np.int32)
        last = self.state.history[-1]
        return last.points, last.labels

    def click(self, x: int, y: int, positive: bool = True):
        pts, lbl = self._points()
        pts = np.concatenate([pts, np.array([[x, y]], np.float32)])
        lbl = np.concatenate([lbl, np.array([1 if positive else 0], np.int32)])
        prev = self.state.history[-1].logits if self.state.history else None
        masks, scores, logits = self.sam_predictor.predict(
            point_coords=pts,
            point_labels=lbl,
            mask_input=None if prev is None else prev[None],
            multimask_output=prev is None,
        )
        i = int(scores.argmax())
        self.state.history.append(Step(points=pts.copy(), labels=lbl.copy(), logits=logits[i], score=float(scores[i])))
        self.state.redo.clear()
        self.mask = masks[i]
        return self.mask

    def _replay(self, step: Step):
        masks, _, _ = self.sam_predictor.predict(
            point_coords=step.points, point_labels=step.labels,
            mask_input=step.logits[None], multimask_output=False,
        )
        self.mask = masks[0]
        return self.mask

    def undo(self):
        if not self.state.history:
            return None
        self.state.redo.append(self.state.history.pop())
        if not self.state.history:
            self.mask = None
            return None
        return self._replay(self.state.history[-1])

    def redo(self):
        if not self.state.redo:
            return None
        step = self.state.redo.pop()
        self.state.history.append(step)
        return self._replay(step)

    def prompt_overlay(self, canvas: np.ndarray) -> np.ndarray:
        """Draws the clicks of the current step (green positive, red negative)."""
        pts, lbl = self._points()
        for (x, y), l in zip(pts.astype(int), lbl):
            cv2.circle(canvas, (int(x), int(y)), 5, (0, 255, 0) if l == 1 else (0, 0, 255), -1)
        return canvas

    def export_history(self) -> dict:
        return {
            "points": [s.points.tolist() for s in self.state.history],
            "labels": [s.labels.tolist() for s in self.state.history],
            "scores": [s.score for s in self.state.history],
            "n_negative": int(sum(np.sum(s.labels == 0) for s in self.state.history)),
        }

    def save_checkpoint(self, path: str) -> None:
        last = self.state.history[-1]
        np.savez_compressed(path, points=last.points, labels=last.labels, logits=last.logits)  # expect: np.savez_compressed()

    def snapshot(self) -> SessionState:
        return copy.deepcopy(self.state)

    # -- masks -------------------------------------------------------------
    def load_mask(self, path: str) -> None:
        """Start from a mask drawn in another tool."""
        self.mask = np.array(Image.open(path).convert("L")) > 0
        self.mask = cv2.morphologyEx(self.mask.astype(np.uint8), cv2.MORPH_CLOSE, np.ones((5, 5), np.uint8)) > 0
        self.state = SessionState()

    def invert(self):
        """Select everything except the current mask."""
        if self.mask is not None:
            self.mask = 1 - self.mask  # expect: 1 - mask

    def commit(self, class_id: int) -> None:
        if self.mask is None:
            return
        self.label_map[self.mask] = class_id  # expect: ndarray[mask] = v
        self.mask = None
        self.state = SessionState()

    def mask_rgba(self, color=(30, 144, 255)) -> Image.Image:
        h, w = self.image.shape[:2]
        rgba = np.zeros((h, w, 4), dtype=np.uint8)
        rgba[..., :3] = color
        rgba[..., 3] = self.mask * 160  # expect: ndarray[i] = mask
        return Image.fromarray(rgba, "RGBA")

    def contour(self):
        m = self.mask.to("cpu").numpy() if hasattr(self.mask, "to") else self.mask
        cnts, _ = cv2.findContours(m.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
        return max(cnts, key=cv2.contourArea) if cnts else None
