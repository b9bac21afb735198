"""An image-guided-therapy style frame loop, GPU-resident end to end.

Frames come in, a tracked point prompts SAM on each, and the display gets
the few numbers it needs: which mask, its score, area, centroid, bounding
box. Everything stays on the device until the one small result packet of
the frame. ``--numpy`` runs the same loop the way it is usually written,
on upstream's numpy outputs, for comparison.

    python examples/frame_loop.py            # tiny SAM, random weights
    python examples/frame_loop.py --model vit_b --frames 200 --numpy
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch
from segment_anything import SamPredictor

import samgpu_shim  # the one line: importing it patches predict
from samgpu_shim.tools.models import build_sam, synthetic_image


def packet_gpu(masks: torch.Tensor, scores: torch.Tensor, frame_no: int) -> str:
    """Mask statistics on the device, one copy to the host at the end."""
    index = scores.argmax(dim=0, keepdim=True)  # stays a device tensor: no sync
    best = masks.index_select(0, index)[0]
    rows = best.sum(dim=1, dtype=torch.float64)
    cols = best.sum(dim=0, dtype=torch.float64)
    ys = torch.arange(rows.numel(), device=best.device, dtype=torch.float64)
    xs = torch.arange(cols.numel(), device=best.device, dtype=torch.float64)
    summary = torch.stack(
        [
            index[0].double(),
            scores.index_select(0, index)[0].double(),
            rows.sum(),
            rows @ ys,
            cols @ xs,
            torch.where(cols > 0, xs, cols.numel()).amin(),
            torch.where(rows > 0, ys, rows.numel()).amin(),
            torch.where(cols > 0, xs, -1).amax(),
            torch.where(rows > 0, ys, -1).amax(),
        ]
    )
    host = samgpu_shim.to_numpy(summary)  # the frame's single device-to-host copy
    area = int(host[2])
    packet = {
        "frame": frame_no,
        "mask": int(host[0]),
        "score": float(host[1]),
        "area_px": area,
        "centroid_xy": [host[4] / area, host[3] / area] if area else None,
        "bbox_xyxy": host[5:9].astype(int).tolist() if area else None,
    }
    return json.dumps(packet, default=samgpu_shim.json_default)


def packet_numpy(masks: np.ndarray, scores: np.ndarray, frame_no: int) -> str:
    """The same packet, written the usual way on numpy outputs."""
    index = int(np.argmax(scores))
    best = masks[index]
    ys, xs = np.nonzero(best)
    area = int(ys.size)
    packet = {
        "frame": frame_no,
        "mask": index,
        "score": float(scores[index]),
        "area_px": area,
        "centroid_xy": [float(xs.mean()), float(ys.mean())] if area else None,
        "bbox_xyxy": [int(xs.min()), int(ys.min()), int(xs.max()), int(ys.max())] if area else None,
    }
    return json.dumps(packet)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="tiny", choices=["tiny", "vit_b", "vit_l", "vit_h"])
    parser.add_argument("--frames", type=int, default=20)
    parser.add_argument("--size", default="480x640", help="frame HxW")
    parser.add_argument("--numpy", action="store_true", help="run the numpy twin instead")
    args = parser.parse_args()

    device = "cuda" if torch.cuda.is_available() else "cpu"
    h, w = (int(v) for v in args.size.split("x"))
    predictor = SamPredictor(build_sam(args.model, device=device))
    times = []
    for frame_no in range(args.frames):
        frame = synthetic_image(h, w, seed=frame_no)
        predictor.set_image(frame)
        point = np.array([[w // 2 + 3 * np.sin(frame_no), h // 2]])  # the tracked target
        started = time.perf_counter()
        if args.numpy:
            masks, scores, _ = predictor.predict(point, np.array([1]), as_numpy=True)
            message = packet_numpy(masks, scores, frame_no)
        else:
            masks, scores, _ = predictor.predict(point, np.array([1]))
            message = packet_gpu(masks, scores, frame_no)
        times.append((time.perf_counter() - started) * 1e3)
        if frame_no < 3:
            print(message)
    print(f"{'numpy' if args.numpy else 'gpu-resident'} on {device}: "
          f"median {np.median(times):.2f} ms per frame (prompt to packet, set_image excluded)")


if __name__ == "__main__":
    main()
