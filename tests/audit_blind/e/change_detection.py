"""Building change detection between two Sentinel-2 / aerial acquisitions.

For every building footprint of the *before* cadastre, both dates are prompted with the
same box (SAM 2, batched over the two images); the per-building mask IoU and area growth
classify it as unchanged / modified / extended / demolished.

    python change_detection.py before.tif after.tif footprints.geojson --out changes
"""

from __future__ import annotations

import argparse
import functools
import json
from pathlib import Path
from typing import List, NamedTuple

import numpy as np
import rasterio
import rasterio.features
import torch
from affine import Affine
from rasterio.windows import Window, from_bounds
from sam2.build_sam import build_sam2
from sam2.sam2_image_predictor import SAM2ImagePredictor
from shapely.geometry import box as shp_box
from shapely.geometry import shape

CLOUD_CLASSES = (3, 8, 9, 10)  # Sentinel-2 SCL: shadow, cloud medium/high, cirrus


@functools.lru_cache(maxsize=1)
def get_predictor(cfg: str = "configs/sam2.1/sam2.1_hiera_l.yaml", ckpt: str = "checkpoints/sam2.1_hiera_large.pt"):
    return SAM2ImagePredictor(build_sam2(cfg, ckpt, device="cuda"))


class TilePair(NamedTuple):
    before: np.ndarray  # HxWx3 uint8
    after: np.ndarray
    cloud: np.ndarray  # HxW bool, True where the after image is unusable
    transform: Affine
    crs: object


def _stretch(bands: np.ndarray) -> np.ndarray:
    lo, hi = np.percentile(bands, (2, 98), axis=(1, 2), keepdims=True)
    out = np.clip((bands - lo) / np.maximum(hi - lo, 1), 0, 1)
    return (out.transpose(1, 2, 0) * 255).astype(np.uint8)


def read_pair(path_before: str, path_after: str, window: Window) -> TilePair:
    with rasterio.open(path_before) as src0, rasterio.open(path_after) as src1:
        before = _stretch(src0.read((4, 3, 2), window=window).astype(np.float32))
        after = _stretch(src1.read((4, 3, 2), window=window).astype(np.float32))
        scl = src1.read(src1.count, window=window)
        transform = src1.window_transform(window)
        crs = src1.crs
    return TilePair(before, after, np.isin(scl, CLOUD_CLASSES), transform, crs)


def footprints_to_pixel_boxes(features: list, transform: Affine) -> np.ndarray:
    inv = ~transform
    out = []
    for f in features:
        minx, miny, maxx, maxy = shape(f["geometry"]).bounds
        c0, r0 = inv * (minx, maxy)
        c1, r1 = inv * (maxx, miny)
        out.append([c0, r0, c1, r1])
    return np.asarray(out, dtype=np.float32).reshape(-1, 4)


# --------------------------------------------------------------- SAM 2 part
def segment_pair(predictor: SAM2ImagePredictor, pair: TilePair, boxes: np.ndarray):
    predictor.set_image_batch([pair.before, pair.after])
    masks, scores, _ = predictor.predict_batch(box_batch=[boxes, boxes], multimask_output=False)
    m0, m1 = masks  # (N, 1, H, W) each
    s0, s1 = scores  # (N, 1) each
    return m0[:, 0], m1[:, 0], s0[:, 0], s1[:, 0]


def compare(m0: torch.Tensor, m1: torch.Tensor):
    inter = (m0 & m1).sum(dim=(-2, -1)).float()
    union = (m0 | m1).sum(dim=(-2, -1)).float()
    iou = inter / union.clamp(min=1)
    a0 = m0.sum(dim=(-2, -1))
    a1 = m1.sum(dim=(-2, -1))
    growth = (a1 - a0).float() / a0.clamp(min=1)
    return iou, growth, a0, a1


