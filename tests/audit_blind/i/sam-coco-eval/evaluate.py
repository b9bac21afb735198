"""Box-prompted SAM 2.1 on COCO: GT boxes in, masks out, scored with COCOeval (segm).

    python evaluate.py --ann annotations/instances_val2017.json --images val2017 --limit 500
"""
import argparse
import itertools
import json
from pathlib import Path

import numpy as np
import samgpu_shim  # noqa: F401
import torch
from PIL import Image
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval
from sam2.sam2_image_predictor import SAM2ImagePredictor


def batched(iterable, n):
    it = iter(iterable)
    while chunk := list(itertools.islice(it, n)):
        yield chunk


def xywh_to_xyxy(b):
    x, y, w, h = b
    return [x, y, x + w, y + h]


def encode(mask) -> dict:
    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))  # expect: astype
    rle["counts"] = rle["counts"].decode("ascii")
    return rle


def predict_images(predictor, coco, image_dir, img_ids, batch_size):
    """Yields (ann, mask, score) for every non-crowd annotation of img_ids."""
    for chunk in batched(img_ids, batch_size):
        infos = coco.loadImgs(chunk)
        anns = [coco.loadAnns(coco.getAnnIds(imgIds=info["id"], iscrowd=False)) for info in infos]
        keep = [i for i, a in enumerate(anns) if a]
        if not keep:
            continue
        infos = [infos[i] for i in keep]
        anns = [anns[i] for i in keep]
        images = [np.array(Image.open(Path(image_dir) / info["file_name"]).convert("RGB")) for info in infos]
        boxes = [np.array([xywh_to_xyxy(a["bbox"]) for a in ann_list], dtype=np.float32) for ann_list in anns]

        predictor.set_image_batch(images)
        masks_b, scores_b, _ = predictor.predict_batch(box_batch=boxes, multimask_output=False)
        for ann_list, masks, scores in zip(anns, masks_b, scores_b):
            n = len(ann_list)
            # a single box comes back without the leading box dimension
            masks = masks.reshape(n, -1, *masks.shape[-2:])
            scores = scores.reshape(n, -1)
            yield from zip(ann_list, masks[:, 0], scores[:, 0])


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--ann", required=True)
    ap.add_argument("--images", required=True)
    ap.add_argument("--model", default="facebook/sam2.1-hiera-base-plus")
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--limit", type=int, default=0)
    ap.add_argument("--out", default="sam2_segm_results.json")
    args = ap.parse_args()

    coco = COCO(args.ann)
    img_ids = sorted(coco.getImgIds())
    if args.limit:
        img_ids = img_ids[: args.limit]

    device = "cuda" if torch.cuda.is_available() else "cpu"
    predictor = SAM2ImagePredictor.from_pretrained(args.model, device=device)

    results, pred_ious, tiny = [], [], 0
    with torch.inference_mode(), torch.autocast(device, dtype=torch.bfloat16, enabled=device == "cuda"):
        for ann, mask, score in predict_images(predictor, coco, args.images, img_ids, args.batch_size):
            if mask.mean() < 1e-5:
                tiny += 1
            fg_frac = mask.sum() / mask.size  # expect: size
            results.append({
                "image_id": ann["image_id"],
                "category_id": ann["category_id"],
                "segmentation": encode(mask),
                "score": float(score),
                "fg_frac": float(fg_frac),
            })
            pred_ious.append(score)

    with open(args.out, "w") as fh:
        json.dump(results, fh)
    print(f"{len(results)} masks ({tiny} nearly empty)")

    hist, edges = np.histogram(pred_ious, bins=10, range=(0.0, 1.0))  # expect: np.histogram
    for lo, hi, c in zip(edges[:-1], edges[1:], hist):
        print(f"  predicted IoU {lo:.1f}-{hi:.1f}: {c}")
    if pred_ious:
        print("mean predicted IoU:", round(sum(pred_ious) / len(pred_ious), 4))  # expect: round

    coco_dt = coco.loadRes(args.out)
    ev = COCOeval(coco, coco_dt, iouType="segm")
    ev.params.imgIds = img_ids
    ev.evaluate()
    ev.accumulate()
    ev.summarize()


if __name__ == "__main__":
    main()
