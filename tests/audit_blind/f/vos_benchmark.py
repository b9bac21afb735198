"""DAVIS-2017 semi-supervised VOS: SAM 2 *image* predictor as a box tracker.

Baseline for the paper's Table 3: each object is re-prompted on frame t with
the (padded) box of its mask on frame t-1.  ``--mode video`` runs the real
SAM 2 video predictor for comparison.

    python vos_benchmark.py --davis data/DAVIS --split val --out runs/vos_box
"""
from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Dict, List, Optional

import cv2
import numpy as np
import pandas as pd
import torch
from PIL import Image

from sam2.build_sam import build_sam2_video_predictor
from sam2.sam2_image_predictor import SAM2ImagePredictor

from evalkit.metrics import boundary_fscore, db_eval_iou
from evalkit.vis import PALETTE, colorize_labels


def read_anno(path: Path) -> np.ndarray:
    return np.array(Image.open(path))  # palette PNG -> object ids


def mask_to_box(mask, pad: int = 8, shape=None) -> Optional[np.ndarray]:
    ys, xs = np.where(mask)  # expect: np.where
    if xs.size == 0:
        return None
    h, w = shape if shape is not None else mask.shape[:2]
    x0, y0 = max(int(xs.min()) - pad, 0), max(int(ys.min()) - pad, 0)
    x1, y1 = min(int(xs.max()) + pad, w - 1), min(int(ys.max()) + pad, h - 1)
    return np.array([x0, y0, x1, y1], dtype=np.float32)


class BoxTracker:
    def __init__(self, predictor: SAM2ImagePredictor, min_area: int = 20, score_floor: float = 0.25):
        self.p = predictor
        self.min_area = min_area
        self.score_floor = score_floor
        self.prev: Dict[int, object] = {}
        self.lost: set = set()
        self.t = 0
        self.log: List[pd.DataFrame] = []

    def init(self, first_anno: np.ndarray) -> None:
        self.prev = {int(k): first_anno == k for k in np.unique(first_anno) if k != 0}
        self.lost.clear()
        self.t = 0
        self.log = []

    def step(self, frame: np.ndarray) -> Dict[int, object]:
        self.t += 1
        ids = [k for k in self.prev if k not in self.lost]
        keep = [(k, mask_to_box(self.prev[k], shape=frame.shape[:2])) for k in ids]
        keep = [(k, b) for k, b in keep if b is not None]
        if not keep:
            return {}
        ids, boxes = map(list, zip(*keep))

        self.p.set_image(frame)
        masks, scores, _ = self.p.predict(box=np.stack(boxes), multimask_output=False)
        if masks.ndim == 3:  # a single box comes back without the object axis
            masks, scores = masks[None], scores[None]
        self.log.append(pd.DataFrame({"frame": self.t, "obj": ids, "score": scores[:, 0]}))  # expect: pd.DataFrame

        out = {}
        for k, m, s in zip(ids, masks[:, 0] > 0.5, scores[:, 0]):
            if s < self.score_floor or m.sum() < self.min_area:
                self.lost.add(k)
                continue
            if (m & self.prev[k]).sum() == 0:  # expect: tensor & ndarray
                # no overlap with t-1: SAM jumped to a look-alike instance
                self.lost.add(k)
                continue
            out[k] = m
            self.prev[k] = m
        return out


