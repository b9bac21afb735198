"""Data engine: pre-annotate images for LabelMe.

Round 1: SAM automatic masks, named by overlap with a YOLOv8-seg detector.
Round 2+: masks corrected by annotators (PNG per object) are re-prompted with
their tight box so annotators get a clean polygon to start from.

Writes one LabelMe JSON per image next to it.
"""
from __future__ import annotations

import argparse
import base64
import io
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import List, Optional, Union

import cv2
import numpy as np
import torch
from PIL import Image
from segment_anything import SamAutomaticMaskGenerator, SamPredictor, sam_model_registry
from ultralytics import YOLO

LABELME_VERSION = "5.4.1"


@dataclass
class Shape:
    label: str
    points: List[List[float]]
    group_id: Optional[int] = None
    shape_type: str = "polygon"
    flags: dict = field(default_factory=dict)
    description: str = ""


class AnnotationJob:
    """One image to pre-annotate.

    ``mask`` is the path of a corrected mask PNG from the previous round when the
    job is created from disk, and the loaded boolean array once ``load_mask`` ran.
    """

    def __init__(self, image_path: Path, mask: Union[str, Path, np.ndarray, None] = None, label: str = "object"):
        self.image_path = Path(image_path)
        self.mask = mask
        self.label = label

    def load_mask(self) -> Optional[np.ndarray]:
        if isinstance(self.mask, (str, Path)):
            self.mask = cv2.imread(str(self.mask), cv2.IMREAD_GRAYSCALE) > 0
        return self.mask


def mask_to_polygon(mask: np.ndarray, eps: float = 1.5) -> List[List[float]]:
    cnts, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    if not cnts:
        return []
    c = max(cnts, key=cv2.contourArea)
    c = cv2.approxPolyDP(c, eps, True)
    return c.reshape(-1, 2).astype(float).tolist()


def tight_box(mask: np.ndarray) -> np.ndarray:
    ys, xs = np.where(mask)
    return np.array([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], dtype=np.float32)


def encode_image(image: np.ndarray) -> str:
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="JPEG", quality=90)
    return base64.b64encode(buf.getvalue()).decode("ascii")


class Engine:
    def __init__(self, checkpoint: str, model_type: str = "vit_h", device: str = "cuda"):
        sam = sam_model_registry[model_type](checkpoint=checkpoint).to(device)
        self.device = device
        self.amg = SamAutomaticMaskGenerator(
            sam,
            points_per_side=32,
            pred_iou_thresh=0.88,
            stability_score_thresh=0.92,
            min_mask_region_area=200,
        )
        self.prompter = SamPredictor(sam)
        self.namer = YOLO("yolov8x-seg.pt")

    def yolo_masks(self, image: np.ndarray):
        res = self.namer.predict(image, conf=0.3, retina_masks=True, verbose=False)[0]
        if res.masks is None:
            return np.zeros((0,) + image.shape[:2], bool), []
        masks = res.masks.data.cpu().numpy() > 0.5
        names = [res.names[int(c)] for c in res.boxes.cls.cpu().numpy()]
        return masks, names

    def round1(self, image: np.ndarray) -> List[Shape]:
        anns = self.amg.generate(image)
        ymasks, ynames = self.yolo_masks(image)
        shapes = []
        for ann in sorted(anns, key=lambda a: a["area"], reverse=True):
            m = ann["segmentation"]
            label = "unknown"
            if len(ymasks):
                inter = np.logical_and(ymasks, m[None]).sum(axis=(1, 2))
                union = np.logical_or(ymasks, m[None]).sum(axis=(1, 2))
                overlap = inter / np.maximum(union, 1)
                if overlap.max() > 0.5:
                    label = ynames[int(overlap.argmax())]
            pts = mask_to_polygon(m)
            if len(pts) >= 3:
                shapes.append(Shape(label=label, points=pts, flags={"auto": True},
                                    description=f"iou={ann['predicted_iou']:.2f}"))
        return shapes

    def round2(self, image: np.ndarray, jobs: List[AnnotationJob]) -> List[Shape]:
        self.prompter.set_image(image)
        shapes = []
        for job in jobs:
            prev = job.load_mask()
            if prev is None or not prev.any():
                continue
            masks, scores, _ = self.prompter.predict(box=tight_box(prev), multimask_output=True, as_numpy=True)
            best = masks[np.argmax(scores)]
            agree = np.logical_and(best, prev).sum() / max(np.logical_or(best, prev).sum(), 1)
            chosen = best if agree > 0.7 else prev
            shapes.append(Shape(label=job.label, points=mask_to_polygon(chosen),
                                flags={"auto": bool(agree > 0.7)}, description=f"agree={agree:.2f}"))
        return shapes

    def refine_batch(self, image: np.ndarray, boxes: np.ndarray) -> np.ndarray:
        """All boxes in one decoder call (predict_torch has always returned tensors)."""
        self.prompter.set_image(image)
        boxes_t = torch.as_tensor(boxes, dtype=torch.float, device=self.device)
        boxes_t = self.prompter.transform.apply_boxes_torch(boxes_t, image.shape[:2])
        masks_t, iou_t, _ = self.prompter.predict_torch(
            point_coords=None, point_labels=None, boxes=boxes_t, multimask_output=False
        )
        return masks_t[:, 0].cpu().numpy()


def write_labelme(image_path: Path, image: np.ndarray, shapes: List[Shape]) -> Path:
    h, w = image.shape[:2]
    doc = {
        "version": LABELME_VERSION,
        "flags": {},
        "shapes": [asdict(s) for s in shapes],
        "imagePath": image_path.name,
        "imageData": encode_image(image),
        "imageHeight": h,
        "imageWidth": w,
    }
    out = image_path.with_suffix(".json")
    out.write_text(json.dumps(doc, indent=2))
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("images", type=Path)
    ap.add_argument("--checkpoint", default="sam_vit_h_4b8939.pth")
    ap.add_argument("--corrected", type=Path, default=None, help="folder of <stem>__<label>.png masks from round 1")
    args = ap.parse_args()

    engine = Engine(args.checkpoint)
    for img_path in sorted(args.images.glob("*.jpg")):
        image = cv2.cvtColor(cv2.imread(str(img_path)), cv2.COLOR_BGR2RGB)
        jobs = []
        if args.corrected is not None:
            for png in sorted(args.corrected.glob(f"{img_path.stem}__*.png")):
                jobs.append(AnnotationJob(img_path, mask=png, label=png.stem.split("__", 1)[1]))
        shapes = engine.round2(image, jobs) if jobs else engine.round1(image)
        if jobs:
            extra = np.array([tight_box(j.mask) for j in jobs if j.mask is not None and j.mask.any()])
            if len(extra):
                for m, j in zip(engine.refine_batch(image, extra), jobs):
                    cv2.imwrite(str(args.corrected / f"{img_path.stem}__{j.label}__sam.png"), m.astype(np.uint8) * 255)
        print(img_path.name, len(shapes), "shapes ->", write_labelme(img_path, image, shapes))


if __name__ == "__main__":
    main()
