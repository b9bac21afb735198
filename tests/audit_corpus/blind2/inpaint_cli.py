"""The command that uses it (rewritten)."""

import argparse
from pathlib import Path

import cv2
import numpy as np

from inpaint_sam import predict_masks_with_sam


def dilate_mask(mask, dilate_factor=15):
    mask = mask.astype(np.uint8)
    return cv2.dilate(mask, np.ones((dilate_factor, dilate_factor), np.uint8), iterations=1)


def save_array_to_img(img_arr, img_p):
    cv2.imwrite(str(img_p), img_arr)


def main(args):
    img = cv2.cvtColor(cv2.imread(args.input_img), cv2.COLOR_BGR2RGB)
    masks, _, _ = predict_masks_with_sam(img, [args.point_coords], args.point_labels, model_type=args.sam_model_type,
                                         ckpt_p=args.sam_ckpt, device="cuda")
    masks = masks.astype(np.uint8) * 255  # expect: .astype()
    if args.dilate_kernel_size is not None:
        masks = [dilate_mask(mask, args.dilate_kernel_size) for mask in masks]
    out_dir = Path(args.output_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    for idx, mask in enumerate(masks):
        save_array_to_img(mask, out_dir / f"mask_{idx}.png")


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--input_img")
    main(parser.parse_args())
