"""napari dock widget: click-to-segment with SAM / MobileSAM on 2D images and
CT/MR volumes (slice by slice, with box propagation through the stack).

Registered in napari.yaml as ``napari-sam-annotator.make_sam_widget``.
"""

from __future__ import annotations

import functools
from typing import Optional

import cv2
import numpy as np
import torch
from magicgui.widgets import ComboBox, FloatSpinBox, SpinBox
from napari.qt.threading import thread_worker
from napari.utils.notifications import show_info, show_warning
from qtpy.QtWidgets import QLabel, QPushButton, QVBoxLayout, QWidget

from mobile_sam import SamPredictor as MobileSamPredictor
from mobile_sam import sam_model_registry as mobile_sam_registry
from segment_anything import SamPredictor, sam_model_registry

from sam_tools.postprocess import mask_to_xyxy

CHECKPOINTS = {
    "vit_b": "~/.cache/napari-sam/sam_vit_b_01ec64.pth",
    "vit_h": "~/.cache/napari-sam/sam_vit_h_4b8939.pth",
    "mobile (vit_t)": "~/.cache/napari-sam/mobile_sam.pt",
}


def window_to_rgb(slice_2d: np.ndarray, lo: float = -160.0, hi: float = 240.0) -> np.ndarray:
    """CT window (soft tissue by default) -> uint8 RGB, as SAM expects."""
    if slice_2d.dtype == np.uint8 and slice_2d.ndim == 3:
        return slice_2d
    x = np.clip((slice_2d.astype(np.float32) - lo) / (hi - lo), 0.0, 1.0)
    x = (x * 255.0).astype(np.uint8)
    return np.repeat(x[..., None], 3, axis=-1)


