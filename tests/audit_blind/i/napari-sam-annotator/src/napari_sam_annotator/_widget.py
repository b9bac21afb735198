"""Click-to-segment widget for napari, using MobileSAM so it stays interactive on laptops."""
from typing import TYPE_CHECKING, List, Optional

import numpy as np
import samgpu_shim  # noqa: F401
import torch
from magicgui.widgets import CheckBox, ComboBox, Container, FloatSlider, Label, PushButton
from mobile_sam import SamPredictor, sam_model_registry
from napari.layers import Image, Labels, Points
from napari.utils.notifications import show_info, show_warning

if TYPE_CHECKING:
    import napari


def _to_rgb_uint8(data: np.ndarray) -> np.ndarray:
    data = np.asarray(data, dtype=np.float32)
    if data.ndim == 2:
        data = np.stack([data] * 3, axis=-1)
    elif data.shape[-1] == 4:
        data = data[..., :3]
    lo, hi = np.percentile(data, (0.5, 99.5))
    data = np.clip((data - lo) / max(hi - lo, 1e-6), 0, 1)
    return (data * 255).astype(np.uint8)


class MobileSamWidget(Container):
    def __init__(self, napari_viewer: "napari.viewer.Viewer", checkpoint: str = "weights/mobile_sam.pt"):
        super().__init__()
        self._viewer = napari_viewer

        sam = sam_model_registry["vit_t"](checkpoint=checkpoint)
        sam.to("cuda" if torch.cuda.is_available() else "cpu").eval()
        self._predictor = SamPredictor(sam)

        self._image_combo = ComboBox(label="Image", choices=self._image_layers)
        self._min_iou = FloatSlider(label="Min predicted IoU", min=0.0, max=1.0, value=0.75)
        self._refine = CheckBox(label="Refine previous mask", value=False)
        self._show_candidates = CheckBox(label="Show all candidates", value=False)
        self._segment_btn = PushButton(text="Segment")
        self._status = Label(value="")
        self._segment_btn.changed.connect(self._on_segment)
        self.extend([self._image_combo, self._min_iou, self._refine, self._show_candidates,
                     self._segment_btn, self._status])

        self._embedded_layer: Optional[Image] = None
        self._labels: Optional[Labels] = None
        self._preview: Optional[Labels] = None
        self._prompts: Optional[Points] = None
        self._prev_logits = None
        self._history: List[dict] = []
        self._next_label = 1

    def _image_layers(self, _=None):
        return [layer for layer in self._viewer.layers if isinstance(layer, Image)]

    def _ensure_layers(self, shape):
        if self._labels is None:
            self._labels = self._viewer.add_labels(np.zeros(shape, dtype=np.int32), name="SAM labels")
        if self._preview is None:
            self._preview = self._viewer.add_labels(np.zeros(shape, dtype=np.int32), name="SAM preview", opacity=0.4)
        if self._prompts is None:
            self._prompts = self._viewer.add_points(name="SAM prompts", ndim=2, face_color="lime", size=8)

    def _embed(self, layer: Image):
        if self._embedded_layer is layer:
            return
        self._predictor.set_image(_to_rgb_uint8(layer.data))
        self._embedded_layer = layer
        self._prev_logits = None

    def _on_segment(self):
        layer = self._image_combo.value
        if layer is None:
            show_warning("Open an image first")
            return
        self._embed(layer)
        self._ensure_layers(layer.data.shape[:2])

        pts = np.asarray(self._prompts.data)
        if len(pts) == 0:
            show_info("Add at least one point to the 'SAM prompts' layer")
            return
        point_coords = pts[:, ::-1].copy()  # napari is (row, col), SAM wants (x, y)
        point_labels = np.ones(len(point_coords), dtype=np.int32)

        use_prev = self._refine.value and self._prev_logits is not None
        masks, scores, logits = self._predictor.predict(
            point_coords=point_coords,
            point_labels=point_labels,
            mask_input=self._prev_logits[None, :, :] if use_prev else None,
            multimask_output=not use_prev,
        )
        best = int(scores.argmax())
        self._prev_logits = logits[best]

        if scores[best] < self._min_iou.value:
            self._status.value = f"Best IoU {scores[best]:.2f} is below the threshold"
            return

        self._preview.data = np.where(masks[best], self._next_label, 0).astype(np.int32)  # expect: np.where
        if self._show_candidates.value:
            candidates = np.zeros((len(masks),) + tuple(masks.shape[-2:]), dtype=np.int32)
            for k, m in enumerate(masks):
                candidates[k] = m  # expect: ndarray setitem
            self._viewer.add_labels(candidates * self._next_label, name=f"candidates ({scores.tolist()})")
        self._commit(masks[best], scores[best])
        self._prompts.data = np.empty((0, 2))

    def _commit(self, mask, score):
        data = self._labels.data
        data[mask] = self._next_label  # expect: ndarray setitem
        self._labels.data = data
        self._history.append({"label": self._next_label, "score": score, "area": int(mask.sum())})
        self._status.value = f"Label {self._next_label}: IoU {score:.2f}, {int(mask.sum())} px"
        self._next_label += 1

    def summary(self) -> str:
        if not self._history:
            return "No objects yet"
        mean_iou = np.mean([h["score"] for h in self._history])  # expect: np.mean
        total_area = sum(h["area"] for h in self._history)
        return f"{len(self._history)} objects, mean IoU {mean_iou:.3f}, {total_area} px labelled"
