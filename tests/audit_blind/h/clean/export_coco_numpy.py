"""Export SAM masks to COCO json for the legacy evaluation server.

This script predates the GPU shim; the CPU post-processing below was kept as-is and
the predictor calls were switched to `as_numpy=True` (the eval server wants exact
upstream behaviour anyway).
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import cv2
import numpy as np
import samgpu_shim  # noqa: F401
import torch
from pycocotools import mask as mask_utils
from segment_anything import SamAutomaticMaskGenerator, SamPredictor, sam_model_registry


def rle(mask: np.ndarray) -> dict:
    r = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    r["counts"] = r["counts"].decode("ascii")
    return r


def prompted(predictor: SamPredictor, image: np.ndarray, boxes: np.ndarray, image_id: int):
    predictor.set_image(image)
    out = []
    for box in boxes:
        masks, scores, logits = predictor.predict(box=box, multimask_output=True, as_numpy=True)
        k = int(np.argmax(scores))
        m = masks[k]
        # one refinement round with the best low-res logits, the way the paper's demo does it
        masks2, scores2, _ = predictor.predict(box=box, mask_input=logits[k][None], multimask_output=False, as_numpy=True)
        if scores2[0] > scores[k]:
            m = masks2[0]
        ys, xs = np.where(m)
        out.append({
            "image_id": image_id,
            "category_id": 1,
            "segmentation": rle(m),
            "bbox": [int(xs.min()), int(ys.min()), int(xs.max() - xs.min() + 1), int(ys.max() - ys.min() + 1)] if xs.size else [0, 0, 0, 0],
            "score": float(max(scores[k], scores2[0])),
            "area": int(m.sum()),
        })
    return out


@torch.inference_mode()
def batched_boxes(predictor: SamPredictor, image: np.ndarray, boxes: np.ndarray, image_id: int):
    """Same thing for images with hundreds of boxes: one decoder call via predict_torch."""
    predictor.set_image(image)
    tb = predictor.transform.apply_boxes_torch(torch.as_tensor(boxes, device=predictor.device), image.shape[:2])
    masks, iou_pred, _ = predictor.predict_torch(point_coords=None, point_labels=None, boxes=tb, multimask_output=False)
    masks_np = masks[:, 0].cpu().numpy()
    iou_np = iou_pred[:, 0].float().cpu().numpy()
    return [
        {"image_id": image_id, "category_id": 1, "segmentation": rle(m), "score": float(s), "area": int(m.sum())}
        for m, s in zip(masks_np, iou_np)
    ]


def everything(generator: SamAutomaticMaskGenerator, image: np.ndarray, image_id: int):
    anns = generator.generate(image)
    return [
        {
            "image_id": image_id,
            "category_id": 1,
            "segmentation": rle(a["segmentation"]),
            "bbox": [int(v) for v in a["bbox"]],
            "score": float(a["predicted_iou"]),
            "area": int(a["area"]),
        }
        for a in anns
        if a["stability_score"] > 0.92
    ]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("images_json")
    ap.add_argument("out_json")
    ap.add_argument("--ckpt", default="weights/sam_vit_h_4b8939.pth")
    ap.add_argument("--mode", choices=["prompted", "batched", "everything"], default="prompted")
    args = ap.parse_args()

    sam = sam_model_registry["vit_h"](checkpoint=args.ckpt).to("cuda")
    predictor = SamPredictor(sam)
    generator = SamAutomaticMaskGenerator(sam, points_per_side=32, pred_iou_thresh=0.86)
    results = []
    for entry in json.loads(Path(args.images_json).read_text()):
        image = cv2.cvtColor(cv2.imread(entry["file"]), cv2.COLOR_BGR2RGB)
        boxes = np.asarray(entry.get("boxes", []), np.float32).reshape(-1, 4)
        if args.mode == "everything":
            results += everything(generator, image, entry["id"])
        elif args.mode == "batched" and len(boxes):
            results += batched_boxes(predictor, image, boxes, entry["id"])
        else:
            results += prompted(predictor, image, boxes, entry["id"])
    Path(args.out_json).write_text(json.dumps(results))


if __name__ == "__main__":
    main()
