"""Convert a YOLO detection dataset (images/ + labels/*.txt) into a COCO
instance-segmentation json by prompting SAM with every box.

    python yolo2coco_sam.py convert data/fruit --split val --model vit_h
    python yolo2coco_sam.py pseudo data/unlabelled --detector runs/best.pt
"""

from __future__ import annotations

import datetime as dt
import functools
import json
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Tuple

import cv2
import numpy as np
import torch
import typer
from pycocotools import mask as mask_util
from tqdm import tqdm

app = typer.Typer(add_completion=False, help=__doc__)

CHECKPOINTS: Dict[str, Tuple[str, str]] = {
    "vit_b": ("segment_anything", "weights/sam_vit_b_01ec64.pth"),
    "vit_h": ("segment_anything", "weights/sam_vit_h_4b8939.pth"),
    "hq_vit_l": ("segment_anything_hq", "weights/sam_hq_vit_l.pth"),
}


@functools.lru_cache(maxsize=None)
def sam_for(name: str):
    pkg, ckpt = CHECKPOINTS[name]
    mod = __import__(pkg, fromlist=["sam_model_registry", "SamPredictor"])
    arch = name.split("_", 1)[1] if name.startswith("hq_") else name
    sam = mod.sam_model_registry[arch](checkpoint=ckpt).to("cuda").eval()
    return mod.SamPredictor(sam)


def to_numpy(x) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        return x.detach().cpu().numpy()
    return np.asarray(x)


def read_yolo_labels(txt: Path, w: int, h: int) -> Tuple[np.ndarray, np.ndarray]:
    if not txt.exists():
        return np.zeros((0, 4), np.float32), np.zeros((0,), np.int64)
    rows = np.loadtxt(txt, ndmin=2)
    cls = rows[:, 0].astype(np.int64)
    cx, cy, bw, bh = rows[:, 1] * w, rows[:, 2] * h, rows[:, 3] * w, rows[:, 4] * h
    xyxy = np.stack([cx - bw / 2, cy - bh / 2, cx + bw / 2, cy + bh / 2], axis=1).astype(np.float32)
    return xyxy, cls


def best_mask_per_box(sam, boxes: np.ndarray, fast: bool) -> Iterator[Tuple[np.ndarray, float]]:
    for box in boxes:
        if fast:
            m, s, _ = sam.predict(box=box, multimask_output=False, as_numpy=True)
            yield m[0], float(s[0])
            continue
        masks, scores, _ = sam.predict(box=box, multimask_output=True)
        areas = masks.sum(axis=(1, 2))
        ranked = sorted(zip(scores, range(len(masks))), key=lambda t: float(t[0]), reverse=True)
        k = ranked[0][1]
        # SAM sometimes ranks a tiny sub-part first for thin objects - fall back
        if len(ranked) > 1 and areas[k] < 0.05 * float(areas.max()):
            k = ranked[1][1]
        yield to_numpy(masks[k]), float(scores[k])


def encode_rle(mask: np.ndarray) -> Dict:
    rle = mask_util.encode(np.asfortranarray(mask.astype(np.uint8)))
    rle["counts"] = rle["counts"].decode("ascii")
    return rle


def polygons(mask: np.ndarray, tol: float = 1.0) -> List[List[float]]:
    cs, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    out = []
    for c in cs:
        c = cv2.approxPolyDP(c, tol, True)
        if len(c) >= 3:
            out.append(c.reshape(-1).astype(float).tolist())
    return out


def new_coco(names: List[str]) -> Dict:
    return {
        "info": {"description": "yolo2coco_sam", "date_created": dt.datetime.now().isoformat()},
        "images": [], "annotations": [],
        "categories": [{"id": i + 1, "name": n} for i, n in enumerate(names)],
    }


def add_instance(coco: Dict, image_id: int, cls: int, mask: np.ndarray, score: float, as_polygon: bool) -> None:
    ys, xs = np.where(mask)
    if len(xs) == 0:
        return
    x0, y0, x1, y1 = xs.min(), ys.min(), xs.max() + 1, ys.max() + 1
    coco["annotations"].append({
        "id": len(coco["annotations"]) + 1,
        "image_id": image_id,
        "category_id": int(cls) + 1,
        "bbox": [int(x0), int(y0), int(x1 - x0), int(y1 - y0)],
        "area": int(mask.sum()),
        "iscrowd": 0,
        "segmentation": polygons(mask) if as_polygon else encode_rle(mask),
        "score": round(score, 4),
    })


@app.command()
def convert(root: Path, split: str = "train", model: str = "vit_h",
            names_file: Optional[Path] = None, polygon: bool = True, fast: bool = False) -> None:
    names = (names_file or root / "classes.txt").read_text().split()
    sam = sam_for(model)
    coco = new_coco(names)
    images = sorted((root / "images" / split).glob("*.jpg"))
    for image_id, img_path in enumerate(tqdm(images), start=1):
        bgr = cv2.imread(str(img_path))
        h, w = bgr.shape[:2]
        coco["images"].append({"id": image_id, "file_name": img_path.name, "height": h, "width": w})
        boxes, classes = read_yolo_labels(root / "labels" / split / (img_path.stem + ".txt"), w, h)
        if not len(boxes):
            continue
        sam.set_image(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
        for cls, (mask, score) in zip(classes, best_mask_per_box(sam, boxes, fast)):
            add_instance(coco, image_id, cls, mask, score, polygon)
    out = root / f"instances_{split}.json"
    out.write_text(json.dumps(coco))
    typer.echo(f"{len(coco['annotations'])} instances -> {out}")


@app.command()
def pseudo(root: Path, detector: Path, model: str = "vit_b", conf: float = 0.5) -> None:
    """No labels: boxes come from a YOLO model, masks from SAM."""
    from ultralytics import YOLO

    yolo = YOLO(str(detector))
    sam = sam_for(model)
    coco = new_coco(list(yolo.names.values()))
    for image_id, img_path in enumerate(sorted(root.glob("*.jpg")), start=1):
        res = yolo.predict(str(img_path), conf=conf, verbose=False)[0]
        rgb = res.orig_img[:, :, ::-1].copy()
        coco["images"].append({"id": image_id, "file_name": img_path.name,
                               "height": rgb.shape[0], "width": rgb.shape[1]})
        if len(res.boxes) == 0:
            continue
        sam.set_image(rgb)
        boxes = res.boxes.xyxy.cpu().numpy()
        classes = res.boxes.cls.cpu().numpy().astype(int)
        for cls, box, det_conf in zip(classes, boxes, res.boxes.conf.tolist()):
            masks, scores, _ = sam.predict(box=box, multimask_output=False)
            mask = masks[0].cpu().numpy()
            add_instance(coco, image_id, cls, mask, float(scores[0]) * det_conf, polygon=False)
    (root / "pseudo_instances.json").write_text(json.dumps(coco))


@app.command()
def everything(image: Path, out: Path, model: str = "vit_h") -> None:
    """Debug helper: dump SamAutomaticMaskGenerator output for one image."""
    from segment_anything import SamAutomaticMaskGenerator

    gen = SamAutomaticMaskGenerator(sam_for(model).model, points_per_side=24)
    anns = gen.generate(cv2.cvtColor(cv2.imread(str(image)), cv2.COLOR_BGR2RGB))
    coco = new_coco(["segment"])
    coco["images"].append({"id": 1, "file_name": image.name})
    for a in sorted(anns, key=lambda a: a["area"], reverse=True):
        add_instance(coco, 1, 0, a["segmentation"], a["predicted_iou"], polygon=True)
    out.write_text(json.dumps(coco))


if __name__ == "__main__":
    app()
