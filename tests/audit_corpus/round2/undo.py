"""Click-to-refine with an undo stack: each step keeps the prompts and the logits
that seeded it."""

import cv2
import numpy as np


class Refiner:
    def __init__(self, predictor):
        self.predictor = predictor
        self.points = np.zeros((0, 2), np.float32)
        self.labels = np.zeros((0,), np.int32)
        self.history = []
        self.snapshots = []
        self.logits = None

    def add_click(self, x, y, positive=True):
        self.history.append((self.points.copy(), self.labels.copy(), self.logits))
        self.points = np.concatenate([self.points, [[x, y]]])
        self.labels = np.append(self.labels, 1 if positive else 0)
        masks, scores, logits = self.predictor.predict(
            point_coords=self.points,
            point_labels=self.labels,
            mask_input=None if self.logits is None else self.logits[None],
            multimask_output=False,
        )
        self.logits = logits[0]
        self.snapshots.append({"clicks": len(self.points), "mask": masks[0], "score": scores[0]})
        return masks[0]

    def undo(self):
        if not self.history:
            return
        points, labels, logits = self.history.pop()
        self.points = points
        self.labels = labels
        self.logits = logits
        last = self.points[-1] if len(self.points) else None
        return np.round(last).astype(int) if last is not None else None

    def clicks_so_far(self):
        entry = self.snapshots[-1]
        steps = np.arange(entry["clicks"])
        return steps, len(self.points.tolist())

    def save_last(self, path):
        entry = self.snapshots[-1]
        cv2.imwrite(path, entry["mask"] * 255)  # expect: cv2.imwrite()
