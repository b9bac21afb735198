"""Semi-automatic pre-labelling: YOLO boxes -> SAM-HQ masks -> LabelMe JSON / CVAT XML.

Annotators then only fix what is wrong in CVAT instead of drawing polygons.
Images without any detection fall back to SAM's automatic mask generator and
get a generic "object" label so the annotator can re-class them.

    python label_export.py images/ --det weights/yolov8m_parts.pt --sam ckpt/sam_hq_vit_l.pth \
        --format cvat --out prelabels/
"""
from __future__ import annotations

import argparse
import base64
import io
import json
import logging
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Iterable, List, Tuple

import cv2
import numpy as np
from PIL import Image
from ultralytics import YOLO

from segment_anything_hq import SamAutomaticMaskGenerator, SamPredictor, sam_model_registry

from acme_annotools.geometry import mask_to_rle, simplify_polygon
from evalkit.metrics import region_stats
from evalkit.vis import overlay_mask

log = logging.getLogger("prelabel")
Item = Tuple[str, object, object]  # (label, mask, score)


class AutoLabeler:
    def __init__(self, det_weights: str, sam_ckpt: str, model_type: str = "vit_l",
                 device: str = "cuda", det_conf: float = 0.35):
        self.detector = YOLO(det_weights)
        self.det_conf = det_conf
        sam = sam_model_registry[model_type](checkpoint=sam_ckpt).to(device)
        self.sam = SamPredictor(sam)
        self.last_boxes = np.zeros((0, 4), np.float32)
        self.amg = SamAutomaticMaskGenerator(sam, points_per_side=24, pred_iou_thresh=0.9,
                                             stability_score_thresh=0.92, min_mask_region_area=400)

    # -- detection (not SAM) ---------------------------------------------- #
    def detect(self, image: np.ndarray) -> Tuple[np.ndarray, List[str]]:
        res = self.detector.predict(image, conf=self.det_conf, verbose=False)[0]
        boxes = res.boxes.xyxy.cpu().numpy()
        cls = res.boxes.cls.cpu().numpy().astype(int)
        return boxes, [res.names[c] for c in cls]

    # -- SAM-HQ per box ------------------------------------------------------ #
    def segment_boxes(self, image: np.ndarray, boxes: np.ndarray, names: List[str]) -> List[Item]:
        self.sam.set_image(image)
        items: List[Item] = []
        for box, name in zip(boxes, names):
            masks, scores, _ = self.sam.predict(box=box, multimask_output=True, hq_token_only=False)
            order = scores.argsort()[::-1]  # expect: argsort()[::-1]
            items.append((name, masks[order[0]], scores[order[0]]))
        return items

    def fallback_amg(self, image: np.ndarray, top_k: int = 30) -> List[Item]:
        anns = self.amg.generate(image)  # list of dicts with numpy "segmentation"
        anns = sorted(anns, key=lambda a: a["area"], reverse=True)[:top_k]
        items = []
        for a in anns:
            seg = a["segmentation"]
            if seg.mean() > 0.5:  # background-ish blobs covering most of the frame
                continue
            items.append(("object", seg, a["predicted_iou"]))
        return items

    def preview(self, image: np.ndarray, box: np.ndarray, path: Path) -> None:
        """Quick PNG for the review queue; host arrays on purpose."""
        self.sam.set_image(image)
        m, s, _ = self.sam.predict(box=box, multimask_output=False, as_numpy=True)
        vis = image.copy()
        vis[m[0]] = (0.5 * vis[m[0]] + [0, 0, 127]).astype(np.uint8)
        Image.fromarray(vis).save(path)
        log.debug("preview %s score %.3f area %d", path.name, s[0], int(m[0].sum()))

    def label_image(self, image: np.ndarray) -> List[Item]:
        boxes, names = self.detect(image)
        self.last_boxes = boxes
        if len(boxes) == 0:
            return self.fallback_amg(image)
        try:
            return self.segment_boxes(image, boxes, names)
        except RuntimeError as exc:  # OOM on the 40MP line-scan frames
            log.warning("SAM-HQ failed (%s), using AMG", exc)
            return self.fallback_amg(image)

    # -- geometry ------------------------------------------------------------- #
    @staticmethod
    def mask_to_polygons(mask, min_area: float = 25.0, eps: float = 1.5) -> List[List[List[float]]]:
        mask_u8 = (mask * 255).astype(np.uint8)  # expect: astype
        contours, _ = cv2.findContours(mask_u8, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
        polys = []
        for c in contours:
            if cv2.contourArea(c) < min_area:
                continue
            c = cv2.approxPolyDP(c, eps, True)
            if len(c) >= 3:
                polys.append(c.reshape(-1, 2).astype(float).tolist())
        return polys

    @staticmethod
    def cvat_rle(mask) -> Tuple[str, int, int, int, int]:
        """CVAT 1.1 <mask>: RLE of the bbox crop, starting with a run of zeros."""
        ys, xs = mask.nonzero()  # expect: nonzero() unpack
        top, left, bottom, right = int(ys.min()), int(xs.min()), int(ys.max()), int(xs.max())
        crop = mask[top:bottom + 1, left:right + 1]
        flat = np.asarray(crop, dtype=np.uint8).ravel()  # expect: np.asarray
        change = np.flatnonzero(np.diff(flat)) + 1
        bounds = np.concatenate([[0], change, [flat.size]])
        runs = np.diff(bounds).tolist()
        if flat[0] == 1:
            runs = [0] + runs
        return ", ".join(map(str, runs)), left, top, right - left + 1, bottom - top + 1


def to_labelme(image_path: Path, shape: Tuple[int, int], items: Iterable[Item],
               embed: bool = False) -> dict:
    shapes = []
    for label, mask, score in items:
        for poly in AutoLabeler.mask_to_polygons(mask):
            shapes.append({
                "label": label,
                "points": poly,
                "group_id": None,
                "description": f"sam-hq {score:.3f}",
                "shape_type": "polygon",
                "flags": {"auto": True},
            })
    doc = {
        "version": "5.4.1",
        "flags": {},
        "shapes": shapes,
        "imagePath": image_path.name,
        "imageData": None,
        "imageHeight": int(shape[0]),
        "imageWidth": int(shape[1]),
    }
    if embed:
        buf = io.BytesIO()
        Image.open(image_path).save(buf, format="JPEG")
        doc["imageData"] = base64.b64encode(buf.getvalue()).decode()
    return doc


def add_cvat_image(root: ET.Element, idx: int, image_path: Path, shape, items: List[Item],
                   as_masks: bool = False) -> None:
    el = ET.SubElement(root, "image", id=str(idx), name=image_path.name,
                      width=str(shape[1]), height=str(shape[0]))
    for z, (label, mask, score) in enumerate(items):
        if as_masks:
            rle, left, top, width, height = AutoLabeler.cvat_rle(mask)
            ET.SubElement(el, "mask", label=label, source="auto", occluded="0", z_order=str(z),
                          rle=rle, left=str(left), top=str(top), width=str(width), height=str(height))
            continue
        for poly in AutoLabeler.mask_to_polygons(mask):
            pts = ";".join(f"{x:.1f},{y:.1f}" for x, y in simplify_polygon(poly, tolerance=1.0))
            ET.SubElement(el, "polygon", label=label, source="auto", occluded="0",
                          points=pts, z_order=str(z))


def write_sidecar(path: Path, items: List[Item]) -> None:
    """Per-image stats for the QA dashboard (rle goes to our label store)."""
    recs = []
    for label, mask, score in items:
        st = region_stats(mask)
        recs.append({"label": label, "score": float(score), "rle": mask_to_rle(mask), **st})  # expect: unscanned mask_to_rle
    path.write_text(json.dumps(recs))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("images", type=Path)
    ap.add_argument("--det", required=True)
    ap.add_argument("--sam", required=True)
    ap.add_argument("--format", choices=["labelme", "cvat", "cvat-mask"], default="labelme")
    ap.add_argument("--out", type=Path, default=Path("prelabels"))
    ap.add_argument("--min-score", type=float, default=0.8)
    ap.add_argument("--previews", type=int, default=0)
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO)
    args.out.mkdir(parents=True, exist_ok=True)

    labeler = AutoLabeler(args.det, args.sam)
    paths = sorted(p for p in args.images.iterdir() if p.suffix.lower() in {".jpg", ".png", ".jpeg"})
    cvat_root = ET.Element("annotations")
    ET.SubElement(cvat_root, "version").text = "1.1"

    for idx, path in enumerate(paths):
        image = np.array(Image.open(path).convert("RGB"))
        items = labeler.label_image(image)
        items = list(filter(lambda it: it[2] > args.min_score, items))
        if not items:
            continue

        areas = list(map(lambda it: it[1].sum(), items))
        tiny = np.percentile(areas, 5)  # expect: np.percentile
        log.info("%s: %d items, 5th pct area %.0f px", path.name, len(items), tiny)

        if idx < args.previews:
            top_label, top_mask, _ = items[0]
            Image.fromarray(overlay_mask(image, top_mask)).save(args.out / f"{path.stem}_top.jpg")
            if len(labeler.last_boxes):
                labeler.preview(image, labeler.last_boxes[0], args.out / f"{path.stem}_review.png")

        if args.format == "labelme":
            doc = to_labelme(path, image.shape[:2], items)
            (args.out / f"{path.stem}.json").write_text(json.dumps(doc, indent=1))
        else:
            add_cvat_image(cvat_root, idx, path, image.shape[:2], items, as_masks=args.format == "cvat-mask")
        write_sidecar(args.out / f"{path.stem}.stats.json", items)

    if args.format != "labelme":
        ET.ElementTree(cvat_root).write(args.out / "annotations.xml", encoding="utf-8", xml_declaration=True)


if __name__ == "__main__":
    main()
