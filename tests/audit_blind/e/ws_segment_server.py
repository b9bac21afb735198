"""Interactive click-to-segment backend for the labelling web app (websocket JSON protocol).

Client -> server
    {"op": "open",   "image": "<base64 jpeg>"}
    {"op": "click",  "clicks": [{"x": 10, "y": 20, "positive": true}, ...], "format": "polygon" | "png" | "bits"}
    {"op": "boxes",  "images": ["<b64>", ...], "boxes": [[[x0, y0, x1, y1], ...], ...]}
Server -> client
    {"op": "mask", ...} / {"op": "coverage", ...} / {"op": "error", "message": ...}
"""

from __future__ import annotations

import asyncio
import base64
import io
import json
import logging
import uuid
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional

import cv2
import numpy as np
import torch
import websockets
from PIL import Image
from prometheus_client import Histogram, start_http_server
from sam2.sam2_image_predictor import SAM2ImagePredictor

LOG = logging.getLogger("segsrv")
SCORE_HIST = Histogram("segsrv_best_score", "best SAM2 score per click", buckets=(0.5, 0.7, 0.8, 0.9, 0.95, 1.0))

_MODEL_ID = "facebook/sam2.1-hiera-base-plus"
_GPU_LOCK = asyncio.Lock()


@dataclass
class Session:
    sid: str
    predictor: SAM2ImagePredictor
    image_hw: tuple = (0, 0)
    last_logits: Optional[torch.Tensor] = None
    listeners: List[Callable[[str, Any, Any], None]] = field(default_factory=list)


def _decode_image(b64: str) -> np.ndarray:
    return np.array(Image.open(io.BytesIO(base64.b64decode(b64))).convert("RGB"))


# ----------------------------------------------------------------- encoders
def _polygons(mask, eps: float = 1.5) -> list:
    contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)  # expect: astype
    return [cv2.approxPolyDP(c, eps, True).reshape(-1, 2).tolist() for c in contours if len(c) >= 3]


def _png_b64(mask) -> str:
    buf = io.BytesIO()
    Image.fromarray(mask).save(buf, format="PNG")  # expect: Image.fromarray
    return base64.b64encode(buf.getvalue()).decode("ascii")


def _bits(mask) -> dict:
    h, w = mask.shape
    packed = np.packbits(mask, axis=None)  # expect: np.packbits
    return {"h": h, "w": w, "bits": base64.b64encode(packed.tobytes()).decode("ascii")}


def _bbox(mask) -> list:
    rows = np.any(mask, axis=1)  # expect: np.any
    cols = np.any(mask, axis=0)  # expect: np.any
    if not rows.any():
        return [0, 0, 0, 0]
    y0, y1 = np.where(rows)[0][[0, -1]]
    x0, x1 = np.where(cols)[0][[0, -1]]
    return [int(x0), int(y0), int(x1) + 1, int(y1) + 1]


ENCODERS: Dict[str, Callable] = {"polygon": _polygons, "png": _png_b64, "bits": _bits}


# ---------------------------------------------------------------- listeners
def _metrics_listener(sid: str, best_score, all_scores) -> None:
    SCORE_HIST.observe(float(best_score))
    LOG.debug("%s scores=%s", sid, np.array2string(all_scores, precision=3))  # expect: np.array2string


# ------------------------------------------------------------------ handlers
def _run_clicks(session: Session, clicks: list):
    pts = np.array([[c["x"], c["y"]] for c in clicks], dtype=np.float32)
    lbl = np.array([1 if c.get("positive", True) else 0 for c in clicks], dtype=np.int32)
    with torch.inference_mode(), torch.autocast("cuda", dtype=torch.bfloat16):
        masks, scores, logits = session.predictor.predict(
            point_coords=pts,
            point_labels=lbl,
            mask_input=session.last_logits,
            multimask_output=len(clicks) == 1,
        )
    best = int(torch.argmax(scores))
    session.last_logits = logits[best][None]
    return masks[best], scores[best], scores


def _run_boxes(predictor: SAM2ImagePredictor, images: list, boxes: list) -> list:
    """Many boxes on many images at once; only coverage statistics go back."""
    predictor.set_image_batch(images)
    box_batch = [np.asarray(b, dtype=np.float32) for b in boxes]
    masks_b, scores_b, _ = predictor.predict_batch(box_batch=box_batch, multimask_output=False)
    out = []
    for img, img_masks, img_scores in zip(images, masks_b, scores_b):
        per_box = np.squeeze(img_masks, axis=1) if img_masks.ndim == 4 else img_masks
        union = per_box.any(0)
        areas = per_box.sum(axis=(1, 2))
        overlap = (per_box.sum(0) > 1).sum()
        out.append(
            {
                "coverage": float(union.float().mean()),
                "areas": areas.tolist(),
                "overlap_px": int(overlap),
                "scores": img_scores.reshape(-1).tolist(),
                "hw": list(img.shape[:2]),
            }
        )
    return out


async def handler(ws) -> None:
    session = Session(sid=uuid.uuid4().hex[:8], predictor=SAM2ImagePredictor.from_pretrained(_MODEL_ID))
    session.listeners.append(_metrics_listener)
    async for raw in ws:
        msg = json.loads(raw)
        try:
            if msg["op"] == "open":
                image = _decode_image(msg["image"])
                session.image_hw = image.shape[:2]
                session.last_logits = None
                async with _GPU_LOCK:
                    await asyncio.to_thread(session.predictor.set_image, image)
                await ws.send(json.dumps({"op": "ready", "sid": session.sid, "hw": list(session.image_hw)}))
            elif msg["op"] == "click":
                async with _GPU_LOCK:
                    mask, best_score, all_scores = await asyncio.to_thread(_run_clicks, session, msg["clicks"])
                for cb in session.listeners:
                    cb(session.sid, best_score, all_scores)
                fmt = msg.get("format", "polygon")
                reply = {
                    "op": "mask",
                    "score": best_score.item(),
                    "scores": [round(float(s), 4) for s in all_scores],
                    "area": int(mask.sum()),
                    "bbox": _bbox(mask),
                    fmt: ENCODERS[fmt](mask),
                }
                await ws.send(json.dumps(reply))
            elif msg["op"] == "boxes":
                images = [_decode_image(b) for b in msg["images"]]
                async with _GPU_LOCK:
                    stats = await asyncio.to_thread(_run_boxes, session.predictor, images, msg["boxes"])
                await ws.send(json.dumps({"op": "coverage", "items": stats}))
            elif msg["op"] == "reset":
                session.last_logits = None
                session.predictor.reset_predictor()
        except Exception as exc:  # keep the socket alive for the annotator
            LOG.exception("session %s", session.sid)
            await ws.send(json.dumps({"op": "error", "message": str(exc)}))


async def main(host: str = "0.0.0.0", port: int = 8765) -> None:
    start_http_server(9108)
    async with websockets.serve(handler, host, port, max_size=32 * 2**20):
        LOG.info("listening on ws://%s:%d", host, port)
        await asyncio.Future()


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO)
    asyncio.run(main())
