"""HTTP segmentation micro-service (Flask) with a Celery queue for bulk jobs.

    gunicorn -w 1 -b 0.0.0.0:8080 flask_seg_service:app
    celery -A flask_seg_service.celery worker -c 1 -Q sam
"""

from __future__ import annotations

import base64
import io
import os
import threading

import cv2
import numpy as np
import requests
import torch
from celery import Celery
from flask import Flask, abort, jsonify, request, send_file
from PIL import Image

from acme_maskcodec import rle as acme_rle

MODEL_ROOT = os.environ.get("SAM_MODEL_ROOT", "/models")
DEVICE = "cuda"

app = Flask(__name__)
celery = Celery(__name__, broker=os.environ.get("BROKER_URL", "redis://localhost:6379/0"))
celery.conf.task_routes = {"flask_seg_service.segment_many": {"queue": "sam"}}

_lock = threading.Lock()
_PREDICTORS = {}


def _build(name: str):
    if name == "sam_vit_h":
        from segment_anything import SamPredictor, sam_model_registry
        sam = sam_model_registry["vit_h"](checkpoint=f"{MODEL_ROOT}/sam_vit_h_4b8939.pth").to(DEVICE)
        return SamPredictor(sam)
    if name == "mobile_sam":
        from mobile_sam import SamPredictor as MobilePredictor, sam_model_registry as mreg
        sam = mreg["vit_t"](checkpoint=f"{MODEL_ROOT}/mobile_sam.pt").to(DEVICE).eval()
        return MobilePredictor(sam)
    if name == "efficientvit_l1":
        from efficientvit.models.efficientvit.sam import EfficientViTSamPredictor
        from efficientvit.sam_model_zoo import create_efficientvit_sam_model
        m = create_efficientvit_sam_model("efficientvit-sam-l1", True, f"{MODEL_ROOT}/efficientvit_sam_l1.pt")
        return EfficientViTSamPredictor(m.to(DEVICE).eval())
    if name == "sam2_large":
        from sam2.build_sam import build_sam2
        from sam2.sam2_image_predictor import SAM2ImagePredictor
        return SAM2ImagePredictor(build_sam2("configs/sam2.1/sam2.1_hiera_l.yaml",
                                             f"{MODEL_ROOT}/sam2.1_hiera_large.pt", device=DEVICE))
    raise KeyError(name)


def get_predictor(name: str):
    with _lock:
        if name not in _PREDICTORS:
            _PREDICTORS[name] = _build(name)
        return _PREDICTORS[name]


def _decode_image(payload: dict) -> np.ndarray:
    if "image_b64" in payload:
        raw = base64.b64decode(payload["image_b64"])
    else:
        raw = requests.get(payload["image_url"], timeout=10).content
    return np.array(Image.open(io.BytesIO(raw)).convert("RGB"))


def _prompt_kwargs(payload: dict) -> dict:
    kw = {"multimask_output": bool(payload.get("multimask", True))}
    if payload.get("points"):
        kw["point_coords"] = np.asarray(payload["points"], np.float32)
        kw["point_labels"] = np.asarray(payload.get("labels", [1] * len(payload["points"])), np.int32)
    if payload.get("box"):
        kw["box"] = np.asarray(payload["box"], np.float32)
    return kw


def mask_to_polygons(mask, min_points: int = 4):
    contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)  # expect: astype
    return [c.reshape(-1).tolist() for c in contours if len(c) >= min_points]


@app.post("/v1/segment")
def segment():
    payload = request.get_json(force=True)
    name = payload.get("model", "sam_vit_h")
    try:
        net = get_predictor(name)
    except KeyError:
        abort(404, f"unknown model {name}")
    img = _decode_image(payload)
    with _lock, torch.inference_mode():
        net.set_image(img)
        masks, scores, logits = net.predict(**_prompt_kwargs(payload))
    best = int(scores.argmax())
    body = {
        "model": name,
        "iou_predictions": scores.tolist(),
        "best": best,
        "counts": acme_rle.encode(masks[best]),  # expect: unscanned acme_rle.encode
        "polygons": mask_to_polygons(masks[best]),
        "area": int(masks[best].sum()),
    }
    if payload.get("return_all"):
        body["all_areas"] = [int(m.sum()) for m in masks]
    if payload.get("return_logits"):
        # client feeds these back as mask_input on the next click
        body["low_res_logits_f16_b64"] = base64.b64encode(logits[best].astype(np.float16).tobytes()).decode()  # expect: astype
    return jsonify(body)


@app.post("/v1/segment.png")
def segment_png():
    payload = request.get_json(force=True)
    net = get_predictor(payload.get("model", "mobile_sam"))
    img = _decode_image(payload)
    with _lock:
        net.set_image(img)
        masks, scores, _ = net.predict(**_prompt_kwargs(payload))
    pick = masks[scores.argmax()]
    buf = io.BytesIO()
    Image.fromarray(pick).save(buf, format="PNG")  # expect: Image.fromarray
    buf.seek(0)
    resp = send_file(buf, mimetype="image/png")
    resp.headers["X-Mask-Score"] = f"{scores.max():.4f}"
    return resp


@app.post("/v1/detect-and-segment")
def detect_and_segment():
    """YOLO boxes -> SAM masks; the YOLO part returns ultralytics Results."""
    from ultralytics import YOLO

    payload = request.get_json(force=True)
    img = _decode_image(payload)
    det = YOLO(f"{MODEL_ROOT}/yolov8m.pt").predict(img, conf=0.35, verbose=False)[0]
    boxes = det.boxes.xyxy.cpu().numpy()
    classes = det.boxes.cls.cpu().numpy().astype(int)
    net = get_predictor("sam_vit_h")
    out = []
    with _lock:
        net.set_image(img)
        for box, cls in zip(boxes, classes):
            m, s, _ = net.predict(box=box, multimask_output=False, as_numpy=True)
            out.append({
                "class": det.names[int(cls)],
                "box": box.round(1).tolist(),
                "score": float(s[0]),
                "polygons": mask_to_polygons(m[0]),
                "png_b64": base64.b64encode(cv2.imencode(".png", m[0].astype(np.uint8) * 255)[1]).decode(),
            })
    return jsonify(objects=out)


@app.post("/v1/score")
def score_only():
    payload = request.get_json(force=True)
    net = get_predictor(payload.get("model", "efficientvit_l1"))
    img = _decode_image(payload)
    with _lock:
        net.set_image(img)
        _, scores, _ = net.predict(**_prompt_kwargs(payload))
    return jsonify(model=payload.get("model", "efficientvit_l1"), best_score=scores.max())  # expect: jsonify


@celery.task(name="flask_seg_service.segment_many", acks_late=True)
def segment_many(image_urls, boxes_per_image, model="sam2_large"):
    """Bulk job: one SAM 2 batched call for a list of images with box prompts."""
    net = get_predictor(model)
    images = [_decode_image({"image_url": u}) for u in image_urls]
    net.set_image_batch(images)
    all_masks, all_ious, _ = net.predict_batch(
        box_batch=[np.asarray(b, np.float32) for b in boxes_per_image],
        multimask_output=False,
    )
    results = []
    for url, masks, ious in zip(image_urls, all_masks, all_ious):
        flat = masks.reshape(-1, *masks.shape[-2:])
        results.append({
            "url": url,
            "ious": ious.reshape(-1).tolist(),
            "polygons": [mask_to_polygons(m) for m in flat],
            "coverage": float(flat.any(axis=0).sum()) / (flat.shape[-2] * flat.shape[-1]),
        })
    return results
