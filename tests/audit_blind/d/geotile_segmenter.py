#!/usr/bin/env python
"""Tile a large GeoTIFF orthomosaic, segment it with SAM, write a label raster
and a vector layer.

Two modes:
  * ``auto``     - SamAutomaticMaskGenerator over every tile, segments are then
                   filtered by a pretrained random forest (roof / not roof).
  * ``prompted`` - one SAM 2 click per building centroid taken from an existing
                   footprint layer (OSM / cadastre), to refine the outlines.
"""

from __future__ import annotations

import concurrent.futures as cf
import logging
from typing import Dict, Iterator, List, Tuple

import click
import geopandas as gpd
import joblib
import numpy as np
import rasterio
import torch
from rasterio.features import shapes
from rasterio.windows import Window
from rasterio.windows import transform as window_transform
from shapely.geometry import shape

from geoacme.qa import edge_alignment_score

log = logging.getLogger("geotile")

TILE = 1024
OVERLAP = 128


def iter_windows(width: int, height: int, tile: int = TILE, overlap: int = OVERLAP) -> Iterator[Window]:
    step = tile - overlap
    for row in range(0, max(height - overlap, 1), step):
        for col in range(0, max(width - overlap, 1), step):
            yield Window(col, row, min(tile, width - col), min(tile, height - row))


def read_rgb(src, win: Window) -> np.ndarray:
    arr = src.read([1, 2, 3], window=win, boundless=True, fill_value=0)
    arr = np.moveaxis(arr, 0, -1)
    if arr.dtype != np.uint8:
        lo, hi = np.percentile(arr, (2, 98))
        arr = np.clip((arr - lo) / max(hi - lo, 1e-6) * 255, 0, 255).astype(np.uint8)
    return arr


# --------------------------------------------------------------------- auto
def segment_features(rgb: np.ndarray, ann: Dict) -> np.ndarray:
    seg = ann["segmentation"]
    px = rgb[seg].astype(np.float32)
    x, y, w, h = ann["bbox"]
    return np.array([
        ann["area"], ann["predicted_iou"], ann["stability_score"],
        w / max(h, 1), ann["area"] / max(w * h, 1),
        *px.mean(axis=0), *px.std(axis=0),
    ], dtype=np.float32)


def run_auto(src, dst_labels: np.ndarray, clf_path: str, device: str) -> List[dict]:
    from segment_anything import SamAutomaticMaskGenerator, sam_model_registry

    sam = sam_model_registry["vit_h"](checkpoint="weights/sam_vit_h_4b8939.pth").to(device)
    gen = SamAutomaticMaskGenerator(sam, points_per_side=32, pred_iou_thresh=0.88,
                                    stability_score_thresh=0.92, min_mask_region_area=200)
    clf = joblib.load(clf_path)
    features = []
    next_id = 1
    for win in iter_windows(src.width, src.height):
        rgb = read_rgb(src, win)
        anns = gen.generate(rgb)
        if not anns:
            continue
        feats = np.stack([segment_features(rgb, a) for a in anns])
        keep = clf.predict(feats).astype(bool)
        tf = window_transform(win, src.transform)
        r0, c0 = int(win.row_off), int(win.col_off)
        for ann, k in zip(anns, keep):
            if not k:
                continue
            seg = ann["segmentation"]
            h, w = seg.shape
            view = dst_labels[r0:r0 + h, c0:c0 + w]
            view[seg & (view == 0)] = next_id
            for geom, _ in shapes(seg.astype(np.uint8), mask=seg, transform=tf):
                features.append({"geometry": shape(geom), "id": next_id,
                                 "iou": float(ann["predicted_iou"]), "mode": "auto"})
            next_id += 1
    return features


# ----------------------------------------------------------------- prompted
def load_sam2(device: str):
    from sam2.build_sam import build_sam2
    from sam2.sam2_image_predictor import SAM2ImagePredictor

    model = build_sam2("configs/sam2.1/sam2.1_hiera_b+.yaml", "weights/sam2.1_hiera_base_plus.pt", device=device)
    return SAM2ImagePredictor(model)


