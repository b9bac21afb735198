"""Slice-by-slice segmentation of a CT volume, written into numpy arrays."""

import numpy as np


def segment_volume(predictor, ct, boxes):
    depth, height, width = ct.shape
    volume = np.zeros((depth, height, width), dtype=bool)
    best_logits = np.empty((depth, 256, 256), dtype=np.float32)
    for z in range(depth):
        predictor.set_image(np.repeat(ct[z][..., None], 3, axis=2))
        masks, scores, logits = predictor.predict(box=boxes[z], multimask_output=False)
        volume[z] = masks[0]  # expect: ndarray[i] = mask
        best_logits[z, ...] = logits[0]  # expect: ndarray[i] = mask
    return volume, best_logits


class Labeller:
    def __init__(self, predictor, shape):
        self.predictor = predictor
        self.stacks = {"tumour": np.zeros(shape, np.uint8), "organ": np.zeros(shape, np.uint8)}

    def label_slice(self, name, z, box):
        masks, _, _ = self.predictor.predict(box=box, multimask_output=False)
        self.stacks[name][z][masks[0]] = 1  # expect: ndarray[mask] = v
        return self.stacks[name][z].sum()


def paste_crop(predictor, frame, crop_box):
    x0, y0, x1, y1 = crop_box
    out = {"labels": np.zeros(frame.shape[:2], np.uint8)}
    predictor.set_image(frame[y0:y1, x0:x1])
    masks, _, _ = predictor.predict(box=np.array([0, 0, x1 - x0, y1 - y0]), multimask_output=False)
    out["labels"][y0:y1, x0:x1] = masks[0]  # expect: ndarray[i] = mask
    canvas = np.zeros_like(frame)
    canvas[...] = masks[0][..., None]  # expect: ndarray[i] = mask
    return out, canvas
