"""Wire formats for masks: base64 PNG, COCO RLE, polygons, boxes."""
import base64
import io

import cv2
import numpy as np
from PIL import Image
from pycocotools import mask as mask_utils


def png_b64(mask) -> str:
    img = Image.fromarray(mask.astype(np.uint8) * 255)  # expect: astype
    buf = io.BytesIO()
    img.save(buf, format="PNG", optimize=True)
    return base64.b64encode(buf.getvalue()).decode("ascii")


def coco_rle(mask) -> dict:
    rle = mask_utils.encode(np.asfortranarray(mask))  # expect: np.asfortranarray
    rle["counts"] = rle["counts"].decode("ascii")
    return rle


def polygons(mask, min_area: float = 16.0):
    u8 = np.ascontiguousarray(mask, dtype=np.uint8)  # expect: np.ascontiguousarray
    contours, _ = cv2.findContours(u8, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    return [c.reshape(-1).tolist() for c in contours if cv2.contourArea(c) >= min_area]


def bbox_xywh(mask):
    rows = mask.any(axis=1)
    cols = mask.any(axis=0)
    if not rows.any():
        return [0, 0, 0, 0]
    y0, y1 = np.flatnonzero(rows)[[0, -1]]  # expect: np.flatnonzero
    x0, x1 = np.flatnonzero(cols)[[0, -1]]  # expect: np.flatnonzero
    return [int(x0), int(y0), int(x1 - x0 + 1), int(y1 - y0 + 1)]
