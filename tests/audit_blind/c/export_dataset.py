"""Build a YOLO-seg / COCO training set from raw images.

Three mask sources, picked per run:

* ``--source amg``     SAM automatic mask generator (class-agnostic, "object")
* ``--source yolo``    YOLO detector boxes refined into masks by SAM
* ``--source npy``     masks already exported by the annotation tool (*.npy)

    python export_dataset.py raw/ out/ --source yolo --det yolov8x.pt --classes 0 2 7
"""

import argparse
import json
import shutil
from pathlib import Path

import cv2
import numpy as np
import torch
from tqdm import tqdm
from ultralytics import YOLO

from segment_anything import SamAutomaticMaskGenerator, SamPredictor, sam_model_registry

from sam_tools.engine import build_engine
from sam_tools.postprocess import (
    fill_small_holes,
    keep_largest_component,
    mask_to_polygons,
    mask_to_xyxy,
    polygons_to_yolo,
)
from pycocotools import mask as mask_utils


def to_numpy(x):
    """Accept numpy, CPU or CUDA tensors (the shim returns CUDA tensors)."""
    if isinstance(x, torch.Tensor):
        return x.detach().cpu().numpy()
    return np.asarray(x)


def masks_from_amg(amg: SamAutomaticMaskGenerator, rgb: np.ndarray, min_area: int):
    anns = amg.generate(rgb)  # list of dicts, "segmentation" is a numpy bool HxW
    anns = [a for a in anns if a["area"] >= min_area]
    anns.sort(key=lambda a: a["predicted_iou"], reverse=True)
    for a in anns:
        m = fill_small_holes(a["segmentation"])
        yield 0, m, float(a["predicted_iou"])


def masks_from_yolo(detector: YOLO, predictor: SamPredictor, rgb: np.ndarray, classes, conf: float):
    result = detector.predict(rgb, conf=conf, classes=classes, verbose=False)[0]
    boxes = result.boxes.xyxy.cpu().numpy()
    cls = result.boxes.cls.cpu().numpy().astype(int)
    if len(boxes) == 0:
        return
    predictor.set_image(rgb)
    for box, c in zip(boxes, cls):
        masks, scores, _ = predictor.predict(box=box, multimask_output=True, as_numpy=True)
        k = int(np.argmax(scores))
        mask = keep_largest_component(masks[k])
        if not mask.any():
            continue
        yield int(c), mask, float(scores[k])


def masks_from_npy(npy_path: Path):
    data = np.load(npy_path, allow_pickle=False)  # (N, H, W) uint8 instance stack
    meta = json.loads(npy_path.with_suffix(".json").read_text())
    for m, c in zip(data, meta["classes"]):
        yield int(c), m.astype(bool), 1.0


def refine_with_engine(engine, rgb: np.ndarray, key: str, click_file: Path):
    """Extra objects that annotators marked with a single click (json of x,y,cls)."""
    engine.set_image(rgb, key=key)
    for click in json.loads(click_file.read_text()):
        out = engine.predict(points=[[click["x"], click["y"]]], labels=[1])
        scores = to_numpy(out["scores"])
        masks = to_numpy(out["masks"])
        k = int(scores.argmax())
        yield int(click["cls"]), masks[k], float(scores[k])


def write_sample(img_path: Path, rgb: np.ndarray, items, out: Path, split: str, coco: dict):
    h, w = rgb.shape[:2]
    shutil.copy(img_path, out / "images" / split / img_path.name)
    image_id = len(coco["images"]) + 1
    coco["images"].append({"id": image_id, "file_name": img_path.name, "width": w, "height": h})
    lines = []
    for cls, mask, score in items:
        mask = np.asarray(mask, dtype=bool)
        polys = mask_to_polygons(mask, epsilon=1.0)
        for poly in polygons_to_yolo(polys, w, h):
            lines.append(" ".join([str(cls)] + [f"{v:.6f}" for v in poly]))
        rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
        rle["counts"] = rle["counts"].decode("ascii")
        x0, y0, x1, y1 = mask_to_xyxy(mask) or (0, 0, 0, 0)
        coco["annotations"].append({
            "id": len(coco["annotations"]) + 1,
            "image_id": image_id,
            "category_id": cls + 1,
            "segmentation": rle,
            "area": int(mask.sum()),
            "bbox": [x0, y0, x1 - x0, y1 - y0],
            "iscrowd": 0,
            "score": round(score, 4),
        })
    (out / "labels" / split / f"{img_path.stem}.txt").write_text("\n".join(lines))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("src", type=Path)
    ap.add_argument("dst", type=Path)
    ap.add_argument("--source", choices=["amg", "yolo", "npy"], default="yolo")
    ap.add_argument("--sam", default="vit_h")
    ap.add_argument("--sam-ckpt", default="/models/sam/sam_vit_h_4b8939.pth")
    ap.add_argument("--det", default="yolov8x.pt")
    ap.add_argument("--classes", type=int, nargs="*", default=None)
    ap.add_argument("--conf", type=float, default=0.35)
    ap.add_argument("--min-area", type=int, default=400)
    ap.add_argument("--val-every", type=int, default=10)
    args = ap.parse_args()

    for sub in ("images/train", "images/val", "labels/train", "labels/val"):
        (args.dst / sub).mkdir(parents=True, exist_ok=True)

    device = "cuda" if torch.cuda.is_available() else "cpu"
    sam = sam_model_registry[args.sam](checkpoint=args.sam_ckpt).to(device)
    amg = SamAutomaticMaskGenerator(sam, points_per_side=32, min_mask_region_area=args.min_area)
    predictor = SamPredictor(sam)
    detector = YOLO(args.det) if args.source == "yolo" else None
    engine = build_engine(args.sam, args.sam_ckpt, device, cached=False)

    coco = {"images": [], "annotations": [], "categories": []}
    paths = sorted(p for p in args.src.iterdir() if p.suffix.lower() in {".jpg", ".png"})
    for i, img_path in enumerate(tqdm(paths)):
        rgb = cv2.cvtColor(cv2.imread(str(img_path)), cv2.COLOR_BGR2RGB)
        if args.source == "amg":
            items = list(masks_from_amg(amg, rgb, args.min_area))
        elif args.source == "yolo":
            items = list(masks_from_yolo(detector, predictor, rgb, args.classes, args.conf))
        else:
            items = list(masks_from_npy(img_path.with_suffix(".npy")))
        clicks = img_path.with_suffix(".clicks.json")
        if clicks.exists():
            items += list(refine_with_engine(engine, rgb, img_path.name, clicks))
        split = "val" if i % args.val_every == 0 else "train"
        write_sample(img_path, rgb, items, args.dst, split, coco)

    ids = sorted({a["category_id"] for a in coco["annotations"]})
    coco["categories"] = [{"id": c, "name": str(c - 1)} for c in ids]
    (args.dst / "instances.json").write_text(json.dumps(coco))
    print(f"{len(coco['images'])} images, {len(coco['annotations'])} instances -> {args.dst}")


if __name__ == "__main__":
    main()
