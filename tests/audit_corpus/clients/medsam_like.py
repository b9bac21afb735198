"""Shaped like a box-prompted medical inference script (rewritten, not copied)."""

import argparse
import os

import numpy as np
import SimpleITK as sitk
from segment_anything import SamPredictor, sam_model_registry
from skimage import io, transform


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--img", required=True)
    parser.add_argument("--box", nargs=4, type=int)
    parser.add_argument("--out", default="seg")
    args = parser.parse_args()
    sam = sam_model_registry["vit_b"](checkpoint="medsam_vit_b.pth").to("cuda")
    sam_predictor = SamPredictor(sam)
    img = io.imread(args.img)
    if img.ndim == 2:
        img = np.repeat(img[:, :, None], 3, axis=-1)
    img = transform.resize(img, (1024, 1024), preserve_range=True).astype(np.uint8)
    sam_predictor.set_image(img)
    box = np.array(args.box)
    seg, score, _ = sam_predictor.predict(box=box[None, :], multimask_output=False)
    seg = seg[0]
    seg_u8 = np.uint8(seg)  # expect: np.uint8()
    io.imsave(os.path.join(args.out, "seg.png"), seg * 255, check_contrast=False)  # expect: io.imsave()
    sitk.WriteImage(sitk.GetImageFromArray(seg_u8), os.path.join(args.out, "seg.nii.gz"))
    print(f"score {score[0]:.3f}, area {seg.sum()} px")


if __name__ == "__main__":
    main()
