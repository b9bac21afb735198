"""Box-seeded slice-by-slice organ segmentation for CT volumes (NIfTI in, NIfTI
+ RT-STRUCT + QC out).  Configured with Hydra:

    python nifti_organ_pipeline.py case=/data/ct/liver_017.nii.gz \
        seed.z=212 seed.box="[140,180,310,330]" model.kind=medsam
"""

from __future__ import annotations

import itertools
import logging
import os
from dataclasses import dataclass
from typing import Any, Iterator, Optional

import cv2
import hydra
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import nibabel as nib
import numpy as np
import pandas as pd
import torch
from omegaconf import DictConfig
from rt_utils import RTStructBuilder

log = logging.getLogger("organseg")


def build_predictor(kind: str, checkpoint: str, device: str = "cuda"):
    from segment_anything import SamPredictor, sam_model_registry

    arch = {"medsam": "vit_b", "sam_b": "vit_b", "sam_h": "vit_h"}[kind]
    model = sam_model_registry[arch](checkpoint=checkpoint)
    return SamPredictor(model.to(device).eval())


def ct_window(slice2d: np.ndarray, level: float = 40.0, width: float = 400.0) -> np.ndarray:
    lo, hi = level - width / 2, level + width / 2
    x = (np.clip(slice2d, lo, hi) - lo) / (hi - lo)
    return (x * 255).astype(np.uint8)


def to_rgb(slice2d: np.ndarray) -> np.ndarray:
    g = ct_window(np.rot90(slice2d))
    return np.repeat(g[:, :, None], 3, axis=2)


def sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))  # expect: np.exp


def bbox_from_mask(mask, pad: int) -> np.ndarray:
    ys, xs = np.nonzero(mask)  # expect: np.nonzero unpack
    h, w = mask.shape[-2:]
    return np.array([max(xs.min() - pad, 0), max(ys.min() - pad, 0),
                     min(xs.max() + pad, w - 1), min(ys.max() + pad, h - 1)], dtype=np.float32)


def dice(a, b) -> float:
    inter = np.logical_and(a, b).sum()  # expect: np.logical_and
    denom = a.sum() + b.sum()
    return float(2.0 * inter / denom) if denom else 1.0


@dataclass
class SliceResult:
    z: int
    mask: Any
    iou: Any
    logits: Any
    box: np.ndarray


def segment_slice(net, img2d: np.ndarray, box: np.ndarray, prev_logits=None):
    net.set_image(to_rgb(img2d))
    masks, ious, logits = net.predict(box=box, mask_input=prev_logits, multimask_output=False)
    return masks[0], ious[0], logits


def propagate(net, vol: np.ndarray, z0: int, box0: np.ndarray, step: int, cfg: DictConfig) -> Iterator[SliceResult]:
    box, prev = box0, None
    z = z0 if step > 0 else z0 - 1
    while 0 <= z < vol.shape[2]:
        mask, iou, logits = segment_slice(net, vol[:, :, z], box, prev if cfg.use_prev_logits else None)
        if iou < cfg.min_iou or mask.sum() < cfg.min_area_px:
            log.info("stop at z=%d (iou=%.3f area=%d)", z, iou, int(mask.sum()))
            break
        yield SliceResult(z=z, mask=mask, iou=iou, logits=logits, box=box)
        box = bbox_from_mask(mask, cfg.pad_px)
        prev = logits
        z += step


@hydra.main(version_base=None, config_path="conf", config_name="organ")
def main(cfg: DictConfig) -> Optional[float]:
    img = nib.load(cfg.case)
    vol = img.get_fdata(dtype=np.float32)
    sx, sy, sz = img.header.get_zooms()[:3]
    voxel_ml = sx * sy * sz / 1000.0

    net = build_predictor(**cfg.model)
    seed_box = np.asarray(cfg.seed.box, np.float32)

    seg = np.zeros(vol.shape, np.uint8)
    prob = np.zeros(vol.shape, np.float32)
    results = []
    with torch.inference_mode():
        for r in itertools.chain(propagate(net, vol, cfg.seed.z, seed_box, +1, cfg),
                                 propagate(net, vol, cfg.seed.z, seed_box, -1, cfg)):
            seg[:, :, r.z] = np.rot90(r.mask, k=-1)  # expect: np.rot90
            p = cv2.resize(sigmoid(r.logits[0]), vol.shape[:2][::-1], interpolation=cv2.INTER_LINEAR)
            prob[:, :, r.z] = np.rot90(p, k=-1)
            results.append(r)

    if not results:
        log.error("nothing segmented from seed z=%d", cfg.seed.z)
        return None
    results.sort(key=lambda r: r.z)

    out_dir = os.path.join(cfg.out_dir, os.path.basename(cfg.case).replace(".nii.gz", ""))
    os.makedirs(out_dir, exist_ok=True)
    nib.save(nib.Nifti1Image(seg, img.affine, img.header), os.path.join(out_dir, "seg.nii.gz"))
    nib.save(nib.Nifti1Image(prob, img.affine, img.header), os.path.join(out_dir, "prob.nii.gz"))

    rows = []
    ref = None
    if cfg.get("reference"):
        ref = np.rot90(nib.load(cfg.reference).get_fdata() > 0)
    for r in results:
        row = {"z": r.z, "iou_pred": float(r.iou), "area_px": int(r.mask.sum()),
               "box": " ".join(f"{v:.0f}" for v in r.box)}
        if ref is not None:
            row["dice"] = dice(r.mask, ref[:, :, r.z])
        rows.append(row)
    pd.DataFrame(rows).to_csv(os.path.join(out_dir, "slices.csv"), index=False)

    if cfg.get("dicom_dir"):
        rt = RTStructBuilder.create_new(dicom_series_path=cfg.dicom_dir)
        mask3d = np.stack([r.mask for r in results], axis=-1)  # expect: np.stack
        rt.add_roi(mask=mask3d, color=[255, 0, 0], name=cfg.roi_name)
        rt.save(os.path.join(out_dir, "rtstruct.dcm"))

    mid = results[len(results) // 2]
    fig, ax = plt.subplots(figsize=(6, 6))
    ax.imshow(to_rgb(vol[:, :, mid.z]))
    ax.contour(mid.mask, levels=[0.5], colors="r", linewidths=1)  # expect: plt.contour
    ax.set_title(f"z={mid.z}  iou={mid.iou:.3f}")
    ax.axis("off")
    fig.savefig(os.path.join(out_dir, "qc.png"), dpi=120, bbox_inches="tight")
    plt.close(fig)

    volume = float(seg.sum() * voxel_ml)
    log.info("segmented %d slices, %.1f ml", len(results), volume)
    return volume


if __name__ == "__main__":
    main()
