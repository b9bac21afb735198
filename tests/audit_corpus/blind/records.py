"""Results kept in a dataclass and written later."""

from dataclasses import dataclass

import cv2
import numpy as np


@dataclass
class Segmentation:
    mask: np.ndarray
    score: float
    label: str


def run(predictor, box, label):
    masks, scores, _ = predictor.predict(box=box, multimask_output=False)
    return Segmentation(mask=masks[0], score=scores[0], label=label)


def export(predictor, boxes, labels):
    segs = [run(predictor, b, l) for b, l in zip(boxes, labels)]
    for i, seg in enumerate(segs):
        cv2.imwrite(f"{seg.label}_{i}.png", seg.mask.astype(np.uint8) * 255)  # expect: .astype()
        print(f"{seg.label}: {seg.score:.2f}")
    return sorted(segs, key=lambda s: -s.score)
