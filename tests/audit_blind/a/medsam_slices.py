"""Slice-by-slice segmentation of a CT volume from one box on the key slice.

The box is propagated up and down the volume: each slice is prompted with the
bounding box of the previous slice's mask, grown by a margin.
"""

import argparse

import nibabel as nib
import numpy as np
from PIL import Image
from company_models.sam_loader import load_predictor
from medkit.metrics import dice_score, hausdorff95
from skimage import measure

HU_WINDOW = (-160, 240)


def window(ct_slice, lo=HU_WINDOW[0], hi=HU_WINDOW[1]):
    x = np.clip(ct_slice, lo, hi)
    x = (x - lo) / (hi - lo) * 255.0
    return np.repeat(x[..., None], 3, axis=-1).astype(np.uint8)


def box_from_mask(mask, margin=5):
    ys, xs = np.where(mask)  # expect: np.where()
    if len(xs) == 0:
        return None
    h, w = mask.shape
    return np.array([max(xs.min() - margin, 0), max(ys.min() - margin, 0),
                     min(xs.max() + margin, w - 1), min(ys.max() + margin, h - 1)], dtype=np.float32)


def overlay_slice(ct_rgb, mask, alpha=0.4):
    red = np.zeros_like(ct_rgb)
    red[..., 0] = 255
    a = alpha * mask[..., None]
    return (ct_rgb * (1 - a) + red * a).astype(np.uint8)  # expect: ndarray * mask


def segment_direction(predictor, volume, seg, start, stop, step, box, min_score=0.5):
    for z in range(start, stop, step):
        if box is None:
            break
        predictor.set_image(window(volume[:, :, z]))
        masks, scores, _ = predictor.predict(box=box[None, :], multimask_output=False)
        if scores[0] < min_score:
            break
        seg[:, :, z] = masks[0]  # expect: ndarray[i] = mask
        box = box_from_mask(masks[0])
    return seg


def spot_check(predictor, volume, gt, z, box):
    """Dice of a single slice, used by the nightly regression job."""
    predictor.set_image(window(volume[:, :, z]))
    masks, scores, _ = predictor.predict(box=np.asarray(box, np.float32)[None, :], multimask_output=False)
    return dice_score(masks[0], gt[:, :, z]), float(scores[0])  # expect: unscanned dice_score()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("ct")
    ap.add_argument("--gt")
    ap.add_argument("--key-slice", type=int, required=True)
    ap.add_argument("--box", type=float, nargs=4, required=True)
    ap.add_argument("--out", default="pred.nii.gz")
    args = ap.parse_args()

    img = nib.load(args.ct)
    volume = img.get_fdata()
    seg = np.zeros(volume.shape, dtype=np.uint8)
    predictor = load_predictor("medsam_vit_b", device="cuda")

    z0 = args.key_slice
    box0 = np.array(args.box, dtype=np.float32)
    predictor.set_image(window(volume[:, :, z0]))
    masks, scores, logits = predictor.predict(box=box0[None, :], multimask_output=False)
    key_mask = masks[0]
    print(f"key slice {z0}: score {scores[0]:.3f}, area {int(key_mask.sum())} px")
    Image.fromarray(overlay_slice(window(volume[:, :, z0]), key_mask)).save("key_slice.png")
    segment_direction(predictor, volume, seg, z0, volume.shape[2], 1, box0)
    segment_direction(predictor, volume, seg, z0 - 1, -1, -1, box_from_mask(seg[:, :, z0]))

    # keep the largest 3D component only
    labelled = measure.label(seg > 0)
    if labelled.max() > 1:
        sizes = np.bincount(labelled.ravel())[1:]
        seg = (labelled == (np.argmax(sizes) + 1)).astype(np.uint8)
    nib.save(nib.Nifti1Image(seg, img.affine), args.out)

    if args.gt:
        gt = nib.load(args.gt).get_fdata() > 0
        print("dice", dice_score(seg > 0, gt))
        print("key-slice dice", dice_score(seg[:, :, z0] > 0, gt[:, :, z0]))
        print("hd95", hausdorff95(seg > 0, gt, spacing=img.header.get_zooms()))
        print("spot check z0+10", spot_check(predictor, volume, gt, z0 + 10, box0))


if __name__ == "__main__":
    main()
