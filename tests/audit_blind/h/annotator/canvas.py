"""Click-to-segment canvas used by the labelling team (PyQt5 + SAM 2.1)."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import samgpu_shim  # noqa: F401
import torch
from PIL import Image
from PyQt5 import QtCore, QtGui, QtWidgets
from sam2.build_sam import build_sam2
from sam2.sam2_image_predictor import SAM2ImagePredictor
from skimage import measure

CFG = "configs/sam2.1/sam2.1_hiera_b+.yaml"
CKPT = "checkpoints/sam2.1_hiera_base_plus.pt"
GREEN = np.array([0, 160, 0], np.float32)


class MaskCanvas(QtWidgets.QLabel):
    maskChanged = QtCore.pyqtSignal(int)

    def __init__(self, parent=None):
        super().__init__(parent)
        self.predictor = SAM2ImagePredictor(build_sam2(CFG, CKPT, device="cuda"))
        self.image = None
        self.points, self.labels = [], []
        self.masks = self.scores = self.logits = None
        self.current = 0
        self.undo_stack = []

    # ------------------------------------------------------------------ io
    def load(self, path: str) -> None:
        self.image = np.array(Image.open(path).convert("RGB"))
        with torch.inference_mode(), torch.autocast("cuda", dtype=torch.bfloat16):
            self.predictor.set_image(self.image)
        self.points.clear()
        self.labels.clear()
        self.masks = self.scores = self.logits = None
        self._repaint()

    # -------------------------------------------------------------- events
    def mousePressEvent(self, ev):
        if self.image is None:
            return
        self.points.append([ev.x(), ev.y()])
        self.labels.append(1 if ev.button() == QtCore.Qt.LeftButton else 0)
        prev = None if self.logits is None else self.logits[self.current][None]
        with torch.inference_mode(), torch.autocast("cuda", dtype=torch.bfloat16):
            self.masks, self.scores, self.logits = self.predictor.predict(
                point_coords=np.array(self.points, np.float32),
                point_labels=np.array(self.labels, np.int32),
                mask_input=prev,
                multimask_output=len(self.points) == 1,
            )
        self.current = int(self.scores.argmax())
        self.maskChanged.emit(self.current)
        self._repaint()

    def keyPressEvent(self, ev):
        if ev.key() == QtCore.Qt.Key_Tab and self.masks is not None:
            self.current = (self.current + 1) % len(self.masks)
            self.maskChanged.emit(self.current)
            self._repaint()
        else:
            super().keyPressEvent(ev)

    # ------------------------------------------------------------- drawing
    def _repaint(self) -> None:
        if self.image is None:
            return
        vis = self.image.copy()
        if self.masks is not None:
            sel = self.masks[self.current] > 0.5
            vis[sel] = (0.5 * vis[sel] + GREEN).astype(np.uint8)  # expect: ndarray index
        h, w, _ = vis.shape
        qimg = QtGui.QImage(vis.data, w, h, 3 * w, QtGui.QImage.Format_RGB888)
        self.setPixmap(QtGui.QPixmap.fromImage(qimg.copy()))

    # -------------------------------------------------------------- commit
    def accept(self) -> None:
        self.undo_stack.append((self.masks[self.current].copy(), list(self.points)))  # expect: copy
        self.points, self.labels = [], []

    def export(self, out_dir: Path, stem: str) -> None:
        m = self.masks[self.current]
        np.save(out_dir / f"{stem}.npy", m)  # expect: np.save
        meta = {
            "score": float(self.scores[self.current]),
            "points": self.points,
            "area": int(m.sum()),
            "fill": m.mean(),
        }
        (out_dir / f"{stem}.json").write_text(json.dumps(meta, indent=1))  # expect: json.dumps
        outline = measure.find_contours(m, 0.5)  # expect: unscanned measure.find_contours
        (out_dir / f"{stem}.poly.json").write_text(json.dumps([c[:, ::-1].tolist() for c in outline]))


class AnnotatorWindow(QtWidgets.QMainWindow):
    def __init__(self):
        super().__init__()
        self.canvas = MaskCanvas(self)
        self.setCentralWidget(self.canvas)
        self.status = self.statusBar()
        self.canvas.maskChanged.connect(
            lambda i: self.status.showMessage(f"mask {i}  predicted IoU {self.canvas.scores[i]:.3f}")
        )
        save = QtWidgets.QAction("Save", self, shortcut="Ctrl+S")
        save.triggered.connect(lambda: self.canvas.export(Path("out"), "current"))
        self.addAction(save)