class SamAnnotatorWidget(QWidget):
    def __init__(self, napari_viewer):
        super().__init__()
        self.viewer = napari_viewer
        self._sam = None
        self._encoded_z: Optional[int] = None
        self._last = None  # (z, mask) of the last interactive prediction
        self._accepted: Optional[np.ndarray] = None
        self.show_uncertainty = False

        self.model_box = ComboBox(choices=list(CHECKPOINTS), value="vit_b", label="model")
        self.label_id = SpinBox(value=1, min=1, max=255, label="label")
        self.min_score = FloatSpinBox(value=0.6, min=0.0, max=1.0, step=0.05, label="stop below IoU")
        self.load_btn = QPushButton("Load model")
        self.propagate_btn = QPushButton("Propagate through volume")
        self.accept_btn = QPushButton("Accept (add to reviewed)")
        self.status = QLabel("no model")

        layout = QVBoxLayout()
        for w in (self.model_box.native, self.label_id.native, self.min_score.native):
            layout.addWidget(w)
        for w in (self.load_btn, self.propagate_btn, self.accept_btn, self.status):
            layout.addWidget(w)
        self.setLayout(layout)

        self.load_btn.clicked.connect(self._load_model)
        self.propagate_btn.clicked.connect(self._start_propagation)
        self.accept_btn.clicked.connect(self._accept)

        self.points = self.viewer.add_points(
            name="SAM prompts", ndim=3, size=6, face_color="lime", property_choices={"positive": [True, False]}
        )
        self.points.events.data.connect(functools.partial(self._on_prompt, source="points"))

    # ------------------------------------------------------------ helpers
    @property
    def image_layer(self):
        return self.viewer.layers.selection.active if self.viewer.layers.selection.active is not self.points else self.viewer.layers[0]

    @property
    def labels_layer(self):
        name = f"{self.image_layer.name}_sam"
        if name not in self.viewer.layers:
            shape = self.image_layer.data.shape[:3] if self.image_layer.rgb is False else self.image_layer.data.shape[:2]
            self.viewer.add_labels(np.zeros(shape, dtype=np.uint8), name=name)
        return self.viewer.layers[name]

    def _load_model(self):
        key = self.model_box.value
        ckpt = str(__import__("pathlib").Path(CHECKPOINTS[key]).expanduser())
        device = "cuda" if torch.cuda.is_available() else "cpu"
        if key.startswith("mobile"):
            model = mobile_sam_registry["vit_t"](checkpoint=ckpt).to(device).eval()
            self._sam = MobileSamPredictor(model)
        else:
            model = sam_model_registry[key](checkpoint=ckpt).to(device).eval()
            self._sam = SamPredictor(model)
        self._encoded_z = None
        self.status.setText(f"{key} on {device}")

    def _encode_slice(self, z: int) -> None:
        if self._encoded_z == z:
            return
        self._sam.set_image(window_to_rgb(np.asarray(self.image_layer.data[z])))
        self._encoded_z = z

    # ------------------------------------------------------ interactive 2D
    def _on_prompt(self, event=None, source: str = "points"):
        if self._sam is None or len(self.points.data) == 0:
            return
        z = int(self.viewer.dims.current_step[0])
        on_slice = self.points.data[:, 0].round().astype(int) == z
        if not on_slice.any():
            return
        pts = self.points.data[on_slice][:, [2, 1]]  # (z, y, x) -> (x, y)
        lbl = np.asarray(self.points.properties["positive"])[on_slice].astype(np.int32)

        self._encode_slice(z)
        masks, ious, lowres = self._sam.predict(point_coords=pts, point_labels=lbl, multimask_output=len(pts) == 1)
        k = int(ious.argmax())
        seg = self.labels_layer.data
        seg[z][seg[z] == self.label_id.value] = 0
        seg[z][masks[k]] = self.label_id.value  # expect: ndarray-setitem
        self._last = (z, masks[k])
        self.labels_layer.refresh()
        self.status.setText(f"slice {z}: IoU {ious[k]:.3f} ({source})")
        if self.show_uncertainty:
            h, w = seg.shape[-2:]
            logit = cv2.resize(lowres[k], (w, h), interpolation=cv2.INTER_LINEAR)  # expect: cv2.resize
            prob = 1.0 / (1.0 + np.exp(-logit))
            unc = 1.0 - np.abs(2.0 * prob - 1.0)
            if "uncertainty" in self.viewer.layers:
                self.viewer.layers["uncertainty"].data = unc
            else:
                self.viewer.add_image(unc, name="uncertainty", colormap="magma", opacity=0.5)

    def _accept(self):
        """Keep a separate 'reviewed' mask stack for the QA export."""
        if self._last is None:
            return
        z, mask = self._last
        if self._accepted is None:
            self._accepted = np.zeros(self.labels_layer.data.shape, dtype=bool)
        self._accepted[z] |= mask  # expect: ndarray-ior
        show_info(f"slice {z}: {int(self._accepted[z].sum())} px reviewed")

    # --------------------------------------------------- 3D propagation
    @thread_worker
    def _propagate(self, z0: int, label: int, min_iou: float):
        """Generator run in a worker thread: yields (z, mask, iou) per slice."""
        vol = self.image_layer.data
        ref = np.asarray(self.labels_layer.data[z0]) == label
        seed_box = mask_to_xyxy(ref, pad=2)
        if seed_box is None:
            return
        for step in (1, -1):
            box, z = seed_box, z0 + step
            while 0 <= z < vol.shape[0] and box is not None:
                self._encode_slice(z)
                m, iou, _ = self._sam.predict(box=np.asarray(box, np.float32), multimask_output=False)
                if iou[0] < min_iou or np.count_nonzero(m[0]) < 16:  # expect: np.count_nonzero
                    break
                yield z, m[0], float(iou[0])
                box = mask_to_xyxy(m[0], pad=2)
                z += step

    def _on_slice_done(self, payload):
        z, mask, iou = payload
        if isinstance(mask, torch.Tensor):
            mask = mask.numpy()  # expect: numpy
        seg = self.labels_layer.data
        seg[z] = np.where(mask, self.label_id.value, seg[z])
        self.status.setText(f"propagated to slice {z} (IoU {iou:.2f})")

    def _start_propagation(self):
        if self._sam is None:
            show_warning("Load a model first")
            return
        z0 = int(self.viewer.dims.current_step[0])
        worker = self._propagate(z0, self.label_id.value, self.min_score.value)
        worker.yielded.connect(self._on_slice_done)
        worker.finished.connect(self.labels_layer.refresh)
        worker.finished.connect(lambda: show_info("propagation finished"))
        worker.start()

    def volume_report(self) -> dict:
        """Voxel counts per label for the side panel (numpy labels layer)."""
        seg = np.asarray(self.labels_layer.data)
        ids, counts = np.unique(seg[seg > 0], return_counts=True)
        spacing = np.asarray(self.image_layer.scale[-3:], dtype=np.float64)
        voxel_ml = float(np.prod(spacing)) / 1000.0
        return {int(i): {"voxels": int(c), "ml": round(c * voxel_ml, 2)} for i, c in zip(ids, counts)}


def make_sam_widget(napari_viewer):
    return SamAnnotatorWidget(napari_viewer)
