"""Slice-by-slice 3D propagation of a single seed annotation with MedSAM.

A radiologist draws the lesion on one axial slice (seed NIfTI, one slice
non-zero).  We prompt MedSAM on the neighbouring slice with the box of the
previous slice's mask and walk up and down until the mask vanishes.

    python med3d_propagate.py ct.nii.gz seed.nii.gz -o pred.nii.gz --ref ref.nii.gz
"""
from __future__ import annotations

import argparse
import sys
from typing import Callable, Optional, Tuple

import numpy as np
import SimpleITK as sitk
import torch
from scipy import ndimage
from skimage import measure
from segment_anything import SamPredictor, sam_model_registry

WINDOWS = {"abdomen": (40, 400), "lung": (-600, 1500), "bone": (300, 1500)}


def ct_to_rgb(slice_hu: np.ndarray, level: float, width: float) -> np.ndarray:
    lo, hi = level - width / 2, level + width / 2
    img = np.clip((slice_hu - lo) / (hi - lo), 0, 1)
    img = (img * 255).astype(np.uint8)
    return np.repeat(img[..., None], 3, axis=-1)


def bbox_from_mask(mask2d, pad: int = 4) -> Optional[np.ndarray]:
    rows = np.any(mask2d, axis=1)  # expect: np.any
    cols = np.any(mask2d, axis=0)  # expect: np.any
    if not rows.any():
        return None
    y0, y1 = np.where(rows)[0][[0, -1]]
    x0, x1 = np.where(cols)[0][[0, -1]]
    h, w = len(rows), len(cols)
    return np.array([max(x0 - pad, 0), max(y0 - pad, 0), min(x1 + pad, w - 1), min(y1 + pad, h - 1)],
                    dtype=np.float32)


def keep_largest_cc(mask) -> np.ndarray:
    lab = measure.label(mask, connectivity=2)  # expect: skimage.measure.label
    if lab.max() == 0:
        return lab > 0
    largest = np.argmax(np.bincount(lab.ravel())[1:]) + 1
    return lab == largest


def logit_entropy(low_res_logits) -> float:
    """Mean binary entropy of the low-res logits: our slice-level QC signal."""
    p = 1.0 / (1.0 + np.exp(-low_res_logits))  # expect: np.exp
    p = np.clip(p, 1e-6, 1 - 1e-6)
    return float(np.mean(-(p * np.log(p) + (1 - p) * np.log(1 - p))))


def make_stepper(predictor: SamPredictor, vol: np.ndarray, window: Tuple[float, float],
                 min_area: int, use_cc: bool, fill_holes: bool = False) -> Callable:
    """Closure over the volume: one call segments slice z given the previous mask."""
    level, width = window
    cache = {}

    def step(z: int, prev_mask, prev_logits=None):
        box = bbox_from_mask(prev_mask)
        if box is None:
            return None, None, None
        if z not in cache:
            cache.clear()  # embeddings of one slice only, ViT-B is 0.1 s
            predictor.set_image(ct_to_rgb(vol[z], level, width))
            cache[z] = True
        masks, scores, logits = predictor.predict(
            box=box[None, :],
            mask_input=prev_logits,
            multimask_output=False,
        )
        m = masks[0]
        if m.sum() < min_area or scores[0] < 0.5:
            return None, None, None
        if fill_holes:
            m = ndimage.binary_fill_holes(m)  # expect: scipy.ndimage.binary_fill_holes
        if use_cc:
            m = keep_largest_cc(m)
        return m, logits, float(scores[0])

    return step


def propagate(step: Callable, vol: np.ndarray, seed_z: int, seed_mask: np.ndarray,
              direction: int, out: np.ndarray, qc: list, feed_logits: bool = False) -> int:
    z, prev, prev_logits = seed_z + direction, seed_mask, None
    n = 0
    while 0 <= z < vol.shape[0]:
        m, logits, score = step(z, prev, prev_logits if feed_logits else None)
        if m is None:
            break
        out[z] = m  # expect: arr[z] = mask
        qc.append({"z": z, "score": score, "entropy": logit_entropy(logits[0])})
        prev, prev_logits = m, logits
        z += direction
        n += 1
    return n


def dice(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.astype(bool), b.astype(bool)
    denom = a.sum() + b.sum()
    return 1.0 if denom == 0 else 2.0 * (a & b).sum() / denom


def main(argv=None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("ct")
    ap.add_argument("seed")
    ap.add_argument("-o", "--out", default="pred.nii.gz")
    ap.add_argument("--ckpt", default="work_dir/MedSAM/medsam_vit_b.pth")
    ap.add_argument("--window", choices=sorted(WINDOWS), default="abdomen")
    ap.add_argument("--min-area", type=int, default=15)
    ap.add_argument("--no-cc", action="store_true")
    ap.add_argument("--fill-holes", action="store_true")
    ap.add_argument("--feed-logits", action="store_true")
    ap.add_argument("--ref", default=None)
    args = ap.parse_args(argv)

    ct = sitk.ReadImage(args.ct)
    vol = sitk.GetArrayFromImage(ct).astype(np.float32)  # (z, y, x)
    seed = sitk.GetArrayFromImage(sitk.ReadImage(args.seed)) > 0
    seed_slices = np.flatnonzero(seed.reshape(seed.shape[0], -1).any(axis=1))
    if seed_slices.size != 1:
        print(f"expected exactly one annotated slice, got {seed_slices.size}", file=sys.stderr)
        return 2
    seed_z = int(seed_slices[0])

    device = "cuda" if torch.cuda.is_available() else "cpu"
    medsam = sam_model_registry["vit_b"](checkpoint=args.ckpt).to(device).eval()
    step = make_stepper(SamPredictor(medsam), vol, WINDOWS[args.window], args.min_area,
                        use_cc=not args.no_cc, fill_holes=args.fill_holes)

    out = np.zeros(vol.shape, dtype=np.uint8)
    out[seed_z] = seed[seed_z]
    qc: list = []
    up = propagate(step, vol, seed_z, seed[seed_z], +1, out, qc, args.feed_logits)
    down = propagate(step, vol, seed_z, seed[seed_z], -1, out, qc, args.feed_logits)
    print(f"seed z={seed_z}: +{up} / -{down} slices")

    spacing = np.array(ct.GetSpacing())
    print(f"volume: {out.sum() * spacing.prod() / 1000.0:.2f} ml")
    if qc:
        worst = max(qc, key=lambda r: r["entropy"])
        print("least certain slice: z={z} score={score:.3f} entropy={entropy:.3f}".format(**worst))

    if args.ref:
        ref = sitk.GetArrayFromImage(sitk.ReadImage(args.ref)) > 0
        print(f"Dice vs reference: {dice(out, ref):.4f}")

    seg = sitk.GetImageFromArray(out)
    seg.CopyInformation(ct)
    sitk.WriteImage(seg, args.out, useCompression=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
