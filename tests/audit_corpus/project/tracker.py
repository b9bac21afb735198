"""A video tracker: the previous mask prompts the next frame."""

import cv2
import matplotlib.pyplot as plt
import numpy as np
import torch


def centroid(mask):
    ys, xs = np.nonzero(mask)  # expect: np.nonzero()
    return np.array([[xs.mean(), ys.mean()]])


class Tracker:
    def __init__(self, predictor):
        self.predictor = predictor
        self.prev_logits = None
        self.prev_mask = None
        self.trail = []

    def step(self, frame, point=None):
        self.predictor.set_image(frame)
        if point is None:
            point = centroid(self.prev_mask)
        kwargs = {"point_coords": point, "point_labels": np.array([1])}
        if self.prev_logits is not None:
            kwargs["mask_input"] = self.prev_logits[None]
        masks, scores, logits = self.predictor.predict(multimask_output=False, **kwargs)
        self.prev_logits = logits[0]
        self.prev_mask = masks[0]
        self.trail.append(centroid(masks[0]))
        return masks[0]

    def draw(self, frame):
        vis = frame.copy()
        color = np.array([0, 255, 0], dtype=np.uint8)
        vis[self.prev_mask] = vis[self.prev_mask] // 2 + color // 2  # expect: ndarray[mask], ndarray[mask] = v
        edges = cv2.Canny(self.prev_mask.astype(np.uint8) * 255, 0, 1)  # expect: .astype()
        return vis, edges

    def plot(self, ax):
        ax.imshow(self.prev_logits)  # expect: .imshow()
        plt.contour(self.prev_mask)  # expect: plt.contour()

    def to_device_box(self):
        # tensor code: no finding
        ys, xs = torch.where(self.prev_mask)
        return torch.stack([xs.min(), ys.min(), xs.max(), ys.max()])


def run(video, predictor, first_point):
    tracker = Tracker(predictor)
    areas = []
    for i, frame in enumerate(video):
        mask = tracker.step(frame, first_point if i == 0 else None)
        areas.append(mask.sum())
    return np.asarray(areas)  # expect: np.asarray()