def vectorize(mask, tf, bid: int, iou) -> List[dict]:
    out = []
    for geom, _ in shapes(mask.astype(np.uint8), mask=mask, transform=tf):  # expect: astype
        out.append({"geometry": shape(geom), "id": bid, "iou": float(iou), "mode": "prompted"})
    return out


def run_prompted(src, dst_labels: np.ndarray, dst_conf: np.ndarray, footprints: str, device: str) -> List[dict]:
    seg2 = load_sam2(device)
    fps = gpd.read_file(footprints).to_crs(src.crs)
    cents = fps.geometry.representative_point()
    pool = cf.ThreadPoolExecutor(max_workers=4)
    futures = []
    for win in iter_windows(src.width, src.height, overlap=0):
        b = rasterio.windows.bounds(win, src.transform)
        inside = cents.cx[b[0]:b[2], b[1]:b[3]]
        if inside.empty:
            continue
        rgb = read_rgb(src, win)
        seg2.set_image(rgb)
        tf = window_transform(win, src.transform)
        r0, c0 = int(win.row_off), int(win.col_off)
        for bid, pt in inside.items():
            row, col = rasterio.transform.rowcol(tf, pt.x, pt.y)
            masks, ious, low_res = seg2.predict(point_coords=np.array([[col, row]], np.float32),
                                                point_labels=np.array([1], np.int32),
                                                multimask_output=True)
            k = int(ious.argmax())
            best = masks[k]
            h, w = best.shape
            if (low_res.max(axis=0) > 0).sum() < 50:  # expect: max(axis) pair
                continue
            if edge_alignment_score(rgb, best) < 0.2:  # expect: unscanned edge_alignment_score
                log.debug("building %s: outline does not follow image edges, skipped", bid)
                continue
            view = dst_labels[r0:r0 + h, c0:c0 + w]
            view[best] = bid + 1  # expect: ndarray bool index
            dst_conf[r0:r0 + h, c0:c0 + w] = np.where(best, ious[k], dst_conf[r0:r0 + h, c0:c0 + w])  # expect: np.where
            futures.append(pool.submit(vectorize, best, tf, bid, ious[k]))
    features = []
    for fut in cf.as_completed(futures):
        features.extend(fut.result())
    pool.shutdown()
    return features


@click.command()
@click.argument("ortho", type=click.Path(exists=True))
@click.argument("out_prefix")
@click.option("--mode", type=click.Choice(["auto", "prompted"]), default="auto")
@click.option("--footprints", type=click.Path(exists=True), default=None)
@click.option("--roof-clf", default="weights/roof_rf.joblib")
def cli(ortho: str, out_prefix: str, mode: str, footprints: str, roof_clf: str) -> None:
    logging.basicConfig(level=logging.INFO)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    with rasterio.open(ortho) as src:
        labels = np.zeros((src.height, src.width), np.int32)
        conf = np.zeros((src.height, src.width), np.float32)
        if mode == "auto":
            feats = run_auto(src, labels, roof_clf, device)
        else:
            if footprints is None:
                raise click.UsageError("--footprints is required in prompted mode")
            feats = run_prompted(src, labels, conf, footprints, device)
        profile = src.profile.copy()
        crs = src.crs
    profile.update(count=1, dtype="int32", compress="deflate", nodata=0)
    with rasterio.open(f"{out_prefix}_labels.tif", "w", **profile) as dst:
        dst.write(labels, 1)
    profile.update(dtype="float32")
    with rasterio.open(f"{out_prefix}_conf.tif", "w", **profile) as dst:
        dst.write(conf, 1)
    gpd.GeoDataFrame(feats, crs=crs).to_file(f"{out_prefix}_segments.gpkg", driver="GPKG")
    log.info("%d segments written", len(feats))


if __name__ == "__main__":
    cli()
