"""Track objects through a video by re-prompting SAM 2 on every frame with the
box derived from the previous frame's mask.

    python -m tracker.track video.mp4 --boxes "100,80,220,300;400,120,480,260" --out runs/demo
"""
import argparse
import json
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, List, Optional, Tuple

import cv2
import numpy as np
import samgpu_shim  # noqa: F401
import torch
from sam2.build_sam import build_sam2
from sam2.sam2_image_predictor import SAM2ImagePredictor

from .draw import draw_track, mask_to_box


@dataclass
class Track:
    track_id: int
    box: np.ndarray
    mask: Any = None
    prev_mask: Any = None
    logits: Any = None
    score: float = 0.0
    lost: int = 0
    history: List[float] = field(default_factory=list)


def read_frames(path: str) -> Iterator[Tuple[int, np.ndarray]]:
    cap = cv2.VideoCapture(path)
    idx = 0
    try:
        while True:
            ok, frame = cap.read()
            if not ok:
                break
            yield idx, frame
            idx += 1
    finally:
        cap.release()


class SamBoxTracker:
    def __init__(self, predictor: SAM2ImagePredictor, min_score: float = 0.5, max_lost: int = 10):
        self.predictor = predictor
        self.min_score = min_score
        self.max_lost = max_lost
        self.tracks: List[Track] = []
        self.finished: List[Track] = []

    def start(self, boxes: List[List[float]]):
        self.tracks = [Track(i, np.asarray(b, dtype=np.float32)) for i, b in enumerate(boxes)]

    @torch.inference_mode()
    def step(self, frame_rgb: np.ndarray) -> List[Track]:
        self.predictor.set_image(frame_rgb)
        for tr in self.tracks:
            masks, scores, logits = self.predictor.predict(
                box=tr.box,
                mask_input=tr.logits[None] if tr.logits is not None else None,
                multimask_output=False,
            )
            tr.prev_mask = tr.mask.copy() if tr.mask is not None else None  # expect: copy
            tr.mask, tr.score, tr.logits = masks[0], scores[0], logits[0]
            tr.history.append(tr.score)

            if tr.score < self.min_score:
                tr.lost += 1
                tr.logits = None  # don't feed a bad mask back in
                continue
            tr.lost = 0
            new_box = mask_to_box(tr.mask)
            if new_box is not None:
                tr.box = new_box

        alive = []
        for tr in self.tracks:
            (alive if tr.lost <= self.max_lost else self.finished).append(tr)
        self.tracks = alive
        return [tr for tr in alive if tr.lost == 0]


def parse_boxes(spec: str) -> List[List[float]]:
    return [[float(v) for v in b.split(",")] for b in spec.split(";") if b]


def main(argv: Optional[List[str]] = None):
    ap = argparse.ArgumentParser()
    ap.add_argument("video")
    ap.add_argument("--boxes", required=True, help="x0,y0,x1,y1;... on the first frame")
    ap.add_argument("--config", default="configs/sam2.1/sam2.1_hiera_s.yaml")
    ap.add_argument("--checkpoint", default="checkpoints/sam2.1_hiera_small.pt")
    ap.add_argument("--out", default="runs/track")
    ap.add_argument("--save-masks", action="store_true")
    args = ap.parse_args(argv)

    device = "cuda" if torch.cuda.is_available() else "cpu"
    predictor = SAM2ImagePredictor(build_sam2(args.config, args.checkpoint, device=device))
    tracker = SamBoxTracker(predictor)
    tracker.start(parse_boxes(args.boxes))

    out_dir = Path(args.out)
    (out_dir / "masks").mkdir(parents=True, exist_ok=True)
    writer = None
    for idx, frame in read_frames(args.video):
        if writer is None:
            h, w = frame.shape[:2]
            writer = cv2.VideoWriter(str(out_dir / "overlay.mp4"), cv2.VideoWriter_fourcc(*"mp4v"), 25, (w, h))
        visible = tracker.step(cv2.cvtColor(frame, cv2.COLOR_BGR2RGB))
        for tr in visible:
            frame = draw_track(frame, tr)
            if args.save_masks:
                cv2.imwrite(str(out_dir / "masks" / f"{idx:06d}_{tr.track_id}.png"), (tr.mask * 255).astype(np.uint8))  # expect: astype
        writer.write(frame)
    if writer is not None:
        writer.release()

    summary = {}
    for tr in tracker.tracks + tracker.finished:
        summary[tr.track_id] = {
            "frames": len(tr.history),
            "mean_score": statistics.fmean(tr.history) if tr.history else 0.0,
            "scores": np.round(tr.history, 3).tolist(),  # expect: np.round
        }
        print(f"track {tr.track_id}: {len(tr.history)} frames, mean score {summary[tr.track_id]['mean_score']:.3f}")
    with open(out_dir / "tracks.json", "w") as fh:
        json.dump(summary, fh, indent=2)


if __name__ == "__main__":
    main()
