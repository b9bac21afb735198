"""Geospatial: masks to vector shapes."""

import numpy as np
import rasterio.features
from shapely.geometry import shape


def vectorize(sam, tile, points, transform):
    sam.set_image(tile)
    masks, scores, _ = sam.predict(point_coords=points, point_labels=np.ones(len(points)))
    best = masks[scores.argmax()]
    shapes = rasterio.features.shapes(best.astype(np.uint8), mask=best, transform=transform)  # expect: rasterio.features.shapes(), .astype()
    return [shape(geom) for geom, value in shapes if value == 1]


def tile_scores(sam2_predictor, tiles, boxes):
    out = []
    for tile, box in zip(tiles, boxes):
        sam2_predictor.set_image(tile)
        _, scores, _ = sam2_predictor.predict(box=box, multimask_output=False)
        out.append(scores[0] if scores.numel() else 0.0)
    return np.mean(out)  # expect: np.mean()
