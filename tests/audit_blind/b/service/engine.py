"""Segmentation engine shared by the HTTP service and the batch worker.

The predictor comes from the model registry package; this module only adds
embedding reuse, locking and a small result type."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any, List, Optional

import numpy as np
import torch
from company_models.sam_loader import SamBundle


@dataclass
class SegResult:
    mask: Any
    score: Any
    logits: Any = None
    box: Optional[list] = None
    meta: dict = field(default_factory=dict)


class SamEngine:
    def __init__(self, variant: str = "sam2.1_hiera_large", device: str = "cuda"):
        bundle = SamBundle.from_registry(variant, device=device)
        self.model = bundle.image_predictor()
        self.variant = variant
        self._lock = threading.Lock()
        self._embedded = None

    def _set(self, image: np.ndarray, key) -> None:
        if key != self._embedded:
            self.model.set_image(image)
            self._embedded = key

    def predict(self, image, points=None, labels=None, box=None, key=None) -> SegResult:
        with self._lock:
            self._set(image, key or id(image))
            masks, scores, logits = self.model.predict(
                point_coords=None if points is None else np.asarray(points, np.float32),
                point_labels=None if labels is None else np.asarray(labels, np.int32),
                box=None if box is None else np.asarray(box, np.float32),
                multimask_output=box is None,
            )
        k = int(torch.argmax(scores))
        return SegResult(mask=masks[k], score=scores[k], logits=logits[k], box=box,
                         meta={"variant": self.variant, "candidates": len(scores)})

    def predict_many(self, image, boxes, key=None) -> List[SegResult]:
        with self._lock:
            self._set(image, key or id(image))
            masks, scores, logits = self.model.predict(box=np.asarray(boxes, np.float32), multimask_output=False)
        if masks.ndim == 4:  # (N, 1, H, W) for several boxes
            masks, scores, logits = masks[:, 0], scores[:, 0], logits[:, 0]
        return [SegResult(mask=m, score=s, logits=l, box=[float(v) for v in b])
                for m, s, l, b in zip(masks, scores, logits, boxes)]

    def predict_pinned(self, image, box):
        """For the legacy exporter that still expects numpy."""
        with self._lock:
            self._set(image, id(image))
            masks, scores, _ = self.model.predict(box=np.asarray(box, np.float32), multimask_output=False,
                                                  as_numpy=True)
        return masks[0], float(scores[0])

    def warmup(self, size=(1024, 1024)):
        dummy = np.zeros((*size, 3), np.uint8)
        res = self.predict(dummy, points=[[size[1] // 2, size[0] // 2]], labels=[1], key="warmup")
        return bool(res.mask.any()), float(res.score)
