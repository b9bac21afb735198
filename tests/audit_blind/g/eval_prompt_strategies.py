"""Compare prompt strategies for SAM ViT-H/B vs EfficientViT-SAM on binary-mask datasets
(Kvasir-SEG, ISIC, ...):

    center  : one positive click at the deepest point of the object (max of the distance transform)
    box     : gt box with 10% jitter
    oracle3 : center click, best of the 3 multimask outputs by IoU with gt
    click3  : 3 clicks, each next click in the largest error region (RITM protocol)

    python eval_prompt_strategies.py --data data/kvasir --models vit_h evit_xl1 --out runs/prompts
"""
import argparse
import glob
import json
import os
from collections import defaultdict

import cv2
import numpy as np
import torch
from scipy import ndimage
from tqdm import tqdm

from efficientvit.models.efficientvit.sam import EfficientViTSamPredictor
from efficientvit.sam_model_zoo import create_efficientvit_sam_model
from segment_anything import SamPredictor, sam_model_registry

SAM_CKPTS = {"vit_h": "ckpt/sam_vit_h_4b8939.pth", "vit_b": "ckpt/sam_vit_b_01ec64.pth"}
EVIT = {
    "evit_l0": ("efficientvit-sam-l0", "ckpt/efficientvit_sam_l0.pt"),
    "evit_xl1": ("efficientvit-sam-xl1", "ckpt/efficientvit_sam_xl1.pt"),
}
STRATEGIES = ["center", "box", "oracle3", "click3"]


def load_model(name):
    if name in EVIT:
        arch, ckpt = EVIT[name]
        model = create_efficientvit_sam_model(name=arch, pretrained=True, weight_url=ckpt).cuda().eval()
        return EfficientViTSamPredictor(model)
    sam = sam_model_registry[name](checkpoint=SAM_CKPTS[name]).cuda().eval()
    return SamPredictor(sam)


def iou(pred, gt):
    inter = np.logical_and(pred, gt).sum()  # expect: np.logical_and
    union = np.logical_or(pred, gt).sum()  # expect: np.logical_or
    return float(inter) / max(float(union), 1.0)


def center_click(gt):
    dist = ndimage.distance_transform_edt(gt)
    y, x = np.unravel_index(np.argmax(dist), dist.shape)
    return np.array([[x, y]], dtype=np.float32)


def gt_box(gt, jitter=0.0, rng=None):
    ys, xs = np.where(gt)
    x0, y0, x1, y1 = xs.min(), ys.min(), xs.max() + 1, ys.max() + 1
    if jitter and rng is not None:
        bw, bh = x1 - x0, y1 - y0
        x0, x1 = x0 + rng.normal(0, jitter) * bw, x1 + rng.normal(0, jitter) * bw
        y0, y1 = y0 + rng.normal(0, jitter) * bh, y1 + rng.normal(0, jitter) * bh
    return np.array([x0, y0, x1, y1], dtype=np.float32)


def next_click(pred_mask, gt):
    """Click in the interior of the largest error region."""
    err = np.logical_xor(pred_mask, gt)  # expect: np.logical_xor
    fn = np.logical_and(err, gt)
    fp = np.logical_and(err, ~gt)
    region, positive = (fn, 1) if fn.sum() >= fp.sum() else (fp, 0)
    dist = ndimage.distance_transform_edt(np.pad(region, 1))[1:-1, 1:-1]
    y, x = np.unravel_index(np.argmax(dist), dist.shape)
    return [float(x), float(y)], positive


