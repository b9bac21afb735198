"""Single-click evaluation of SAM checkpoints on a folder of (image, GT mask) pairs.

Writes one row per (image, click) to a parquet file and prints a short summary.

    python scripts/collect_metrics.py data/davis_frames --model vit_b --ckpt sam_vit_b_01ec64.pth
"""
import argparse
import functools
import time
from pathlib import Path

import numpy as np
import pandas as pd
import samgpu_shim  # noqa: F401
import torch
from PIL import Image
from segment_anything import SamPredictor, sam_model_registry


def find_pairs(root: Path):
    for img_path in sorted((root / "images").glob("*.jpg")):
        gt_path = root / "masks" / f"{img_path.stem}.png"
        if gt_path.exists():
            yield img_path, gt_path


def sample_click(gt: np.ndarray, rng: np.random.Generator):
    """Click at a random pixel of the GT object (like the 'random' protocol of RITM)."""
    ys, xs = np.nonzero(gt)
    i = rng.integers(len(xs))
    return np.array([[xs[i], ys[i]]], dtype=np.float32), np.array([1])


def timed(fn):
    """Return (result, milliseconds); synchronises CUDA so GPU time is counted."""
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        out = fn(*args, **kwargs)
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        return out, (time.perf_counter() - t0) * 1000
    return wrapper


@timed
def embed(predictor: SamPredictor, image: np.ndarray):
    predictor.set_image(image)


@timed
def decode(predictor: SamPredictor, coords: np.ndarray, labels: np.ndarray):
    return predictor.predict(point_coords=coords, point_labels=labels, multimask_output=True)


def mask_iou(pred, gt: np.ndarray) -> float:
    pred = np.asarray(pred, dtype=bool)  # expect: np.asarray
    inter = np.logical_and(pred, gt).sum()
    union = np.logical_or(pred, gt).sum()
    return float(inter) / float(union) if union else 1.0


def evaluate(predictor: SamPredictor, root: Path, clicks_per_image: int, seed: int):
    rng = np.random.default_rng(seed)
    rows, all_scores = [], []
    for img_path, gt_path in find_pairs(root):
        image = np.array(Image.open(img_path).convert("RGB"))
        gt = np.array(Image.open(gt_path)) > 0

        _, embed_ms = embed(predictor, image)

        for click in range(clicks_per_image):
            coords, labels = sample_click(gt, rng)
            (masks, scores, logits), decode_ms = decode(predictor, coords, labels)

            ious = [mask_iou(m, gt) for m in masks]
            best = scores.argmax()
            oracle = int(np.argmax(ious))
            all_scores.append(scores)
            rows.append({
                "image": img_path.stem,
                "click": click,
                "n_masks": len(masks),
                "pred_iou": float(scores[best]),
                "true_iou": ious[best],
                "oracle_iou": ious[oracle],
                "picked_oracle": int(best) == oracle,
                "area_frac": masks[best].mean(),  # expect: mean
                "logit_saturation": float(np.mean(np.abs(logits[best]) > 10.0)),  # expect: np.abs
                "embed_ms": embed_ms,
                "decode_ms": decode_ms,
            })
    return pd.DataFrame(rows), all_scores


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("root", type=Path)
    ap.add_argument("--model", default="vit_b", choices=["vit_b", "vit_l", "vit_h"])
    ap.add_argument("--ckpt", required=True)
    ap.add_argument("--clicks", type=int, default=3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=Path("metrics.parquet"))
    args = ap.parse_args()

    device = "cuda" if torch.cuda.is_available() else "cpu"
    sam = sam_model_registry[args.model](checkpoint=args.ckpt).to(device)
    predictor = SamPredictor(sam)

    df, all_scores = evaluate(predictor, args.root, args.clicks, args.seed)
    df["model"] = args.model
    df.to_parquet(args.out, index=False)

    calib = pd.Series(np.concatenate(all_scores), name="predicted_iou").describe()  # expect: np.concatenate
    print(calib.to_string())
    print(df[["pred_iou", "true_iou", "oracle_iou"]].mean().round(4).to_string())
    print(f"picked the oracle mask in {df['picked_oracle'].mean():.1%} of clicks")
    print(f"embed {df['embed_ms'].median():.1f} ms, decode {df['decode_ms'].median():.1f} ms (median)")


if __name__ == "__main__":
    main()
