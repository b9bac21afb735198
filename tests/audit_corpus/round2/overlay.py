"""Overlays for a demo: the image comes from the UI (a numpy array) or from disk (PIL)."""

import numpy as np
from PIL import Image


def blend(image, mask, color=(30, 144, 255), alpha=0.6):
    height, width = image.shape[:2]
    tint = np.array(color, dtype=np.float32)
    weight = alpha * mask[..., None]
    out = image * (1 - weight) + tint * weight  # expect: ndarray * mask
    return out.astype(np.uint8), (height, width)


def cutout(image_path, predictor, box):
    picture = Image.open(image_path).convert("RGB")
    predictor.set_image(np.array(picture))
    masks, scores, _ = predictor.predict(box=box, multimask_output=False)
    background = 1 - masks[0]  # expect: 1 - mask
    pixels = np.asarray(picture)
    kept = pixels * masks[0][..., None]  # expect: ndarray * mask
    weights = np.float64(1.0) / scores  # runs: a float32 tensor, followed on
    return kept, background, weights


def segment_and_blend(predictor, frame, box):
    predictor.set_image(frame)
    masks, _, _ = predictor.predict(box=box, multimask_output=False)
    return blend(frame, masks[0])


def soft_edges(predictor, frame, box):
    predictor.set_image(frame)
    masks, scores, logits = predictor.predict(box=box, multimask_output=False)
    edge = logits[0].sigmoid() * 255
    inverse = ~masks[0]
    return edge, inverse, masks[0] * 255
