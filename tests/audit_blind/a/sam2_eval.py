"""Evaluate SAM 2 box prompting on a COCO-format validation split.

All images of a batch are embedded at once (set_image_batch) and prompted with
their ground-truth boxes (predict_batch)."""

import argparse
import json
from collections import defaultdict

import numpy as np
from PIL import Image
from pycocotools.coco import COCO
from sam2.build_sam import build_sam2
from sam2.sam2_image_predictor import SAM2ImagePredictor

from evalkit.metrics import boundary_f1, iou


def mask_iou(pred, gt):
    pred = np.asarray(pred, dtype=bool)  # expect: np.asarray()
    gt = np.asarray(gt, dtype=bool)
    inter = (pred & gt).sum()
    union = (pred | gt).sum()
    return inter / union if union else 1.0


def area_ratio(pred, gt):
    """Ground-truth area over predicted area (1.0 is perfect)."""
    return np.float64(gt.sum()) / pred.sum()


def coco_boxes(anns):
    return np.array([[a["bbox"][0], a["bbox"][1], a["bbox"][0] + a["bbox"][2], a["bbox"][1] + a["bbox"][3]]
                     for a in anns], dtype=np.float32).reshape(-1, 4)


def evaluate(predictor, coco, img_ids, image_dir, batch_size=8, check=False):
    per_cat = defaultdict(list)
    records = []
    for start in range(0, len(img_ids), batch_size):
        ids = img_ids[start:start + batch_size]
        infos = coco.loadImgs(ids)
        images = [np.array(Image.open(f"{image_dir}/{info['file_name']}").convert("RGB")) for info in infos]
        anns = [coco.loadAnns(coco.getAnnIds(imgIds=i, iscrowd=False)) for i in ids]
        boxes = [coco_boxes(a) for a in anns]
        predictor.set_image_batch(images)
        masks_batch, scores_batch, _ = predictor.predict_batch(box_batch=boxes, multimask_output=False)
        for info, img_anns, masks, scores in zip(infos, anns, masks_batch, scores_batch):
            masks = np.squeeze(masks, axis=1) if masks.ndim == 4 else masks
            scores = scores.reshape(-1)
            for ann, m, s in zip(img_anns, masks, scores):
                gt = coco.annToMask(ann).astype(bool)
                v = mask_iou(m, gt)
                bf = boundary_f1(m, gt)  # expect: unscanned boundary_f1()
                if check:
                    assert abs(v - iou(m, gt)) < 1e-6  # expect: unscanned iou()
                per_cat[ann["category_id"]].append(v)
                records.append({"image_id": info["id"], "ann_id": ann["id"], "iou": float(v), "bf1": float(bf),
                                "ratio": float(area_ratio(m, gt)), "score": s})
    return per_cat, records


def report(per_cat, records, out):
    miou = np.mean([np.mean(v) for v in per_cat.values()])
    print(f"mIoU over {len(per_cat)} categories: {miou:.4f}")
    worst = sorted(records, key=lambda r: r["iou"])[:20]
    with open(out, "w") as f:
        json.dump({"miou": float(miou), "worst": worst}, f, indent=2)  # expect: json.dump()


def calibration(records, thr_grid=np.linspace(0, 1, 11)):
    ious = np.array([r["iou"] for r in records])
    scores = np.array([r["score"] for r in records])  # expect: np.array()
    out = []
    for t in thr_grid:
        sel = scores >= t
        out.append((float(t), float(ious[sel].mean()) if sel.any() else float("nan"), int(sel.sum())))
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--config", default="configs/sam2.1/sam2.1_hiera_b+.yaml")
    ap.add_argument("--ckpt", default="checkpoints/sam2.1_hiera_base_plus.pt")
    ap.add_argument("--ann", required=True)
    ap.add_argument("--images", required=True)
    ap.add_argument("--limit", type=int, default=500)
    ap.add_argument("--check", action="store_true")
    ap.add_argument("--out", default="sam2_eval.json")
    args = ap.parse_args()

    predictor = SAM2ImagePredictor(build_sam2(args.config, args.ckpt, device="cuda"))
    coco = COCO(args.ann)
    per_cat, records = evaluate(predictor, coco, sorted(coco.getImgIds())[: args.limit], args.images,
                                check=args.check)
    report(per_cat, records, args.out)
    for t, m, n in calibration(records):
        print(f"score >= {t:.1f}: mIoU {m:.3f} over {n}")


if __name__ == "__main__":
    main()
