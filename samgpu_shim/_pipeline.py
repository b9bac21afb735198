"""The frame pipeline of the benchmark: best mask, its statistics, one packet.

Two versions of the same function. ``packet_numpy`` is what callers write on
upstream's numpy outputs. ``packet_torch`` computes the same statistics where
the tensors live and copies nine numbers to the host once, at the very end.
"""

from __future__ import annotations

import json
from typing import Any, Dict

import numpy as np
import torch


def _packet(index: int, score: float, area: int, cy: float, cx: float, box: Any) -> Dict[str, Any]:
    empty = area == 0
    return {
        "mask_index": index,
        "score": round(score, 6),
        "area_px": area,
        "centroid_xy": None if empty else [round(cx, 3), round(cy, 3)],
        "bbox_xyxy": None if empty else [int(v) for v in box],
    }


def packet_numpy(masks: np.ndarray, scores: np.ndarray) -> str:
    index = int(scores.argmax())
    best = masks[index]
    ys, xs = np.nonzero(best)
    area = int(ys.size)
    if area:
        cy, cx, box = float(ys.mean()), float(xs.mean()), (xs.min(), ys.min(), xs.max(), ys.max())
    else:
        cy = cx = 0.0
        box = (0, 0, 0, 0)
    return json.dumps(_packet(index, float(scores[index]), area, cy, cx, box))


def packet_torch(masks: torch.Tensor, scores: torch.Tensor) -> str:
    index = scores.argmax()
    best = masks.index_select(0, index.view(1))[0]
    height, width = best.shape
    rows = best.sum(dim=1, dtype=torch.float64)
    cols = best.sum(dim=0, dtype=torch.float64)
    area = rows.sum()
    ys = torch.arange(height, device=best.device, dtype=torch.float64)
    xs = torch.arange(width, device=best.device, dtype=torch.float64)
    # First and last occupied row/column, by argmax over the 0/1 occupancy.
    row_any = (rows > 0).to(torch.uint8)
    col_any = (cols > 0).to(torch.uint8)
    y0 = row_any.argmax()
    y1 = height - 1 - row_any.flip(0).argmax()
    x0 = col_any.argmax()
    x1 = width - 1 - col_any.flip(0).argmax()
    safe = area.clamp(min=1)
    numbers = torch.stack(
        [
            index.to(torch.float64),
            scores.index_select(0, index.view(1))[0].to(torch.float64),
            area,
            (rows * ys).sum() / safe,
            (cols * xs).sum() / safe,
            x0.to(torch.float64),
            y0.to(torch.float64),
            x1.to(torch.float64),
            y1.to(torch.float64),
        ]
    )
    # The one device-to-host copy of the frame: the application's own result.
    n = numbers.cpu().tolist()
    return json.dumps(_packet(int(n[0]), n[1], int(n[2]), n[3], n[4], n[5:9]))
