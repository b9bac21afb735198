"""Segment GeoTIFF tiles with SAM: automatic masks or box prompts, written as
GeoTIFF label rasters or GeoJSON polygons."""

import json

import numpy as np
import rasterio
from rasterio import features
from segment_anything import SamAutomaticMaskGenerator, SamPredictor, sam_model_registry
from shapely.geometry import mapping, shape


class GeoSam:
    def __init__(self, checkpoint, model_type="vit_h", device="cuda", automatic=True):
        self.sam = sam_model_registry[model_type](checkpoint=checkpoint).to(device)
        self.predictor = SamPredictor(self.sam)
        self.generator = (SamAutomaticMaskGenerator(self.sam, points_per_side=32, pred_iou_thresh=0.86)
                          if automatic else None)
        self.source = None
        self.image = None
        self.masks = None
        self.scores = None
        self.profile = None
        self.transform = None

    def read(self, source):
        with rasterio.open(source) as src:
            self.profile = src.profile.copy()
            self.transform = src.transform
            arr = src.read([1, 2, 3])
        self.image = np.transpose(arr, (1, 2, 0)).astype(np.uint8)
        self.source = source

    def generate(self, source, min_area=50):
        self.read(source)
        anns = self.generator.generate(self.image)
        self.masks = [a for a in anns if a["area"] >= min_area]
        self.masks.sort(key=lambda a: a["area"], reverse=True)
        self.scores = [a["predicted_iou"] for a in self.masks]
        return len(self.masks)

    def predict(self, boxes, source=None):
        if source is not None:
            self.read(source)
        self.predictor.set_image(self.image)
        out, scores = [], []
        for box in boxes:
            masks, s, _ = self.predictor.predict(box=np.asarray(box, dtype=np.float32), multimask_output=False)
            out.append(masks[0])
            scores.append(s[0])
        self.masks = out
        self.scores = scores
        return out

    def open_saved(self, path):
        """Reuse a label raster written by an earlier run instead of predicting again."""
        self.masks = path

    def saved_counts(self):
        with rasterio.open(self.masks) as src:
            lab = src.read(1)
        return np.bincount(lab.ravel())[1:]

    def save_auto_masks(self, output, unique=True):
        """Label raster of the automatic masks (call after generate)."""
        h, w = self.image.shape[:2]
        label = np.zeros((h, w), dtype=np.uint16)
        for i, ann in enumerate(self.masks, start=1):
            label[ann["segmentation"]] = i if unique else 1
        stability = np.array([ann["stability_score"] for ann in self.masks])
        self._write(output, label)
        return float(stability.mean()) if len(stability) else 0.0

    def save_prompt_masks(self, output):
        """Label raster of the box-prompted masks (call after predict)."""
        h, w = self.image.shape[:2]
        label = np.zeros((h, w), dtype=np.uint16)
        for i, m in enumerate(self.masks, start=1):
            label[m > 0] = i  # expect: ndarray[mask] = v
        self._write(output, label)

    def _write(self, output, array):
        profile = dict(self.profile, count=1, dtype=array.dtype.name, compress="lzw")
        with rasterio.open(output, "w", **profile) as dst:
            dst.write(array, 1)

    def to_geojson(self, output, simplify=1.0):
        """Polygons of the box-prompted masks with their scores."""
        feats = []
        for i, (m, s) in enumerate(zip(self.masks, self.scores)):
            for geom, val in features.shapes(m.astype(np.uint8), transform=self.transform):  # expect: .astype()
                if val == 0:
                    continue
                poly = shape(geom).simplify(simplify * abs(self.transform.a))
                feats.append({"type": "Feature", "geometry": mapping(poly),
                              "properties": {"id": i, "score": s}})
        with open(output, "w") as f:
            json.dump({"type": "FeatureCollection", "features": feats}, f)  # expect: json.dump()

    def show(self, ax=None):
        import matplotlib.pyplot as plt

        ax = ax or plt.gca()
        ax.imshow(self.image)
        rng = np.random.default_rng(1)
        for ann in self.masks:
            seg = ann["segmentation"] if isinstance(ann, dict) else ann.cpu().numpy()
            color = np.concatenate([rng.random(3), [0.45]])
            ax.imshow(seg[..., None] * color.reshape(1, 1, -1))
        ax.axis("off")

    def mosaic(self, tiles, boxes_per_tile, out_shape):
        """Segment (row, col, path) tiles with their boxes and stitch the masks."""
        canvas = np.zeros(out_shape, dtype=bool)
        for (r, c, path), boxes in zip(tiles, boxes_per_tile):
            ms = self.predict(boxes, source=path)
            th, tw = self.image.shape[:2]
            for m in ms:
                canvas[r:r + th, c:c + tw] |= m  # expect: ndarray |= mask
        return canvas
