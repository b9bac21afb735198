"""Track one object through a video by re-prompting SAM 2 on every frame with the
box of the previous mask; a writer thread composes the output video.

`track_with_memory` is the same job through SAM 2's video predictor, kept for
comparison."""

import argparse
import queue
import threading

import cv2
import numpy as np
import torch
from sam2.build_sam import build_sam2, build_sam2_video_predictor
from sam2.sam2_image_predictor import SAM2ImagePredictor

CFG = "configs/sam2.1/sam2.1_hiera_s.yaml"
CKPT = "checkpoints/sam2.1_hiera_small.pt"


def bbox_of(mask, pad=8):
    ys, xs = np.where(mask)  # expect: np.where()
    if len(xs) == 0:
        return None
    h, w = mask.shape[-2:]
    return np.array([max(xs.min() - pad, 0), max(ys.min() - pad, 0),
                     min(xs.max() + pad, w - 1), min(ys.max() + pad, h - 1)], dtype=np.float32)


class BoxTracker:
    def __init__(self, cfg=CFG, ckpt=CKPT, init_mask_path=None):
        self.predictor = SAM2ImagePredictor(build_sam2(cfg, ckpt))
        self.prev_mask = None
        self.prev_logits = None
        self.init_box = None
        self.init_area = 0
        if init_mask_path:
            self.prev_mask = cv2.imread(init_mask_path, cv2.IMREAD_GRAYSCALE) > 0
            self.init_area = int(np.count_nonzero(self.prev_mask))
            self.init_box = bbox_of(self.prev_mask)

    def step(self, frame_rgb, box=None):
        self.predictor.set_image(frame_rgb)
        if box is None:
            box = bbox_of(self.prev_mask)
        masks, scores, logits = self.predictor.predict(box=box, mask_input=self.prev_logits, multimask_output=False)
        self.prev_mask = masks[0]
        self.prev_logits = logits
        return masks[0], float(scores[0])

    def lost(self, min_area=64):
        return self.prev_mask is None or int(self.prev_mask.sum()) < min_area

    def area_change(self, before):
        """Relative change of area against the previous frame's area."""
        return abs(np.sum(self.prev_mask) - before) / max(before, 1)  # expect: np.sum()


def writer_loop(q, path, fps, size):
    vw = cv2.VideoWriter(path, cv2.VideoWriter_fourcc(*"mp4v"), fps, size)
    while True:
        item = q.get()
        if item is None:
            break
        idx, frame_bgr, mask, score = item
        tint = frame_bgr.copy()
        tint[mask] = (0, 0, 255)  # expect: ndarray[mask] = v
        out = cv2.addWeighted(frame_bgr, 0.6, tint, 0.4, 0)
        cv2.putText(out, f"#{idx} {score:.2f}", (12, 28), cv2.FONT_HERSHEY_SIMPLEX, 0.8, (255, 255, 255), 2)
        vw.write(out)
    vw.release()


def track(video_path, first_box, out_path="tracked.mp4", init_mask=None):
    cap = cv2.VideoCapture(video_path)
    fps = cap.get(cv2.CAP_PROP_FPS) or 25
    w, h = int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)), int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT))
    n = int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
    tracker = BoxTracker(init_mask_path=init_mask)
    masks_np = np.zeros((n, h, w), dtype=bool)
    areas = np.zeros(n, dtype=np.int64)
    q = queue.Queue(maxsize=8)
    t = threading.Thread(target=writer_loop, args=(q, out_path, fps, (w, h)), daemon=True)
    t.start()
    box = tracker.init_box if first_box is None else np.array(first_box, dtype=np.float32)
    idx = 0
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        mask, score = tracker.step(cv2.cvtColor(frame, cv2.COLOR_BGR2RGB), box if idx == 0 else None)
        masks_np[idx] = mask  # expect: ndarray[i] = mask
        areas[idx] = int(mask.sum())
        q.put((idx, frame, mask, score))
        if tracker.lost():
            print(f"lost at frame {idx}")
            break
        idx += 1
    q.put(None)
    t.join()
    np.save("track_masks.npy", masks_np[: idx + 1])
    jumps = np.flatnonzero(np.abs(np.diff(areas[: idx + 1])) > 0.3 * areas[: idx + 1].max())
    return masks_np[: idx + 1], jumps


def track_with_memory(frames_dir, first_box):
    vp = build_sam2_video_predictor(CFG, CKPT)
    out = {}
    with torch.inference_mode(), torch.autocast("cuda", dtype=torch.bfloat16):
        state = vp.init_state(video_path=frames_dir)
        vp.add_new_points_or_box(state, frame_idx=0, obj_id=1, box=np.array(first_box, np.float32))
        for fidx, obj_ids, mask_logits in vp.propagate_in_video(state):
            out[fidx] = (mask_logits[0] > 0.0).cpu().numpy()[0]
    areas = {k: int(np.count_nonzero(v)) for k, v in out.items()}
    return out, areas


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("video")
    ap.add_argument("--box", type=float, nargs=4)
    ap.add_argument("--init-mask")
    args = ap.parse_args()
    masks, jumps = track(args.video, args.box, init_mask=args.init_mask)
    print(f"{len(masks)} frames, area jumps at {jumps.tolist()}")
