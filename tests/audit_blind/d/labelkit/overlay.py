"""Drawing + export helpers shared by the window and the batch exporter.

Everything in here was written against numpy masks (HxW bool) - the brush tool
and the PNG importer still produce those.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from typing import Iterable, List, Sequence, Tuple

import cv2
import numpy as np
from PyQt5 import QtGui

PALETTE: List[Tuple[int, int, int]] = [
    (230, 25, 75), (60, 180, 75), (255, 225, 25), (0, 130, 200),
    (245, 130, 48), (145, 30, 180), (70, 240, 240), (240, 50, 230),
]


def color_for(index: int) -> Tuple[int, int, int]:
    return PALETTE[index % len(PALETTE)]


def tint(rgb: np.ndarray, mask, color, alpha: float = 0.45) -> np.ndarray:
    out = rgb.astype(np.float32)
    out[mask] = (1.0 - alpha) * out[mask] + alpha * np.asarray(color, np.float32)  # expect: ndarray bool index
    return out.clip(0, 255).astype(np.uint8)


def to_qimage(rgb: np.ndarray) -> QtGui.QImage:
    rgb = np.ascontiguousarray(rgb)
    h, w = rgb.shape[:2]
    return QtGui.QImage(rgb.data, w, h, 3 * w, QtGui.QImage.Format_RGB888).copy()


def outline_path(mask, simplify: float = 1.0) -> QtGui.QPainterPath:
    m8 = mask.astype(np.uint8)  # expect: astype
    contours, _ = cv2.findContours(m8, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    path = QtGui.QPainterPath()
    for c in contours:
        c = cv2.approxPolyDP(c, simplify, True).reshape(-1, 2)
        if len(c) < 3:
            continue
        path.moveTo(float(c[0, 0]), float(c[0, 1]))
        for x, y in c[1:]:
            path.lineTo(float(x), float(y))
        path.closeSubpath()
    return path


def mask_bbox(mask) -> Tuple[int, int, int, int]:
    rows = np.any(mask, axis=1)  # expect: np.any
    cols = np.any(mask, axis=0)  # expect: np.any
    if not rows.any():
        return 0, 0, 0, 0
    y0, y1 = np.where(rows)[0][[0, -1]]
    x0, x1 = np.where(cols)[0][[0, -1]]
    return int(x0), int(y0), int(x1) + 1, int(y1) + 1


def brush_stroke(shape: Tuple[int, int], points: Sequence[Tuple[int, int]], radius: int) -> np.ndarray:
    canvas = np.zeros(shape, np.uint8)
    for x, y in points:
        cv2.circle(canvas, (int(x), int(y)), radius, 1, -1)
    return canvas.astype(bool)


def write_label_png(path: str, shape: Tuple[int, int], masks: Iterable) -> None:
    """Pascal VOC style SegmentationObject PNG (instance ids)."""
    label = np.zeros(shape, np.uint8)
    for i, m in enumerate(masks, start=1):
        if hasattr(m, "cpu"):
            m = m.cpu().numpy()
        label[m] = i
    cv2.imwrite(path, label)


def write_voc_xml(path: str, filename: str, shape: Tuple[int, int, int], items) -> None:
    root = ET.Element("annotation")
    ET.SubElement(root, "filename").text = filename
    size = ET.SubElement(root, "size")
    for tag, val in zip(("height", "width", "depth"), shape):
        ET.SubElement(size, tag).text = str(val)
    ET.SubElement(root, "segmented").text = "1"
    for it in items:
        obj = ET.SubElement(root, "object")
        ET.SubElement(obj, "name").text = it.label
        ET.SubElement(obj, "difficult").text = "0"
        x0, y0, x1, y1 = mask_bbox(it.mask)
        bb = ET.SubElement(obj, "bndbox")
        for tag, val in zip(("xmin", "ymin", "xmax", "ymax"), (x0, y0, x1, y1)):
            ET.SubElement(bb, tag).text = str(val)
    ET.ElementTree(root).write(path)
