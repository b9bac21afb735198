"""Box-propagation tracking with the SAM 2 *image* predictor, plus DAVIS-style
evaluation (J = region IoU, F = boundary F-measure).

Online mode prompts every frame with the previous mask's box and low-res
logits; offline mode takes per-frame detector boxes and pushes frames through
``predict_batch`` in chunks.

    python sam2_box_tracker.py --frames DAVIS/JPEGImages/480p/bear \
        --gt DAVIS/Annotations/480p/bear --init-box 120 80 420 330 --save out/bear
"""

import argparse
import json
import os
from glob import glob
from typing import Iterator, List, Optional, Sequence, Tuple

import cv2
import numpy as np
import torch
from tqdm import tqdm

from davis2017.metrics import db_eval_boundary
from sam2.build_sam import build_sam2
from sam2.sam2_image_predictor import SAM2ImagePredictor

from sam_tools.postprocess import mask_to_xyxy

Frame = Tuple[int, np.ndarray]


def iter_frames(frame_dir: str) -> Iterator[Frame]:
    for idx, path in enumerate(sorted(glob(os.path.join(frame_dir, "*.jpg")))):
        yield idx, cv2.cvtColor(cv2.imread(path), cv2.COLOR_BGR2RGB)


def load_gt(gt_dir: str, idx: int) -> Optional[np.ndarray]:
    path = os.path.join(gt_dir, f"{idx:05d}.png")
    if not os.path.exists(path):
        return None
    return cv2.imread(path, cv2.IMREAD_GRAYSCALE) > 0


def track(tracker: SAM2ImagePredictor, frames: Iterator[Frame], init_box: Sequence[float],
          min_score: float = 0.35, pad: int = 8):
    """Online tracker. Yields ``(idx, mask or None, score)``."""
    box = np.asarray(init_box, np.float32)
    prev_logits = None
    for idx, rgb in frames:
        tracker.set_image(rgb)
        masks, scores, logits = tracker.predict(box=box, mask_input=prev_logits, multimask_output=False)
        if scores[0] < min_score:
            prev_logits = None  # lost: keep the last box, forget the logits
            yield idx, None, float(scores[0])
            continue
        prev_logits = logits[:1]
        next_box = mask_to_xyxy(masks[0], pad=pad)
        if next_box is not None:
            box = np.asarray(next_box, np.float32)
        yield idx, masks[0], float(scores[0])


def track_offline(tracker: SAM2ImagePredictor, frames: List[Frame], boxes: List[Sequence[float]],
                  chunk: int = 8):
    """Detector boxes given for every frame; batched through predict_batch."""
    for start in range(0, len(frames), chunk):
        part = frames[start:start + chunk]
        tracker.set_image_batch([rgb for _, rgb in part])
        masks_b, scores_b, _ = tracker.predict_batch(
            box_batch=[np.asarray(boxes[i], np.float32) for i, _ in part],
            multimask_output=False,
        )
        for (idx, _), m, s in zip(part, masks_b, scores_b):
            yield idx, m[0], float(s[0])


def jaccard(pred, gt: np.ndarray) -> float:
    pred = np.asarray(pred, dtype=bool)  # expect: np.asarray
    union = np.logical_or(pred, gt).sum()
    if union == 0:
        return 1.0
    return float(np.logical_and(pred, gt).sum()) / float(union)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--frames", required=True)
    ap.add_argument("--gt", required=True)
    ap.add_argument("--init-box", type=float, nargs=4)
    ap.add_argument("--det-boxes", help="json {frame_idx: [x0,y0,x1,y1]} for offline mode")
    ap.add_argument("--cfg", default="configs/sam2.1/sam2.1_hiera_b+.yaml")
    ap.add_argument("--ckpt", default="checkpoints/sam2.1_hiera_base_plus.pt")
    ap.add_argument("--save", default=None)
    ap.add_argument("--reid-features", action="store_true")
    args = ap.parse_args()

    model = build_sam2(args.cfg, args.ckpt, device="cuda")
    tracker = SAM2ImagePredictor(model)

    if args.det_boxes:
        with open(args.det_boxes) as f:
            det = {int(k): v for k, v in json.load(f).items()}
        frames = [fr for fr in iter_frames(args.frames) if fr[0] in det]
        stream = track_offline(tracker, frames, [det[i] for i, _ in frames])
    else:
        stream = track(tracker, iter_frames(args.frames), args.init_box)

    if args.save:
        os.makedirs(args.save, exist_ok=True)

    per_frame, kept_masks = [], []
    with torch.inference_mode(), torch.autocast("cuda", dtype=torch.bfloat16):
        for idx, mask, score in tqdm(stream, desc="tracking"):
            gt = load_gt(args.gt, idx)
            if mask is None:
                per_frame.append({"frame": idx, "score": score, "J": 0.0, "F": 0.0})
                continue
            kept_masks.append(mask)
            if args.reid_features:
                # the appearance head wants the mask as a float tensor on the GPU
                weight = torch.from_numpy(mask).float().cuda()  # expect: torch.from_numpy
                torch.save(weight.half(), os.path.join(args.save or ".", f"w_{idx:05d}.pt"))
            if gt is not None:
                j = jaccard(mask, gt)
                f = db_eval_boundary(mask, gt)  # expect: unscanned db_eval_boundary
                per_frame.append({"frame": idx, "score": score, "J": j, "F": float(f)})
            if args.save:
                cv2.imwrite(os.path.join(args.save, f"{idx:05d}.png"), mask.astype(np.uint8) * 255)  # expect: astype

    scored = [r for r in per_frame if "J" in r]
    J = float(np.mean([r["J"] for r in scored])) if scored else float("nan")
    F = float(np.mean([r["F"] for r in scored])) if scored else float("nan")
    print(f"J {J:.4f}  F {F:.4f}  J&F {(J + F) / 2:.4f}  ({len(scored)} frames)")
    if args.save:
        with open(os.path.join(args.save, "metrics.json"), "w") as f:
            json.dump({"J": J, "F": F, "frames": per_frame}, f, indent=1)
        np.savez_compressed(os.path.join(args.save, "masks.npz"), masks=np.stack(kept_masks))  # expect: np.stack


if __name__ == "__main__":
    main()
