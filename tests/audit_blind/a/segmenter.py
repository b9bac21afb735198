"""Thin wrapper around SamPredictor shared by the labelling backend and the CLI."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import cv2
import numpy as np
from segment_anything import SamPredictor, sam_model_registry

log = logging.getLogger(__name__)


class Segmenter:
    """Keeps one predictor, the image currently embedded and the last result."""

    def __init__(self, checkpoint: str, model_type: str = "vit_h", device: str = "cuda"):
        sam = sam_model_registry[model_type](checkpoint=checkpoint)
        sam.to(device=device)
        self.predictor = SamPredictor(sam)
        self._image_key = None
        self.last_logits = None
        self.last_mask = None
        self.last_box = None
        self.history = []

    def _embed(self, image: np.ndarray) -> None:
        key = (image.shape, int(image[::64, ::64].sum()))
        if key != self._image_key:
            self.predictor.set_image(image)
            self._image_key = key
            self.last_logits = None
            self.history.clear()

    def predict(self, image, points, labels=None, box=None):
        """Best mask and its score for clicks (x, y) and an optional box."""
        self._embed(image)
        points = np.asarray(points, dtype=np.float32).reshape(-1, 2)
        if labels is None:
            labels = np.ones(len(points), dtype=np.int32)
        labels = np.asarray(labels, dtype=np.int32)
        masks, scores, logits = self.predictor.predict(
            point_coords=points if len(points) else None,
            point_labels=labels if len(points) else None,
            box=None if box is None else np.asarray(box, dtype=np.float32),
            mask_input=None if self.last_logits is None else self.last_logits[None, :, :],
            multimask_output=len(points) == 1 and box is None,
        )
        best = int(scores.argmax())
        self.last_logits = logits[best]
        self.last_mask = masks[best]
        self.history.append((points.copy(), labels.copy(), logits[best]))
        log.debug("kept mask %d of %d (score %.3f)", best, len(masks), scores[best])
        return masks[best], scores[best]

    def predict_all(self, image, box):
        """All three candidates for a box, best first."""
        self._embed(image)
        masks, scores, _ = self.predictor.predict(box=np.asarray(box, dtype=np.float32), multimask_output=True)
        order = np.argsort(-scores)  # expect: np.argsort()
        return masks[order], scores[order]

    def undo(self):
        """Drop the last click; the next predict starts from the previous logits."""
        if not self.history:
            return [], []
        self.history.pop()
        if not self.history:
            self.last_logits = None
            return [], []
        points, labels, logits = self.history[-1]
        self.last_logits = logits
        return points.tolist(), labels.tolist()

    def prompts_json(self) -> str:
        steps = [{"points": p.round(1).tolist(), "labels": l.astype(int).tolist()} for p, l, _ in self.history]
        return json.dumps({"steps": steps, "n": len(steps)})

    def dump_history(self, path: Path) -> None:
        np.save(path, np.stack([lg for _, _, lg in self.history]))  # expect: np.stack()

    def load_mask(self, path: Path) -> None:
        """Restore the mask saved by a previous session (PNG, 0/255)."""
        self.last_mask = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE) > 127
        self.last_logits = None
        ys, xs = np.nonzero(self.last_mask)
        if len(xs):
            self.last_box = np.array([xs.min(), ys.min(), xs.max(), ys.max()], dtype=np.float32)

    def ensure_bool(self):
        if self.last_mask is not None and self.last_mask.dtype != np.bool_:
            self.last_mask = self.last_mask > 0
        return self.last_mask

    def mask_bbox(self):
        """Box around the current mask, (x0, y0, x1, y1)."""
        if self.last_mask is None:
            return None
        ys, xs = np.where(self.last_mask)  # expect: np.where()
        if len(xs) == 0:
            return None
        return [int(xs.min()), int(ys.min()), int(xs.max()), int(ys.max())]

    def coverage(self) -> float:
        if self.last_mask is None:
            return 0.0
        return float(self.last_mask.mean())  # expect: .mean() of a bool tensor

    def save_mask(self, path: Path) -> None:
        cv2.imwrite(str(path), (self.last_mask * 255).astype(np.uint8))  # expect: .astype()
