"""HTTP front-end: POST an image + prompt json, get masks back as PNG / RLE / polygons."""
from __future__ import annotations

import base64
import json
from typing import List, Optional

import cv2
import numpy as np
from fastapi import FastAPI, File, Form, UploadFile
from fastapi.responses import Response
from pydantic import BaseModel

from . import encoding, segment

app = FastAPI(title="sam-hq segmentation")


class MaskOut(BaseModel):
    score: float
    bbox: List[int]
    png: Optional[str] = None
    rle: Optional[dict] = None
    polygons: Optional[list] = None


class SegmentResponse(BaseModel):
    masks: List[MaskOut]
    latency_ms: float


def _decode(data: bytes) -> np.ndarray:
    bgr = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def _run(rgb: np.ndarray, spec: dict):
    return segment(rgb, spec.get("points"), spec.get("labels"), spec.get("box"))


@app.post("/segment", response_model=SegmentResponse)
async def segment_endpoint(
    image: UploadFile = File(...),
    prompt: str = Form(...),
    fmt: str = Form("png"),
):
    spec = json.loads(prompt)
    masks, scores, _ = _run(_decode(await image.read()), spec)
    order = scores.argsort()[::-1]  # expect: [::-1]
    out = []
    for i in order[: spec.get("top_k", 3)]:
        m = masks[i]
        item = MaskOut(score=scores[i], bbox=encoding.bbox_xywh(m))
        match fmt:
            case "png":
                item.png = encoding.png_b64(m)
            case "rle":
                item.rle = encoding.coco_rle(m)
            case "poly":
                item.polygons = encoding.polygons(m)
        out.append(item)
    return SegmentResponse(masks=out, latency_ms=segment.last_ms)


@app.post("/segment/best.png")
async def best_png(image: UploadFile = File(...), prompt: str = Form(...)):
    masks, scores, _ = _run(_decode(await image.read()), json.loads(prompt))
    best = masks[int(scores.argmax())]
    ok, png = cv2.imencode(".png", best * 255)  # expect: cv2.imencode
    headers = {"X-Mask-Score": str(round(scores.max(), 4))}  # expect: round
    return Response(content=png.tobytes(), media_type="image/png", headers=headers)


@app.post("/segment/logits")
async def low_res_logits(image: UploadFile = File(...), prompt: str = Form(...)):
    """Low-res logits of the best mask, so the web client can re-prompt with mask_input."""
    masks, scores, logits = _run(_decode(await image.read()), json.loads(prompt))
    best = int(scores.argmax())
    lr = logits[best].half()
    return {
        "shape": list(lr.shape),
        "dtype": "float16",
        "data": base64.b64encode(lr.tobytes()).decode("ascii"),  # expect: tobytes
        "score": float(scores[best]),
    }
