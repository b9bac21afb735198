"""Shaped like a geospatial SAM wrapper (rewritten, not copied)."""

import numpy as np
import rasterio
from samgeo.common import array_to_image


class SamGeo:
    def __init__(self, predictor):
        self.predictor = predictor
        self.masks = None
        self.scores = None
        self.logits = None
        self.prediction = None
        self.source = None

    def predict(self, point_coords=None, point_labels=None, boxes=None, multimask_output=True,
                return_logits=False, output=None, index=None, mask_multiplier=255, dtype=np.float32):
        if isinstance(point_coords, list):
            point_coords = np.array(point_coords)
        masks, scores, logits = self.predictor.predict(point_coords, point_labels, boxes, None,
                                                       multimask_output, return_logits)
        self.masks = masks
        self.scores = scores
        self.logits = logits
        if output is not None:
            self.save_prediction(output, index, mask_multiplier, dtype)
        return masks, scores, logits

    def save_prediction(self, output, index=None, mask_multiplier=255, dtype=np.float32):
        if self.scores is None:
            raise ValueError("No predictions found. Please run predict() first.")
        if index is None:
            index = self.scores.argmax(axis=0)
        array = self.masks[index] * mask_multiplier
        self.prediction = array
        array_to_image(array, output, self.source, dtype=dtype)  # expect: array_to_image()

    def show_masks(self, figsize=(12, 10), cmap="binary_r"):
        import matplotlib.pyplot as plt

        if self.prediction is None:
            self.save_prediction("tmp.tif")
        plt.figure(figsize=figsize)
        plt.imshow(self.prediction, cmap=cmap)  # expect: plt.imshow()
        plt.axis("off")
        plt.show()

    def write_raster(self, path, profile):
        with rasterio.open(path, "w", **profile) as dst:
            dst.write(self.masks.astype(np.uint8))  # expect: .astype()