def run_strategy(predictor, gt, strategy, rng):
    if strategy == "center":
        masks, scores, _ = predictor.predict(
            point_coords=center_click(gt), point_labels=np.array([1]), multimask_output=True
        )
        return masks[scores.argmax()], scores.max()
    if strategy == "box":
        masks, scores, _ = predictor.predict(box=gt_box(gt, jitter=0.1, rng=rng), multimask_output=False)
        return masks[0], scores[0]
    if strategy == "oracle3":
        masks, scores, _ = predictor.predict(
            point_coords=center_click(gt), point_labels=np.array([1]), multimask_output=True
        )
        ious = [iou(m, gt) for m in masks]
        k = int(np.argmax(ious))
        return masks[k], scores[k]
    if strategy == "click3":
        pts, lbls = [center_click(gt)[0].tolist()], [1]
        prev = None
        for _ in range(3):
            masks, scores, logits = predictor.predict(
                point_coords=np.array(pts, dtype=np.float32),
                point_labels=np.array(lbls),
                mask_input=prev,
                multimask_output=False,
            )
            prev = logits
            p, lab = next_click(masks[0], gt)
            pts.append(p)
            lbls.append(lab)
        return masks[0], scores[0]
    raise ValueError(f"unknown strategy {strategy}")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", required=True, help="folder with images/ and masks/")
    ap.add_argument("--models", nargs="+", default=["vit_h"])
    ap.add_argument("--strategies", nargs="+", default=STRATEGIES)
    ap.add_argument("--out", default="runs/prompts")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--save-preds", action="store_true")
    ap.add_argument("--rank-analysis", action="store_true")
    ap.add_argument("--check-numpy", action="store_true")
    args = ap.parse_args()

    os.makedirs(args.out, exist_ok=True)
    img_paths = sorted(glob.glob(os.path.join(args.data, "images", "*.jpg")))
    pairs = [(p, os.path.join(args.data, "masks", os.path.basename(p)[:-4] + ".png")) for p in img_paths]
    pairs = [(i, m) for i, m in pairs if os.path.exists(m)]

    summary = {}
    for model_name in args.models:
        rng = np.random.default_rng(args.seed)
        predictor = load_model(model_name)
        rows = defaultdict(list)
        rank_ious = defaultdict(list)
        for img_path, gt_path in tqdm(pairs, desc=model_name):
            image = cv2.cvtColor(cv2.imread(img_path), cv2.COLOR_BGR2RGB)
            gt = cv2.imread(gt_path, cv2.IMREAD_GRAYSCALE) > 127
            if gt.sum() < 16:
                continue
            name = os.path.splitext(os.path.basename(img_path))[0]
            predictor.set_image(image)

            for strategy in args.strategies:
                mask, score = run_strategy(predictor, gt, strategy, rng)
                rows[strategy].append({
                    "image": name,
                    "iou": iou(mask, gt),
                    "score": round(score, 4),  # expect: round
                    "area_frac": float(mask.mean()),  # expect: bool mean
                })
                if args.save_preds:
                    out_png = os.path.join(args.out, model_name, strategy, name + ".png")
                    os.makedirs(os.path.dirname(out_png), exist_ok=True)
                    cv2.imwrite(out_png, np.uint8(mask) * 255)  # expect: np.uint8

            if args.rank_analysis:
                masks, scores, _ = predictor.predict(
                    point_coords=center_click(gt), point_labels=np.array([1]), multimask_output=True
                )
                for rank, j in enumerate(scores.argsort()[::-1]):  # expect: argsort()[::-1]
                    rank_ious[rank].append(iou(masks[j], gt))
                if args.save_preds:
                    stack = masks.transpose(1, 2, 0)  # expect: t.transpose
                    cv2.imwrite(os.path.join(args.out, model_name, name + "_multi.png"), stack.astype(np.uint8) * 255)

            if args.check_numpy:
                m_np, s_np, _ = predictor.predict(box=gt_box(gt), multimask_output=False, as_numpy=True)
                assert m_np.dtype == bool and m_np.shape[-2:] == gt.shape
                if np.logical_and(m_np[0], gt).sum() == 0:
                    print(f"[warn] {name}: numpy path mask misses gt entirely (score {s_np[0]:.3f})")

        summary[model_name] = {
            s: {"mIoU": float(np.mean([r["iou"] for r in v])), "n": len(v)} for s, v in rows.items()
        }
        if rank_ious:
            summary[model_name]["rank_mIoU"] = {str(r): float(np.mean(v)) for r, v in sorted(rank_ious.items())}
        with open(os.path.join(args.out, f"{model_name}_per_image.json"), "w") as f:
            json.dump(rows, f, indent=1)
        del predictor
        torch.cuda.empty_cache()

    print(json.dumps(summary, indent=2))
    with open(os.path.join(args.out, "summary.json"), "w") as f:
        json.dump(summary, f, indent=2)


if __name__ == "__main__":
    main()
