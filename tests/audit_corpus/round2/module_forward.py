"""SAM behind an nn.Module, as pipelines that compose modules write it."""

import numpy as np
import torch
from segment_anything import SamPredictor, sam_model_registry


class BoxSegmenter(torch.nn.Module):
    def __init__(self, checkpoint):
        super().__init__()
        self.sam = sam_model_registry["vit_b"](checkpoint=checkpoint)
        self.predictor = SamPredictor(self.sam)

    def forward(self, image, box):
        self.predictor.set_image(image)
        masks, scores, _ = self.predictor.predict(box=box, multimask_output=True)
        return masks, scores


class Pipeline:
    def __init__(self, checkpoint):
        self.segmenter = BoxSegmenter(checkpoint)

    def run(self, image, box):
        masks, scores = self.segmenter(image, box)
        return masks[np.argmax(scores)]  # expect: np.argmax()


def one_shot(checkpoint, image, box):
    head = BoxSegmenter(checkpoint).eval()
    with torch.no_grad():
        masks, scores = head(image, box)
    return np.where(masks[0])  # expect: np.where()
