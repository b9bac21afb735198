"""Semi-automatic CT segmentation with SAM 3 instance prompts (SAM1-style task).

A box is drawn on one key slice; it is propagated up and down the series by
re-prompting each slice with the tight box of the previous slice's mask.

    python dicom_sam3_slices.py --series data/CT_0042 --z 87 --box 210 180 300 260 --out liver.nii.gz
"""
import argparse
import glob
import os

import cv2
import nibabel as nib
import numpy as np
import pydicom
import torch
from PIL import Image

from sam3 import build_sam3_image_model
from sam3.model.sam3_image_processor import Sam3Processor


def load_series(folder):
    dsets = [pydicom.dcmread(f) for f in glob.glob(os.path.join(folder, "*.dcm"))]
    dsets = [d for d in dsets if hasattr(d, "ImagePositionPatient")]
    dsets.sort(key=lambda d: float(d.ImagePositionPatient[2]))
    vol = np.stack([
        d.pixel_array.astype(np.float32) * float(getattr(d, "RescaleSlope", 1.0)) + float(getattr(d, "RescaleIntercept", 0.0))
        for d in dsets
    ])
    dy, dx = (float(v) for v in dsets[0].PixelSpacing)
    if len(dsets) > 1:
        dz = abs(float(dsets[1].ImagePositionPatient[2]) - float(dsets[0].ImagePositionPatient[2]))
    else:
        dz = float(getattr(dsets[0], "SliceThickness", 1.0))
    return vol, (dz, dy, dx)


def window(slice_hu, center=40.0, width=400.0):
    lo, hi = center - width / 2, center + width / 2
    g = ((np.clip(slice_hu, lo, hi) - lo) / (hi - lo) * 255).astype(np.uint8)
    return np.stack([g, g, g], axis=-1)


class Sam3SliceSegmenter:
    def __init__(self, bpe_path, device="cuda"):
        self.model = build_sam3_image_model(bpe_path=bpe_path, enable_inst_interactivity=True)
        self.model.to(device).eval()
        self.processor = Sam3Processor(self.model)

    @torch.inference_mode()
    def segment(self, rgb, box):
        state = self.processor.set_image(Image.fromarray(rgb))
        masks, scores, logits = self.model.predict_inst(
            state,
            point_coords=None,
            point_labels=None,
            box=np.asarray(box, dtype=np.float32)[None, :],
            multimask_output=False,
        )
        return masks[0], scores[0], logits[0]

    def propagate(self, volume, z0, box0, margin=6, min_score=0.5):
        seg = np.zeros(volume.shape, dtype=np.uint8)
        conf = np.zeros(volume.shape[0], dtype=np.float32)
        for direction in (1, -1):
            box = np.asarray(box0, dtype=np.float32)
            z = z0 if direction == 1 else z0 - 1
            while 0 <= z < volume.shape[0]:
                m, s, _ = self.segment(window(volume[z]), box)
                if isinstance(m, torch.Tensor):
                    m = m.detach().cpu().numpy()
                if s < min_score or not m.any():
                    break
                seg[z] = m
                conf[z] = s
                ys, xs = np.nonzero(m)
                box = np.array(
                    [xs.min() - margin, ys.min() - margin, xs.max() + margin, ys.max() + margin], dtype=np.float32
                )
                z += direction
        return seg, conf


def uncertainty_map(logits):
    prob = 1.0 / (1.0 + np.exp(-logits))  # expect: np.exp
    return 1.0 - np.abs(prob - 0.5) * 2.0


def qa_overlay(segmenter, volume, z, box, out_png):
    rgb = window(volume[z])
    mask, score, logits = segmenter.segment(rgb, box)
    rgb[mask] = (0.4 * rgb[mask] + np.array([0, 153, 0])).astype(np.uint8)  # expect: ndarray[t_bool]
    unc = cv2.resize(uncertainty_map(logits).astype(np.float32), (rgb.shape[1], rgb.shape[0]))
    heat = cv2.applyColorMap((unc * 255).astype(np.uint8), cv2.COLORMAP_INFERNO)
    x0, y0, x1, y1 = (int(v) for v in box)
    cv2.rectangle(rgb, (x0, y0), (x1, y1), (255, 255, 0), 1)
    cv2.putText(rgb, f"z={z} score={score:.2f}", (8, 20), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (255, 255, 255), 1)
    cv2.imwrite(out_png, np.hstack([rgb[..., ::-1], heat]))


def slice_dice(segmenter, volume, gt_volume, z, box):
    mask, _, _ = segmenter.segment(window(volume[z]), box)
    gt = gt_volume[z] > 0
    inter = (mask & gt).sum()  # expect: t & ndarray
    return 2.0 * float(inter) / (float(mask.sum()) + float(gt.sum()) + 1e-6)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--series", required=True)
    ap.add_argument("--z", type=int, required=True)
    ap.add_argument("--box", type=float, nargs=4, required=True)
    ap.add_argument("--bpe", default="assets/bpe_simple_vocab_16e6.txt.gz")
    ap.add_argument("--out", default="seg.nii.gz")
    ap.add_argument("--single-slice", action="store_true")
    ap.add_argument("--qa", default=None, help="write a QA overlay png of the key slice")
    ap.add_argument("--gt", default=None, help="reference NIfTI for a key-slice Dice")
    args = ap.parse_args()

    vol, spacing = load_series(args.series)
    seg3d = Sam3SliceSegmenter(args.bpe)
    affine = np.diag([spacing[2], spacing[1], spacing[0], 1.0])

    if args.single_slice:
        mask, score, _ = seg3d.segment(window(vol[args.z]), args.box)
        seg = np.zeros(vol.shape, dtype=np.uint8)
        seg[args.z] = mask  # expect: arr[z] = t
        print(f"slice {args.z}: score {score:.3f}")
    else:
        seg, conf = seg3d.propagate(vol, args.z, args.box)
        used = conf > 0
        print(f"{int(used.sum())} slices, mean score {float(conf[used].mean()) if used.any() else 0.0:.3f}")

    voxel_ml = spacing[0] * spacing[1] * spacing[2] / 1000.0
    print(f"volume: {seg.sum() * voxel_ml:.1f} ml")
    nib.save(nib.Nifti1Image(np.transpose(seg, (2, 1, 0)), affine), args.out)

    if args.qa:
        qa_overlay(seg3d, vol, args.z, args.box, args.qa)
    if args.gt:
        gt_vol = np.transpose(np.asanyarray(nib.load(args.gt).dataobj), (2, 1, 0))
        print(f"key slice Dice: {slice_dice(seg3d, vol, gt_vol, args.z, args.box):.4f}")


if __name__ == "__main__":
    main()