def classify(iou, growth, a0, a1, iou_thr: float = 0.6) -> List[str]:
    kinds = []
    for i in range(len(iou)):
        if a1[i] < 0.2 * a0[i]:
            kinds.append("demolished")
        elif iou[i] < iou_thr and growth[i] > 0.25:
            kinds.append("extended")
        elif iou[i] < iou_thr:
            kinds.append("modified")
        else:
            kinds.append("unchanged")
    return kinds


def summarise(kinds: List[str], iou) -> dict:
    counts = {k: kinds.count(k) for k in ("unchanged", "modified", "extended", "demolished")}
    counts["mean_iou"] = float(iou.mean()) if len(kinds) else None
    counts["min_iou"] = float(iou.min()) if len(kinds) else None
    return counts


# ------------------------------------------------------------------ output
def run_tile(path_before: str, path_after: str, features: list, bounds, out_dir: Path) -> dict:
    with rasterio.open(path_after) as src:
        window = from_bounds(*bounds, transform=src.transform).round_offsets().round_lengths()
    pair = read_pair(path_before, path_after, window)
    boxes = footprints_to_pixel_boxes(features, pair.transform)
    if len(boxes) < 2:  # predict_batch squeezes a single box away; not worth a tile anyway
        return {"skipped": True}

    m0, m1, s0, s1 = segment_pair(get_predictor(), pair, boxes)
    iou, growth, a0, a1 = compare(m0, m1)
    kinds = classify(iou, growth, a0, a1)

    change = np.zeros(pair.after.shape[:2], dtype=np.uint8)
    out_features = []
    for i, (feat, kind) in enumerate(zip(features, kinds)):
        props = {
            "fid": feat.get("id"),
            "kind": kind,
            "iou": round(float(iou[i]), 3),
            "growth": round(float(growth[i]), 3),
            "area_px_before": int(a0[i]),
            "area_px_after": int(a1[i]),
        }
        if kind != "unchanged":
            valid_after = m1[i] & ~pair.cloud  # expect: t & ndarray
            change[m0[i] & ~m1[i]] = 1  # expect: ndarray[t_bool] setitem
            change[valid_after & ~m0[i]] = 2  # expect: ndarray & t
            props["confidence"] = float(np.minimum(s0[i], s1[i]))  # expect: np.minimum
            after_u8 = m1[i].astype(np.uint8)  # expect: astype
            shapes = rasterio.features.shapes(after_u8, mask=valid_after, transform=pair.transform)
            geoms = [g for g, v in shapes if v == 1]
            props["after_parts"] = len(geoms)
        out_features.append({"type": "Feature", "geometry": feat["geometry"], "properties": props})

    profile = {
        "driver": "GTiff",
        "height": change.shape[0],
        "width": change.shape[1],
        "count": 1,
        "dtype": "uint8",
        "crs": pair.crs,
        "transform": pair.transform,
        "compress": "deflate",
    }
    tag = "_".join(f"{b:.0f}" for b in bounds)
    with rasterio.open(out_dir / f"change_{tag}.tif", "w", **profile) as dst:
        dst.write(change, 1)
    (out_dir / f"buildings_{tag}.geojson").write_text(
        json.dumps({"type": "FeatureCollection", "features": out_features})
    )
    return summarise(kinds, iou)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("before")
    ap.add_argument("after")
    ap.add_argument("footprints")
    ap.add_argument("--out", type=Path, default=Path("changes"))
    ap.add_argument("--tile", type=float, default=512.0, help="tile size in CRS units")
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)

    fc = json.loads(Path(args.footprints).read_text())
    with rasterio.open(args.after) as src:
        left, bottom, right, top = src.bounds
    report = []
    y = bottom
    while y < top:
        x = left
        while x < right:
            cell = shp_box(x, y, x + args.tile, y + args.tile)
            feats = [f for f in fc["features"] if shape(f["geometry"]).centroid.within(cell)]
            if feats:
                report.append(run_tile(args.before, args.after, feats, cell.bounds, args.out))
            x += args.tile
        y += args.tile
    (args.out / "report.json").write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
