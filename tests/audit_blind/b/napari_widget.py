"""napari dock widget: click in the current slice -> SAM mask into a Labels layer;
'everything' runs the automatic generator on the slice."""

import numpy as np
from napari.layers import Image as ImageLayer
from qtpy.QtWidgets import QLabel, QPushButton, QVBoxLayout, QWidget
from segment_anything import SamAutomaticMaskGenerator, SamPredictor, sam_model_registry
from skimage import measure


class SamWidget(QWidget):
    def __init__(self, napari_viewer, checkpoint="sam_vit_b_01ec64.pth"):
        super().__init__()
        self.viewer = napari_viewer
        sam = sam_model_registry["vit_b"](checkpoint=checkpoint).to("cuda")
        self.predictor = SamPredictor(sam)
        self.amg = SamAutomaticMaskGenerator(sam, points_per_side=24)
        self.current = None  # last proposal: a click mask, or the AMG annotations
        self.current_kind = None
        self._embedded_z = None
        self.status = QLabel("ready")
        btn_accept = QPushButton("accept (A)")
        btn_slice = QPushButton("replace slice")
        btn_auto = QPushButton("everything in slice")
        btn_accept.clicked.connect(self.accept)
        btn_slice.clicked.connect(self.accept_as_slice)
        btn_auto.clicked.connect(self.segment_everything)
        lay = QVBoxLayout(self)
        for w in (self.status, btn_accept, btn_slice, btn_auto):
            lay.addWidget(w)
        self.image_layer = next(l for l in self.viewer.layers if isinstance(l, ImageLayer))
        shape = self.image_layer.data.shape[:3]
        self.labels_layer = self.viewer.add_labels(np.zeros(shape, dtype=np.int32), name="sam")
        self.preview_layer = self.viewer.add_labels(np.zeros(shape[1:], dtype=np.uint8), name="preview", opacity=0.5)
        self.image_layer.mouse_drag_callbacks.append(self.on_click)

    def _slice_rgb(self, z):
        sl = np.asarray(self.image_layer.data[z], dtype=np.float32)
        lo, hi = np.percentile(sl, (1, 99))
        sl = np.clip((sl - lo) / max(hi - lo, 1e-6), 0, 1)
        return (np.stack([sl] * 3, axis=-1) * 255).astype(np.uint8)

    def _embed(self, z):
        if z != self._embedded_z:
            self.predictor.set_image(self._slice_rgb(z))
            self._embedded_z = z

    def _z(self):
        return int(self.viewer.dims.current_step[0])

    def on_click(self, layer, event):
        z, y, x = (int(round(c)) for c in event.position[:3])
        self._embed(z)
        positive = "Shift" not in event.modifiers
        masks, scores, _ = self.predictor.predict(point_coords=np.array([[x, y]]),
                                                  point_labels=np.array([int(positive)]), multimask_output=True)
        best = scores.argmax()
        self.current = masks[best]
        self.current_kind = "click"
        self.preview_layer.data = self.current.cpu().numpy().astype(np.uint8)
        self.status.setText(f"z={z} area={int(self.current.sum())}")
        top = scores.max(axis=0)  # expect: .max(axis=0)
        self.status.setToolTip(f"best of {len(scores)}: {float(top):.2f}")

    def segment_everything(self):
        z = self._z()
        anns = self.amg.generate(self._slice_rgb(z))
        self.current = sorted(anns, key=lambda a: -a["area"])
        self.current_kind = "auto"
        preview = np.zeros(self.preview_layer.data.shape, dtype=np.uint8)
        for i, a in enumerate(self.current[:255], start=1):
            preview[a["segmentation"]] = i
        self.preview_layer.data = preview
        self.status.setText(f"{len(self.current)} proposals")

    def load_proposal(self, path):
        """A mask exported by the other annotators' tool (.npy, same slice shape)."""
        self.current = path
        self.current_kind = "file"
        self.status.setText(f"loaded {path}")

    def accept(self):
        z = self._z()
        if self.current_kind == "file":
            lab = self.labels_layer.data[z]
            lab[np.load(self.current) > 0] = self.labels_layer.data.max() + 1
        elif self.current_kind == "auto":
            lab = self.labels_layer.data[z]
            for a in self.current:
                lab[a["segmentation"] & (lab == 0)] = self.labels_layer.data.max() + 1
        elif self.current_kind == "click":
            new_id = self.labels_layer.data.max() + 1
            self.labels_layer.data[z][self.current] = new_id  # expect: ndarray[mask] = v
        self.labels_layer.refresh()

    def accept_as_slice(self):
        """Overwrite the whole slice with the current click mask."""
        if self.current_kind != "click":
            return
        self.labels_layer.data[self._z()] = self.current  # expect: ndarray[i] = mask
        self.labels_layer.refresh()

    def propagate(self, z_to):
        """Carry the click mask to the next slices, prompting each with the previous box."""
        z_from = self._z()
        mask = self.current
        for z in range(z_from + 1, z_to + 1):
            props = measure.regionprops(mask.astype(np.uint8))  # expect: .astype()
            if not props:
                break
            y0, x0, y1, x1 = props[0].bbox
            self._embed(z)
            masks, scores, _ = self.predictor.predict(box=np.array([x0, y0, x1, y1]), multimask_output=False)
            if float(scores[0]) < 0.6:
                break
            mask = masks[0]
            self.labels_layer.data[z][mask] = self.labels_layer.data.max() + 1  # expect: ndarray[mask] = v
        self.labels_layer.refresh()
