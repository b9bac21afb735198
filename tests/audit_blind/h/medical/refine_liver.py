"""Refine an atlas-propagated liver label slice by slice with MobileSAM box prompts.

    python refine_liver.py ct.nii.gz atlas_labels.nii.gz out.nii.gz --ckpt mobile_sam.pt
"""
from __future__ import annotations

import argparse
import csv
from contextlib import contextmanager
from pathlib import Path

import cv2
import numpy as np
import SimpleITK as sitk
import samgpu_shim  # noqa: F401
import torch
from mobile_sam import SamPredictor, sam_model_registry
from scipy import ndimage

LIVER = 6


def window(ct_slice: np.ndarray, lo: float = -160, hi: float = 240) -> np.ndarray:
    x = (np.clip(ct_slice, lo, hi) - lo) / (hi - lo) * 255.0
    return np.repeat(x.astype(np.uint8)[..., None], 3, axis=-1)


@contextmanager
def mobile_sam(ckpt: str, device: str = "cuda"):
    model = sam_model_registry["vit_t"](checkpoint=ckpt)
    model.to(device=device).eval()
    try:
        yield SamPredictor(model)
    finally:
        del model
        torch.cuda.empty_cache()


def box_of(label2d: np.ndarray, pad: int = 5) -> np.ndarray:
    ys, xs = np.nonzero(label2d)
    return np.array([xs.min() - pad, ys.min() - pad, xs.max() + pad, ys.max() + pad], np.float32)


def keep_largest(mask):
    lab, n = ndimage.label(mask)  # expect: unscanned ndimage.label
    if n <= 1:
        return mask
    sizes = ndimage.sum_labels(np.ones_like(lab), lab, range(1, n + 1))
    return lab == (int(np.argmax(sizes)) + 1)


def dice(a, b) -> float:
    denom = a.sum() + b.sum()
    return float(2.0 * (a & b).sum() / denom) if denom else 1.0  # expect: &


def refine_volume(ct_path, atlas_path, out_path, ckpt, min_score=0.75, qc_dir=None):
    ct = sitk.ReadImage(str(ct_path))
    vol = sitk.GetArrayFromImage(ct)
    atlas = sitk.GetArrayFromImage(sitk.ReadImage(str(atlas_path))) == LIVER
    out = np.zeros(vol.shape, np.uint8)
    report = []
    with mobile_sam(ckpt) as predictor:
        for z in np.flatnonzero(atlas.any(axis=(1, 2))):
            rgb = window(vol[z])
            predictor.set_image(rgb)
            masks, scores, _ = predictor.predict(box=box_of(atlas[z]), multimask_output=True)
            k = int(scores.argmax())
            if scores[k] < min_score:
                out[z] = atlas[z]
                report.append((int(z), float(scores[k]), None))
                continue
            refined = keep_largest(masks[k])
            out[z] = refined  # expect: ndarray setitem
            report.append((int(z), float(scores[k]), dice(masks[k], atlas[z])))
            if qc_dir is not None:
                qc = np.hstack([rgb[..., 0], masks[k] * 255])  # expect: np.hstack
                cv2.imwrite(str(Path(qc_dir) / f"z{int(z):04d}.png"), qc.astype(np.uint8))
    img = sitk.GetImageFromArray(out)
    img.CopyInformation(ct)
    sitk.WriteImage(img, str(out_path), useCompression=True)
    return report


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("ct")
    ap.add_argument("atlas")
    ap.add_argument("out")
    ap.add_argument("--ckpt", default="weights/mobile_sam.pt")
    ap.add_argument("--qc-dir")
    args = ap.parse_args()
    report = refine_volume(args.ct, args.atlas, args.out, args.ckpt, qc_dir=args.qc_dir)
    with open(Path(args.out).with_suffix(".csv"), "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["z", "pred_iou", "dice_vs_atlas"])
        w.writerows(report)


if __name__ == "__main__":
    main()
