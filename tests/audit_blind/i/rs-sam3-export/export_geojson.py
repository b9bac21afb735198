"""Segment building footprints in a GeoTIFF with SAM 3 (box prompts from a
detector's CSV) and write them out as a GeoJSON FeatureCollection.

    python export_geojson.py ortho.tif detections.csv footprints.geojson
"""
import argparse
import csv
import json
from collections import defaultdict
from pathlib import Path

import numpy as np
import rasterio
import samgpu_shim  # noqa: F401
import torch
from PIL import Image
from rasterio import features
from rasterio.windows import Window
from shapely.geometry import mapping, shape
from shapely.ops import unary_union
from sam3 import build_sam3_image_model
from sam3.model.sam3_image_processor import Sam3Processor

TILE = 1024


def load_detections(path):
    """CSV rows: tile_row, tile_col, x0, y0, x1, y1 (pixel coords inside the tile)."""
    per_tile = defaultdict(list)
    with open(path) as fh:
        for row in csv.DictReader(fh):
            key = (int(row["tile_row"]), int(row["tile_col"]))
            per_tile[key].append([float(row[k]) for k in ("x0", "y0", "x1", "y1")])
    return per_tile


def read_tile(src, row, col):
    window = Window(col * TILE, row * TILE, TILE, TILE).intersection(Window(0, 0, src.width, src.height))
    rgb = src.read((1, 2, 3), window=window)
    rgb = np.moveaxis(rgb, 0, -1)
    if rgb.dtype != np.uint8:
        rgb = np.clip(rgb / np.percentile(rgb, 99) * 255, 0, 255).astype(np.uint8)
    return rgb, window, src.window_transform(window)


def segment_tile(model, processor, rgb, boxes):
    state = processor.set_image(Image.fromarray(rgb))
    for box in boxes:
        masks, scores, _ = model.predict_inst(state, box=np.asarray(box), multimask_output=False)
        yield box, masks[0], scores[0]


def polygons_from_mask(mask, transform, simplify_tol):
    polys = []
    for geom, value in features.shapes(mask.astype(np.uint8), mask=mask > 0.5, transform=transform):  # expect: astype
        if value == 1:
            polys.append(shape(geom))
    if not polys:
        return None
    return unary_union(polys).simplify(simplify_tol, preserve_topology=True)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("raster")
    ap.add_argument("detections")
    ap.add_argument("output")
    ap.add_argument("--checkpoint", default=None)
    ap.add_argument("--min-score", type=float, default=0.7)
    ap.add_argument("--simplify", type=float, default=0.25, help="in CRS units")
    ap.add_argument("--coverage", default=None, help="optional GeoTIFF with the union of all masks")
    ap.add_argument("--quicklook-dir", default=None, help="dump each mask as PNG for QA")
    args = ap.parse_args()

    model = build_sam3_image_model(
        checkpoint_path=args.checkpoint,
        load_from_HF=args.checkpoint is None,
        enable_inst_interactivity=True,
    )
    processor = Sam3Processor(model, confidence_threshold=args.min_score)
    per_tile = load_detections(args.detections)

    features_out = []
    with rasterio.open(args.raster) as src:
        pixel_area = abs(src.transform.a * src.transform.e)
        coverage = np.zeros((src.height, src.width), dtype=np.float32) if args.coverage else None

        for (row, col), boxes in sorted(per_tile.items()):
            rgb, window, transform = read_tile(src, row, col)
            for box, mask, score in segment_tile(model, processor, rgb, boxes):
                if np.isnan(score) or score < args.min_score:  # expect: np.isnan
                    continue
                geom = polygons_from_mask(mask, transform, args.simplify)
                if geom is None or geom.is_empty:
                    continue
                if args.quicklook_dir:
                    name = f"{row}_{col}_{len(features_out):05d}.png"
                    Image.fromarray(mask > 0.5).save(Path(args.quicklook_dir) / name)  # expect: Image.fromarray
                features_out.append({
                    "type": "Feature",
                    "geometry": mapping(geom),
                    "properties": {
                        "tile": f"{row}_{col}",
                        "score": np.float64(score).round(4),
                        "area_m2": round(float(mask.sum()) * pixel_area, 1),
                        "prompt_box": [round(v, 1) for v in box],
                    },
                })
                if coverage is not None:
                    r0, c0 = int(window.row_off), int(window.col_off)
                    h, w = mask.shape
                    coverage[r0:r0 + h, c0:c0 + w] = np.maximum(coverage[r0:r0 + h, c0:c0 + w], mask)  # expect: np.maximum

        crs = src.crs.to_string() if src.crs else None
        profile = src.profile

    Path(args.output).write_text(json.dumps({
        "type": "FeatureCollection",
        "crs": {"type": "name", "properties": {"name": crs}},
        "features": features_out,
    }))
    print(f"wrote {len(features_out)} footprints to {args.output}")

    if coverage is not None:
        profile.update(count=1, dtype="float32", compress="deflate")
        with rasterio.open(args.coverage, "w", **profile) as dst:
            dst.write(coverage, 1)


if __name__ == "__main__":
    main()
