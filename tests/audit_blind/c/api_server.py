"""HTTP segmentation service (FastAPI) on EfficientViT-SAM.

    uvicorn api_server:app --host 0.0.0.0 --port 8080 --workers 1

POST /v1/segment        multipart image + JSON box/points -> COCO RLE masks
POST /v1/segment.png    same, best mask only, as a PNG
POST /v1/logits         low-res logits for client-side refinement
POST /v1/quick-box      single box through the nn.Module wrapper
POST /v1/segment-lite   CPU-friendly path used by the batch exporter
"""

from __future__ import annotations

import base64
import json
import logging
import threading
from contextlib import asynccontextmanager
from dataclasses import asdict, dataclass, field
from typing import List, Optional

import cv2
import numpy as np
import torch
from fastapi import FastAPI, File, Form, HTTPException, UploadFile
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import Response
from pycocotools import mask as mask_utils

from efficientvit.models.efficientvit.sam import EfficientViTSamPredictor
from efficientvit.sam_model_zoo import create_efficientvit_sam_model

from sam_tools.engine import SamForward

log = logging.getLogger("segsvc")
MODEL_NAME = "efficientvit-sam-xl1"
WEIGHTS = "/opt/weights/efficientvit_sam_xl1.pt"

_predict_lock = threading.Lock()


@dataclass
class Prompt:
    box: Optional[List[float]] = None
    points: Optional[List[List[float]]] = None
    labels: Optional[List[int]] = None
    multimask: bool = False


@dataclass
class Segment:
    mask: object
    score: float
    prompt: Prompt
    extra: dict = field(default_factory=dict)


@asynccontextmanager
async def lifespan(app: FastAPI):
    model = create_efficientvit_sam_model(MODEL_NAME, True, WEIGHTS).cuda().eval()
    app.state.predictor = EfficientViTSamPredictor(model)
    app.state.forward = SamForward(app.state.predictor)
    log.info("loaded %s", MODEL_NAME)
    yield
    torch.cuda.empty_cache()


app = FastAPI(title="segsvc", lifespan=lifespan)


def _decode_image(raw: bytes) -> np.ndarray:
    buf = np.frombuffer(raw, dtype=np.uint8)
    bgr = cv2.imdecode(buf, cv2.IMREAD_COLOR)
    if bgr is None:
        raise HTTPException(status_code=415, detail="not an image")
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def _parse_prompt(prompt_json: str) -> Prompt:
    try:
        return Prompt(**json.loads(prompt_json))
    except (TypeError, ValueError) as exc:
        raise HTTPException(status_code=422, detail=f"bad prompt: {exc}")


def _kwargs(p: Prompt) -> dict:
    kw = {"multimask_output": p.multimask}
    if p.box is not None:
        kw["box"] = np.asarray(p.box, dtype=np.float32)
    if p.points:
        kw["point_coords"] = np.asarray(p.points, dtype=np.float32)
        kw["point_labels"] = np.asarray(p.labels or [1] * len(p.points), dtype=np.int32)
    return kw


def _run(predictor, image: np.ndarray, prompt: Prompt) -> List[Segment]:
    with _predict_lock:
        predictor.set_image(image)
        try:
            masks, scores, _ = predictor.predict(**_kwargs(prompt))
        except torch.cuda.OutOfMemoryError:
            log.warning("OOM on %s image, retrying after empty_cache", image.shape)
            torch.cuda.empty_cache()
            masks, scores, _ = predictor.predict(**_kwargs(prompt))
    return [Segment(mask=m, score=float(s), prompt=prompt) for m, s in zip(masks, scores)]


def _encode(seg: Segment) -> dict:
    rle = mask_utils.encode(np.asfortranarray(seg.mask.astype(np.uint8)))  # expect: astype
    rle["counts"] = rle["counts"].decode("ascii")
    return {
        "segmentation": rle,
        "area": int(seg.mask.sum()),
        "bbox": [float(v) for v in mask_utils.toBbox(rle)],
        "score": round(seg.score, 4),
        "prompt": asdict(seg.prompt),
    }


@app.post("/v1/segment")
async def segment(image: UploadFile = File(...), prompt: str = Form(...)):
    img = _decode_image(await image.read())
    segs = await run_in_threadpool(_run, app.state.predictor, img, _parse_prompt(prompt))
    segs.sort(key=lambda s: s.score, reverse=True)
    return {"height": img.shape[0], "width": img.shape[1], "segments": [_encode(s) for s in segs]}


@app.post("/v1/segment.png")
async def segment_png(image: UploadFile = File(...), prompt: str = Form(...)):
    img = _decode_image(await image.read())
    segs = await run_in_threadpool(_run, app.state.predictor, img, _parse_prompt(prompt))
    best = max(segs, key=lambda s: s.score)
    ok, png = cv2.imencode(".png", best.mask * np.uint8(255))  # expect: cv2.imencode
    if not ok:
        raise HTTPException(status_code=500, detail="encode failed")
    return Response(content=png.tobytes(), media_type="image/png", headers={"X-Score": f"{best.score:.4f}"})


@app.post("/v1/logits")
async def logits(image: UploadFile = File(...), prompt: str = Form(...)):
    img = _decode_image(await image.read())
    p = _parse_prompt(prompt)

    def work():
        with _predict_lock:
            app.state.predictor.set_image(img)
            return app.state.predictor.predict(**_kwargs(p), return_logits=False)

    masks, scores, low_res = await run_in_threadpool(work)
    k = int(scores.argmax())
    payload = low_res[k].astype(np.float16).tobytes()  # expect: astype
    return {"shape": [256, 256], "dtype": "float16", "score": scores[k].item(),
            "data": base64.b64encode(payload).decode("ascii")}


@app.post("/v1/quick-box")
async def quick_box(image: UploadFile = File(...), box: str = Form(...)):
    img = _decode_image(await image.read())
    xyxy = [float(v) for v in json.loads(box)]

    def work():
        with _predict_lock:
            return app.state.forward(img, xyxy)

    mask, score = await run_in_threadpool(work)
    return {"score": round(score, 3), "area": int(mask.sum()), "box": xyxy}  # expect: round


@app.post("/v1/segment-lite")
async def segment_lite(image: UploadFile = File(...), prompt: str = Form(...)):
    """Same contract as /v1/segment but returns numpy straight from the shim."""
    img = _decode_image(await image.read())
    p = _parse_prompt(prompt)

    def work():
        with _predict_lock:
            app.state.predictor.set_image(img)
            return app.state.predictor.predict(**_kwargs(p), as_numpy=True)

    masks, scores, _ = await run_in_threadpool(work)
    keep = np.flatnonzero(scores >= 0.5)
    union = np.any(masks[keep], axis=0) if keep.size else np.zeros(img.shape[:2], bool)
    rle = mask_utils.encode(np.asfortranarray(union.astype(np.uint8)))
    rle["counts"] = rle["counts"].decode("ascii")
    return {"segmentation": rle, "scores": [round(float(s), 4) for s in scores[keep]],
            "area": int(np.count_nonzero(union))}


@app.get("/healthz")
def healthz():
    return {"ok": True, "cuda": torch.cuda.is_available(), "model": MODEL_NAME}