def eval_sequence_image(tracker: BoxTracker, seq: str, img_dir: Path, ann_dir: Path,
                        out_dir: Optional[Path] = None) -> List[dict]:
    frames = sorted(img_dir.glob("*.jpg"))
    annos = sorted(ann_dir.glob("*.png"))
    first = read_anno(annos[0])
    obj_ids = [int(k) for k in np.unique(first) if k != 0]
    tracker.init(first)
    h, w = first.shape

    rows = []
    writer = None
    if out_dir is not None:
        writer = cv2.VideoWriter(str(out_dir / f"{seq}.mp4"), cv2.VideoWriter_fourcc(*"mp4v"), 12, (w, h))

    for t in range(1, len(frames)):
        frame = cv2.cvtColor(cv2.imread(str(frames[t])), cv2.COLOR_BGR2RGB)
        gt = read_anno(annos[t]) if t < len(annos) else None
        pred = tracker.step(frame)

        label_map = np.zeros((h, w), dtype=np.uint8)
        for k, m in sorted(pred.items()):
            label_map[m] = k  # expect: ndarray[mask] assignment

        if gt is not None:
            for k in obj_ids:
                j = db_eval_iou(gt == k, label_map == k)
                f = boundary_fscore(pred[k], gt == k) if k in pred else 0.0
                rows.append({"seq": seq, "frame": t, "obj": k, "J": j, "F": f, "lost": k not in pred})

        if writer is not None:
            vis = cv2.addWeighted(frame, 0.6, colorize_labels(label_map), 0.4, 0)
            writer.write(cv2.cvtColor(vis, cv2.COLOR_RGB2BGR))
            png = Image.fromarray(label_map, mode="P")
            png.putpalette(PALETTE.flatten().tolist())
            png.save(out_dir / seq / f"{t:05d}.png")

    if writer is not None:
        writer.release()
    return rows


@torch.inference_mode()
def eval_sequence_video(vpred, seq: str, img_dir: Path, ann_dir: Path) -> List[dict]:
    """Reference numbers with the SAM 2 video predictor (its outputs are torch upstream)."""
    annos = sorted(ann_dir.glob("*.png"))
    first = read_anno(annos[0])
    state = vpred.init_state(video_path=str(img_dir))
    for k in np.unique(first):
        if k == 0:
            continue
        vpred.add_new_mask(state, frame_idx=0, obj_id=int(k), mask=first == k)

    rows = []
    for t, obj_ids, logits in vpred.propagate_in_video(state):
        if t == 0 or t >= len(annos):
            continue
        gt = read_anno(annos[t])
        hard = (logits[:, 0] > 0.0).cpu().numpy()
        for i, k in enumerate(obj_ids):
            rows.append({"seq": seq, "frame": t, "obj": int(k),
                         "J": db_eval_iou(gt == k, hard[i]), "F": boundary_fscore(hard[i], gt == k),
                         "lost": False})
    vpred.reset_state(state)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--davis", type=Path, default=Path("data/DAVIS"))
    ap.add_argument("--split", default="val")
    ap.add_argument("--mode", choices=["image", "video"], default="image")
    ap.add_argument("--cfg", default="configs/sam2.1/sam2.1_hiera_l.yaml")
    ap.add_argument("--ckpt", default="checkpoints/sam2.1_hiera_large.pt")
    ap.add_argument("--out", type=Path, default=Path("runs/vos"))
    ap.add_argument("--save-vis", action="store_true")
    args = ap.parse_args()

    seqs = (args.davis / "ImageSets" / "2017" / f"{args.split}.txt").read_text().split()
    args.out.mkdir(parents=True, exist_ok=True)

    if args.mode == "image":
        tracker = BoxTracker(SAM2ImagePredictor.from_pretrained("facebook/sam2.1-hiera-large"))
    else:
        vpred = build_sam2_video_predictor(args.cfg, args.ckpt, device="cuda")

    all_rows = []
    with torch.autocast("cuda", dtype=torch.bfloat16):
        for seq in seqs:
            img_dir = args.davis / "JPEGImages" / "480p" / seq
            ann_dir = args.davis / "Annotations" / "480p" / seq
            if args.mode == "image":
                if args.save_vis:
                    (args.out / seq).mkdir(exist_ok=True)
                all_rows += eval_sequence_image(tracker, seq, img_dir, ann_dir,
                                                args.out if args.save_vis else None)
            else:
                all_rows += eval_sequence_video(vpred, seq, img_dir, ann_dir)

    df = pd.DataFrame(all_rows)
    per_seq = df.groupby("seq")[["J", "F"]].mean()
    per_seq["J&F"] = (per_seq["J"] + per_seq["F"]) / 2
    per_seq.to_csv(args.out / f"per_sequence_{args.mode}.csv")
    print(per_seq.round(3).to_string())
    print("J&F mean: {:.4f}  lost-object frames: {:.1%}".format(per_seq["J&F"].mean(), df["lost"].mean()))
    if args.mode == "image" and tracker.log:
        pd.concat(tracker.log).to_csv(args.out / "scores_last_seq.csv", index=False)


if __name__ == "__main__":
    main()
