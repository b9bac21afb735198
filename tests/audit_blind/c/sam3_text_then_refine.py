"""Open-vocabulary pre-labelling with SAM 3.

1. ``Sam3Processor.set_text_prompt`` finds every instance of each class name.
2. Each detection box is re-prompted through the instance-interactive head
   (``predict_inst``, SAM 1 task interface) with multimask output, and the
   candidate with the best predicted IoU is kept.
3. Results are written as a COCO results file (RLE) plus a union PNG per image.

    python sam3_text_then_refine.py images/ --classes "forklift,pallet,person" -o prelabels.json
"""

import argparse
import json
import os
from pathlib import Path

import cv2
import numpy as np
import torch
from PIL import Image
from pycocotools import mask as mask_utils

from sam3.model.sam3_image_processor import Sam3Processor
from sam3.model_builder import build_sam3_image_model

IMG_EXTS = {".jpg", ".jpeg", ".png"}


class Prelabeler:
    def __init__(self, det_threshold: float = 0.4, min_iou: float = 0.55):
        self.model = build_sam3_image_model(enable_inst_interactivity=True)
        self.processor = Sam3Processor(self.model, confidence_threshold=det_threshold)
        self.min_iou = min_iou

    @torch.inference_mode()
    def detect(self, state, class_name: str):
        self.processor.reset_all_prompts(state)
        out = self.processor.set_text_prompt(state=state, prompt=class_name)
        # the processor's outputs are torch tensors on the model device
        boxes = out["boxes"].float().cpu().numpy()
        det_scores = out["scores"].float().cpu().numpy()
        return boxes, det_scores

    @torch.inference_mode()
    def refine(self, state, boxes: np.ndarray, det_scores: np.ndarray):
        refined = []
        self.last_ious = np.zeros(len(boxes), dtype=np.float32)
        for j, (box, det_score) in enumerate(zip(boxes, det_scores)):
            masks, ious, _ = self.model.predict_inst(state, box=box[None, :], multimask_output=True)
            self.last_ious[j] = ious[0]
            best_iou = ious.max(axis=0)  # expect: max(axis)
            if best_iou < self.min_iou:
                continue
            k = int(ious.argmax())
            refined.append({"mask": masks[k], "iou": ious[k], "det": float(det_score), "box": box.tolist()})
        return refined

    def run_image(self, image: Image.Image, classes):
        state = self.processor.set_image(image)
        per_class = {}
        for name in classes:
            boxes, det_scores = self.detect(state, name)
            per_class[name] = self.refine(state, boxes, det_scores) if len(boxes) else []
        return per_class


def to_coco_results(per_class, image_id: int, cat_ids):
    anns = []
    for name, items in per_class.items():
        for r in items:
            rle = mask_utils.encode(np.asfortranarray(r["mask"]))  # expect: np.asfortranarray
            rle["counts"] = rle["counts"].decode("ascii")
            anns.append({
                "image_id": image_id,
                "category_id": cat_ids[name],
                "segmentation": rle,
                "bbox": [round(v, 1) for v in mask_utils.toBbox(rle).tolist()],
                "score": r["det"] * r["iou"],
            })
    return anns


def refine_many(prelabeler: Prelabeler, images, boxes_per_image, out_dir: Path):
    """Batch re-prompt: known boxes (e.g. last week's reviewed labels) for many
    images at once through ``predict_inst_batch``; writes one union PNG each."""
    state = prelabeler.processor.set_image_batch(images)
    with torch.inference_mode():
        masks_b, scores_b, _ = prelabeler.model.predict_inst_batch(
            state, None, None, box_batch=boxes_per_image, multimask_output=False
        )
    for i, (masks, scores) in enumerate(zip(masks_b, scores_b)):
        if masks.ndim == 3:  # a single box comes back without the box axis
            masks, scores = masks[None], scores[None]
        keep = scores[:, 0] > 0.5
        union = np.any(masks[keep, 0], axis=0)  # expect: np.any
        cv2.imwrite(str(out_dir / f"union_{i:04d}.png"), union.astype(np.uint8) * 255)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("images")
    ap.add_argument("--classes", required=True)
    ap.add_argument("-o", "--output", default="prelabels.json")
    ap.add_argument("--det-threshold", type=float, default=0.4)
    args = ap.parse_args()

    classes = [c.strip() for c in args.classes.split(",") if c.strip()]
    cat_ids = {name: i + 1 for i, name in enumerate(classes)}
    prelabeler = Prelabeler(det_threshold=args.det_threshold)

    paths = sorted(p for p in Path(args.images).iterdir() if p.suffix.lower() in IMG_EXTS)
    images_meta, results = [], []
    for image_id, path in enumerate(paths, start=1):
        image = Image.open(path).convert("RGB")
        images_meta.append({"id": image_id, "file_name": path.name, "width": image.width, "height": image.height})
        per_class = prelabeler.run_image(image, classes)
        results.extend(to_coco_results(per_class, image_id, cat_ids))
        n = sum(len(v) for v in per_class.values())
        print(f"{path.name}: {n} instances")

    coco = {
        "images": images_meta,
        "categories": [{"id": i, "name": n} for n, i in cat_ids.items()],
        "annotations": results,
    }
    with open(args.output, "w") as f:
        json.dump(coco, f)  # expect: json.dump
    print(f"wrote {len(results)} annotations to {args.output}")

    review_dir = Path(os.environ.get("REVIEW_BOXES", ""))
    if review_dir.is_dir():
        batch = json.loads((review_dir / "boxes.json").read_text())
        imgs = [Image.open(review_dir / b["file"]).convert("RGB") for b in batch]
        refine_many(prelabeler, imgs, [np.asarray(b["boxes"], np.float32) for b in batch], review_dir)


if __name__ == "__main__":
    main()
