"""Main window: left click = positive point, right click = negative point,
drag with shift = box prompt, Enter = accept, Ctrl+S = save VOC."""

from __future__ import annotations

import glob
import os
import sys
from typing import List, Optional

import cv2
import numpy as np
from PyQt5 import QtCore, QtGui, QtWidgets

from . import overlay
from .engine import Proposal, SegEngine


class Canvas(QtWidgets.QLabel):
    clicked = QtCore.pyqtSignal(int, int, int)
    boxed = QtCore.pyqtSignal(int, int, int, int)

    def __init__(self, parent=None):
        super().__init__(parent)
        self.setAlignment(QtCore.Qt.AlignTop | QtCore.Qt.AlignLeft)
        self._drag_from: Optional[QtCore.QPoint] = None
        self.outline: Optional[QtGui.QPainterPath] = None

    def mousePressEvent(self, ev: QtGui.QMouseEvent) -> None:
        if ev.modifiers() & QtCore.Qt.ShiftModifier:
            self._drag_from = ev.pos()
            return
        fg = 1 if ev.button() == QtCore.Qt.LeftButton else 0
        self.clicked.emit(ev.pos().x(), ev.pos().y(), fg)

    def mouseReleaseEvent(self, ev: QtGui.QMouseEvent) -> None:
        if self._drag_from is None:
            return
        a, b = self._drag_from, ev.pos()
        self._drag_from = None
        self.boxed.emit(min(a.x(), b.x()), min(a.y(), b.y()), max(a.x(), b.x()), max(a.y(), b.y()))

    def paintEvent(self, ev: QtGui.QPaintEvent) -> None:
        super().paintEvent(ev)
        if self.outline is not None:
            p = QtGui.QPainter(self)
            p.setPen(QtGui.QPen(QtGui.QColor(255, 255, 0), 2))
            p.drawPath(self.outline)
            p.end()


