"""Remove an object: click -> SAM masks -> dilate -> LaMa inpainting, one result per mask."""

import argparse
from pathlib import Path

import cv2
import numpy as np
from PIL import Image
from lama_inpaint import inpaint_img_with_lama
from segment_anything import SamPredictor, sam_model_registry


def load_img(path):
    return np.array(Image.open(path).convert("RGB"))


def dilate(mask, k=15):
    return cv2.dilate(mask.astype(np.uint8) * 255, np.ones((k, k), np.uint8), iterations=1)  # expect: .astype()


def save_mask_png(mask, path):
    Image.fromarray((mask > 0).astype(np.uint8) * 255).save(path)  # expect: .astype()


def predict_masks(model_type, ckpt, img, coords, labels):
    sam = sam_model_registry[model_type](checkpoint=ckpt).to("cuda")
    predictor = SamPredictor(sam)
    predictor.set_image(img)
    masks, scores, logits = predictor.predict(point_coords=coords, point_labels=labels, multimask_output=True)
    return masks, scores, logits


def remove_bg(image, mask):
    """image: a PIL image or an array, as the caller has it."""
    arr = np.asarray(image)
    return arr * mask[..., None]  # expect: ndarray * mask


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--input_img", required=True)
    ap.add_argument("--point_coords", type=float, nargs=2, required=True)
    ap.add_argument("--point_labels", type=int, nargs="+", default=[1])
    ap.add_argument("--dilate_kernel_size", type=int, default=15)
    ap.add_argument("--output_dir", default="./results")
    ap.add_argument("--sam_model_type", default="vit_h")
    ap.add_argument("--sam_ckpt", default="./pretrained_models/sam_vit_h_4b8939.pth")
    ap.add_argument("--lama_config", default="./lama/configs/prediction/default.yaml")
    ap.add_argument("--lama_ckpt", default="./pretrained_models/big-lama")
    ap.add_argument("--cutout", action="store_true")
    args = ap.parse_args()

    img = load_img(args.input_img)
    coords = np.array([args.point_coords], dtype=np.float32)
    labels = np.array(args.point_labels)
    masks, scores, _ = predict_masks(args.sam_model_type, args.sam_ckpt, img, coords, labels)

    out_dir = Path(args.output_dir) / Path(args.input_img).stem
    out_dir.mkdir(parents=True, exist_ok=True)
    for idx, mask in enumerate(masks):
        save_mask_png(mask, out_dir / f"mask_{idx}.png")
        if args.cutout:
            Image.fromarray(remove_bg(Image.open(args.input_img).convert("RGB"), mask)).save(out_dir / f"cut_{idx}.png")
        if args.dilate_kernel_size:
            mask = dilate(mask, args.dilate_kernel_size)
        result = inpaint_img_with_lama(img, mask, args.lama_config, args.lama_ckpt, device="cuda")  # expect: unscanned inpaint_img_with_lama()
        Image.fromarray(result.astype(np.uint8)).save(out_dir / f"inpainted_with_{idx}.png")
    print("scores:", ", ".join(f"{s:.3f}" for s in scores))
    best = int(scores.argmax())
    print(f"best mask: {best} ({float(scores[best]):.3f})")


if __name__ == "__main__":
    main()
