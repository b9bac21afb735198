"""COCO exporter of the nightly batch job. Predictor results are converted once,
where they come out, so the rest of the file is plain numpy."""

import json

import numpy as np
import torch
from pycocotools import mask as mask_utils


def to_numpy(x):
    if isinstance(x, torch.Tensor):
        return x.detach().cpu().numpy()
    return np.asarray(x)


def encode(mask):
    m = to_numpy(mask)
    rle = mask_utils.encode(np.asfortranarray(m.astype(np.uint8)))
    rle["counts"] = rle["counts"].decode("ascii")
    return rle


def mask_stats(mask):
    m = mask.cpu().numpy() if torch.is_tensor(mask) else mask
    return {"area": int(np.count_nonzero(m)), "fill": float(m.mean())}


def export(predictor, images, prompts, out_path):
    anns, img_entries = [], []
    ann_id = 1
    for image_id, (image, boxes) in enumerate(zip(images, prompts), start=1):
        predictor.set_image(image)
        h, w = image.shape[:2]
        img_entries.append({"id": image_id, "height": h, "width": w, "file_name": f"{image_id:06d}.jpg"})
        for box in boxes:
            masks, scores, _ = predictor.predict(box=np.asarray(box), multimask_output=False)
            if isinstance(masks, torch.Tensor):
                masks = masks.cpu().numpy()
                scores = scores.cpu().numpy()
            m = masks[0]
            ys, xs = np.where(m)
            if len(xs) == 0:
                continue
            anns.append({
                "id": ann_id, "image_id": image_id, "category_id": 1,
                "segmentation": encode(m), "area": int(m.sum()),
                "bbox": [int(xs.min()), int(ys.min()), int(xs.max() - xs.min() + 1), int(ys.max() - ys.min() + 1)],
                "score": float(scores[0]), "iscrowd": 0,
            })
            ann_id += 1
    with open(out_path, "w") as f:
        json.dump({"images": img_entries, "annotations": anns,
                   "categories": [{"id": 1, "name": "object"}]}, f)


def export_pinned(predictor, image, boxes):
    predictor.set_image(image)
    out = []
    for box in boxes:
        masks, scores, logits = predictor.predict(box=box, multimask_output=True, as_numpy=True)
        best = np.argmax(scores)
        out.append({"rle": encode(masks[best]), "score": float(scores[best]),
                    "logits": logits[best].astype(np.float16), **mask_stats(masks[best])})
    return out


def export_tensors(predictor, image, box):
    """Direct tensor path: everything stays in torch until the final conversion."""
    predictor.set_image(image)
    masks, scores, _ = predictor.predict(box=box, multimask_output=True)
    k = int(scores.argmax())
    m = masks[k]
    area = int(m.sum())
    stats = mask_stats(m)
    return {"rle": encode(m), "score": scores[k].item(), "area": area, **stats}
