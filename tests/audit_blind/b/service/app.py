"""HTTP front of the segmentation engine (FastAPI)."""

import base64
import io
import json
import time
from collections import defaultdict

import cv2
import numpy as np
import torch
from fastapi import FastAPI, File, Form, HTTPException, UploadFile
from fastapi.responses import JSONResponse, Response
from PIL import Image
from pycocotools import mask as mask_utils

from service.engine import SamEngine, SegResult

app = FastAPI(title="segment")
engine = SamEngine()


class ResultStore:
    """Per-session results in preallocated numpy buffers (exported as .npz)."""

    def __init__(self, capacity: int, height: int, width: int):
        self.store = {
            "masks": np.zeros((capacity, height, width), dtype=bool),
            "scores": np.zeros(capacity, dtype=np.float32),
            "boxes": np.full((capacity, 4), np.nan, dtype=np.float32),
        }
        self.n = 0

    def add(self, result: SegResult) -> int:
        i = self.n
        self.store["masks"][i] = result.mask  # expect: ndarray[i] = mask
        self.store["scores"][i] = result.score
        if result.box is not None:
            self.store["boxes"][i] = result.box
        self.n += 1
        return i

    def add_from_npz(self, path) -> None:
        data = np.load(path)
        k = len(data["scores"])
        self.store["masks"][self.n:self.n + k] = data["masks"]
        self.store["scores"][self.n:self.n + k] = data["scores"]
        self.n += k

    def union(self):
        return self.store["masks"][: self.n].any(axis=0)

    def dump(self) -> bytes:
        buf = io.BytesIO()
        np.savez_compressed(buf, **{k: v[: self.n] for k, v in self.store.items()})
        return buf.getvalue()


sessions = defaultdict(lambda: ResultStore(64, 1080, 1920))


def _read(upload: UploadFile) -> np.ndarray:
    data = np.frombuffer(upload.file.read(), np.uint8)
    img = cv2.imdecode(data, cv2.IMREAD_COLOR)
    if img is None:
        raise HTTPException(400, "not an image")
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


def mask_to_bbox(mask):
    ys, xs = np.nonzero(mask)  # expect: np.nonzero()
    if len(ys) == 0:
        return None
    return [int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1]


def _rle(mask):
    rle = mask_utils.encode(np.asfortranarray(mask, dtype=np.uint8))  # expect: np.asfortranarray()
    return {"size": rle["size"], "counts": rle["counts"].decode()}


@app.post("/segment/point")
async def segment_point(file: UploadFile = File(...), x: float = Form(...), y: float = Form(...)):
    image = _read(file)
    t0 = time.perf_counter()
    res = engine.predict(image, points=[[x, y]], labels=[1], key=file.filename)
    ms = (time.perf_counter() - t0) * 1e3
    return {"score": round(res.score, 4), "bbox": mask_to_bbox(res.mask), "rle": _rle(res.mask), "ms": ms}  # expect: round()


@app.post("/segment/boxes")
async def segment_boxes(file: UploadFile = File(...), boxes: str = Form(...)):
    image = _read(file)
    results = engine.predict_many(image, json.loads(boxes), key=file.filename)
    body = [{"box": r.box, "score": float(r.score), "area": int(r.mask.sum()), "rle": _rle(r.mask)}
            for r in results]
    return JSONResponse(body)


@app.post("/segment/png")
async def segment_png(file: UploadFile = File(...), x: float = Form(...), y: float = Form(...)):
    image = _read(file)
    res = engine.predict(image, points=[[x, y]], labels=[1])
    png = Image.fromarray(res.mask)  # expect: PIL.Image.fromarray()
    buf = io.BytesIO()
    png.save(buf, format="PNG")
    return Response(buf.getvalue(), media_type="image/png")


@app.post("/segment/overlay")
async def segment_overlay(file: UploadFile = File(...), x: float = Form(...), y: float = Form(...)):
    image = _read(file)
    res = engine.predict(image, points=[[x, y]], labels=[1])
    alpha = res.mask.to(torch.uint8).mul_(255)
    ok, enc = cv2.imencode(".png", alpha)  # expect: cv2.imencode()
    if not ok:
        raise HTTPException(500, "encoding failed")
    return Response(enc.tobytes(), media_type="image/png", headers={"X-Score": f"{res.score:.4f}"})


@app.post("/session/{sid}/add")
async def session_add(sid: str, file: UploadFile = File(...), box: str = Form(...)):
    image = _read(file)
    res = engine.predict(image, box=json.loads(box), key=file.filename)
    i = sessions[sid].add(res)
    return {"index": i, "score": res.score.item(), "n": sessions[sid].n}


@app.get("/session/{sid}/export")
async def session_export(sid: str):
    return Response(sessions[sid].dump(), media_type="application/octet-stream")


@app.post("/segment/legacy")
async def legacy(file: UploadFile = File(...), box: str = Form(...)):
    image = _read(file)
    mask, score = engine.predict_pinned(image, json.loads(box))
    ys, xs = np.nonzero(mask)
    packed = base64.b64encode(np.packbits(mask).tobytes()).decode()
    return {"score": score, "rle": _rle(mask), "n": int(len(xs)), "mask_b64": packed, "shape": list(mask.shape)}
