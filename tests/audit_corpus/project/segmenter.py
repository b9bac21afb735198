"""An in-house wrapper around SAM, as annotation backends write them."""

import numpy as np
from segment_anything import SamPredictor, sam_model_registry


class Segmenter:
    def __init__(self, checkpoint, device="cuda"):
        sam = sam_model_registry["vit_h"](checkpoint=checkpoint).to(device)
        self.model = SamPredictor(sam)
        self.last_masks = None
        self.history = []

    def set_frame(self, frame):
        self.model.set_image(frame)

    def segment_box(self, box):
        masks, scores, logits = self.model.predict(box=np.asarray(box), multimask_output=True)
        self.last_masks = masks
        self.history.append(scores)
        best = scores.argmax()
        return masks[best], scores[best]

    def refine(self, point):
        # reads the attribute another method set
        prior = self.last_masks
        weights = np.mean(prior, axis=0)  # expect: np.mean()
        return weights

    def score_trend(self):
        return np.array(self.history)  # expect: np.array()


def mask_to_polygon(mask):
    import cv2

    contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)  # expect: .astype()
    return [c.reshape(-1, 2).tolist() for c in contours]


def bbox_from_mask(mask):
    ys, xs = np.where(mask)  # expect: np.where()
    return [int(xs.min()), int(ys.min()), int(xs.max()), int(ys.max())]