class MainWindow(QtWidgets.QMainWindow):
    def __init__(self, folder: str, variant: str = "vit_l", hq: bool = False):
        super().__init__()
        self.setWindowTitle("labelkit")
        self.engine = SegEngine(variant, hq)
        self.files = sorted(glob.glob(os.path.join(folder, "*.jpg")) + glob.glob(os.path.join(folder, "*.png")))
        self.index = 0
        self.clicks: List[tuple] = []
        self.items: List[Proposal] = []
        self.current: Optional[Proposal] = None
        self.undo: List[object] = []
        self.rgb: Optional[np.ndarray] = None
        self.prior = None  # PNG path from a previous session, or the last accepted mask

        self.canvas = Canvas(self)
        self.setCentralWidget(self.canvas)
        self.canvas.clicked.connect(self.on_click)
        self.canvas.boxed.connect(self.on_box)
        self.label_box = QtWidgets.QComboBox()
        self.label_box.addItems(["person", "car", "bicycle", "dog", "other"])
        tb = self.addToolBar("main")
        tb.addWidget(self.label_box)
        QtWidgets.QShortcut(QtGui.QKeySequence("Return"), self, self.accept)
        QtWidgets.QShortcut(QtGui.QKeySequence("Ctrl+S"), self, self.save)
        QtWidgets.QShortcut(QtGui.QKeySequence("Ctrl+Z"), self, self.undo_last)
        QtWidgets.QShortcut(QtGui.QKeySequence("Ctrl+M"), self, self.merge_with_last)
        QtWidgets.QShortcut(QtGui.QKeySequence("Right"), self, self.next_image)
        self.load(0)

    # ------------------------------------------------------------------ io
    def load(self, index: int) -> None:
        self.index = index
        path = self.files[index]
        self.rgb = cv2.cvtColor(cv2.imread(path), cv2.COLOR_BGR2RGB)
        self.engine.set_image(os.path.basename(path), self.rgb)
        prev_png = os.path.splitext(path)[0] + "_prior.png"
        self.set_prior(prev_png if os.path.exists(prev_png) else None)
        self.clicks.clear()
        self.items = self._load_existing(path)
        self.current = None
        self.redraw()

    def _load_existing(self, image_path: str) -> List[Proposal]:
        png = os.path.splitext(image_path)[0] + "_inst.png"
        if not os.path.exists(png):
            return []
        ids = cv2.imread(png, cv2.IMREAD_UNCHANGED)
        return [Proposal(mask=ids == k, score=1.0, label="imported") for k in np.unique(ids) if k]

    def save(self) -> None:
        stem = os.path.splitext(self.files[self.index])[0]
        overlay.write_label_png(stem + "_inst.png", self.rgb.shape[:2], [it.mask for it in self.items])
        overlay.write_voc_xml(stem + ".xml", os.path.basename(self.files[self.index]), self.rgb.shape, self.items)
        self.statusBar().showMessage(f"saved {len(self.items)} objects", 3000)

    def set_prior(self, source) -> None:
        self.prior = source

    def prior_mask(self):
        if self.prior is None:
            return None
        if isinstance(self.prior, str):
            return cv2.imread(self.prior, cv2.IMREAD_GRAYSCALE) > 127
        return self.prior

    def next_image(self) -> None:
        if self.index + 1 < len(self.files):
            self.save()
            self.load(self.index + 1)

    # ------------------------------------------------------------ prompts
    def on_click(self, x: int, y: int, fg: int) -> None:
        self.clicks.append((x, y, fg))
        self._show(self.engine.click(self.clicks))

    def on_box(self, x0: int, y0: int, x1: int, y1: int) -> None:
        self.clicks.clear()
        self._show(self.engine.box(x0, y0, x1, y1))

    def _show(self, prop: Proposal) -> None:
        if self.current is not None:
            self.undo.append(self.current.mask.copy())  # expect: copy
        self.current = prop
        hist, _ = np.histogram(prop.logits, bins=64, range=(-20, 20))  # expect: np.histogram
        cover = prop.mask.mean()  # expect: mean on bool
        self.statusBar().showMessage(
            f"IoU {prop.score:.3f}  stability {self.engine.stability(prop):.2f}  "
            f"area {prop.area}px ({cover:.1%})  peak bin {int(hist.argmax())}"
        )
        self.redraw()

    def accept(self) -> None:
        if self.current is None:
            return
        self.current.label = self.label_box.currentText()
        self.items.append(self.current)
        self.set_prior(self.current.mask)
        self.current = None
        self.clicks.clear()
        self.engine.reset()
        self.redraw()

    def undo_last(self) -> None:
        if self.undo and self.current is not None:
            self.current.mask = self.undo.pop()
            self.redraw()

    def merge_with_last(self) -> None:
        if self.current is None or not self.items:
            return
        last = self.items.pop()
        merged = np.logical_or(last.mask, self.current.mask)  # expect: np.logical_or
        self.current = Proposal(mask=merged, score=min(last.score, self.current.score), label=last.label)
        self.redraw()

    # ------------------------------------------------------------ drawing
    def redraw(self) -> None:
        img = self.rgb
        prior = self.prior_mask()
        if prior is not None and not self.items:
            img = overlay.tint(img, prior, (90, 90, 90), alpha=0.25)
        for i, it in enumerate(self.items):
            img = overlay.tint(img, it.mask, overlay.color_for(i))
        if self.current is not None:
            img = overlay.tint(img, self.current.mask, (255, 255, 255), alpha=0.35)
            self.canvas.outline = overlay.outline_path(self.current.mask)
        else:
            self.canvas.outline = None
        self.canvas.setPixmap(QtGui.QPixmap.fromImage(overlay.to_qimage(img)))


def main() -> None:
    app = QtWidgets.QApplication(sys.argv)
    win = MainWindow(sys.argv[1], hq="--hq" in sys.argv)
    win.resize(1280, 900)
    win.show()
    sys.exit(app.exec_())


if __name__ == "__main__":
    main()
