"""Name -> segmenter plugin registry used by the QA tooling and the nightly re-labeller.

Every plugin returns a :class:`SegResult` holding *numpy* data, so callers never need
to know which backend (or which device) produced a mask.

    seg = get_segmenter("effvit-sam", weights="l0")
    res = seg.segment(image, box=(x0, y0, x1, y1))
    contours = outline(res)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, Optional, Sequence, Type, Union

import cv2
import numpy as np
import torch
from segment_anything import SamAutomaticMaskGenerator, SamPredictor, sam_model_registry

SEGMENTERS: Dict[str, Type["Segmenter"]] = {}


def register(name: str) -> Callable[[type], type]:
    def deco(cls: type) -> type:
        if name in SEGMENTERS:
            raise KeyError(f"segmenter {name!r} registered twice")
        SEGMENTERS[name] = cls
        cls.name = name
        return cls

    return deco


def get_segmenter(name: str, **kwargs) -> "Segmenter":
    try:
        return SEGMENTERS[name](**kwargs)
    except KeyError:
        raise KeyError(f"unknown segmenter {name!r}; have {sorted(SEGMENTERS)}") from None


def _to_numpy(x):
    return x.detach().cpu().numpy() if torch.is_tensor(x) else np.asarray(x)


@dataclass
class SegResult:
    mask: Union[np.ndarray, str]  # HxW bool, or the path of a cached .npy
    score: float
    source: str
    extras: dict = field(default_factory=dict)

    def array(self) -> np.ndarray:
        if isinstance(self.mask, str):
            self.mask = np.load(self.mask)
        return self.mask


class Segmenter:
    name = "base"

    def segment(self, image: np.ndarray, box: Optional[Sequence[float]] = None) -> SegResult:
        raise NotImplementedError


@register("sam")
class SamBoxSegmenter(Segmenter):
    def __init__(self, checkpoint: str = "weights/sam_vit_h_4b8939.pth", model_type: str = "vit_h"):
        self.predictor = SamPredictor(sam_model_registry[model_type](checkpoint=checkpoint).cuda())

    def segment(self, image, box=None):
        self.predictor.set_image(image)
        h, w = image.shape[:2]
        box = np.asarray(box if box is not None else (0, 0, w - 1, h - 1), dtype=np.float32)
        masks, scores, logits = self.predictor.predict(box=box, multimask_output=True, as_numpy=True)
        k = int(np.argmax(scores))
        soft = 1.0 / (1.0 + np.exp(-logits[k]))
        return SegResult(masks[k], float(scores[k]), self.name, {"soft_mean": float(soft.mean())})


@register("effvit-sam")
class EfficientVitSegmenter(Segmenter):
    def __init__(self, weights: str = "l0"):
        from efficientvit.models.efficientvit.sam import EfficientViTSamPredictor
        from efficientvit.sam_model_zoo import create_efficientvit_sam_model

        model = create_efficientvit_sam_model(f"efficientvit-sam-{weights}", pretrained=True).cuda().eval()
        self._pred = EfficientViTSamPredictor(model)

    def segment(self, image, box=None):
        self._pred.set_image(image)
        masks, scores, _ = self._pred.predict(box=None if box is None else np.asarray(box), multimask_output=True)
        conf = np.zeros(len(scores), dtype=np.float32)
        for i in range(len(scores)):
            conf[i] = scores[i]
        k = int(np.argmax(conf))
        mask = masks[k]
        if isinstance(mask, torch.Tensor):
            mask = mask.cpu().numpy()
        return SegResult(mask, float(conf[k]), self.name)


@register("mobile-sam")
class MobileSamSegmenter(Segmenter):
    def __init__(self, checkpoint: str = "weights/mobile_sam.pt"):
        from mobile_sam import SamPredictor as MobilePredictor
        from mobile_sam import sam_model_registry as mobile_registry

        self._pred = MobilePredictor(mobile_registry["vit_t"](checkpoint=checkpoint).cuda().eval())

    def segment(self, image, box=None):
        self._pred.set_image(image)
        masks, scores, _ = self._pred.predict(box=None if box is None else np.asarray(box), multimask_output=False)
        mask = _to_numpy(masks[0])
        return SegResult(mask, float(scores[0]), self.name, {"area": int(mask.sum())})


@register("otsu")
class OtsuSegmenter(Segmenter):
    """Classical baseline; its ``predict`` mimics the SAM call signature but is plain OpenCV."""

    def predict(self, image, box=None, multimask_output=False):
        grey = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
        if box is not None:
            x0, y0, x1, y1 = (int(v) for v in box)
            roi = np.zeros_like(grey)
            roi[y0:y1, x0:x1] = grey[y0:y1, x0:x1]
            grey = roi
        _, th = cv2.threshold(grey, 0, 255, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
        masks = (th > 0)[None]
        return masks, np.array([1.0], dtype=np.float32), None

    def segment(self, image, box=None):
        masks, scores, _ = self.predict(image, box=box)
        return SegResult(masks[0], float(scores[0]), self.name)


@register("sam-auto")
class AutoSegmenter(Segmenter):
    """Picks the automatic-generator proposal that best fills the box."""

    def __init__(self, checkpoint: str = "weights/sam_vit_b_01ec64.pth", cache_dir: Optional[str] = None):
        sam = sam_model_registry["vit_b"](checkpoint=checkpoint).cuda()
        self.generator = SamAutomaticMaskGenerator(sam, points_per_side=24, min_mask_region_area=64)
        self.cache_dir = Path(cache_dir) if cache_dir else None

    def segment(self, image, box=None):
        anns = self.generator.generate(image)
        if not anns:
            return SegResult(np.zeros(image.shape[:2], dtype=bool), 0.0, self.name)
        if box is None:
            best = max(anns, key=lambda a: a["area"])
        else:
            x0, y0, x1, y1 = (int(v) for v in box)
            best = max(anns, key=lambda a: a["segmentation"][y0:y1, x0:x1].mean())
        mask = best["segmentation"]
        if self.cache_dir is not None:
            path = self.cache_dir / f"auto_{abs(hash(image.tobytes()))}.npy"
            np.save(path, mask)
            return SegResult(str(path), float(best["predicted_iou"]), self.name)
        return SegResult(mask, float(best["predicted_iou"]), self.name)


# ----------------------------------------------------------------- consumers
def outline(res: SegResult) -> list:
    mask = res.array()
    contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    return [c.reshape(-1, 2) for c in contours]


def agreement(image: np.ndarray, box, names=("sam", "effvit-sam", "otsu")) -> Dict[str, float]:
    """Pairwise IoU against the first backend: a cheap disagreement signal for QA."""
    results = {n: get_segmenter(n).segment(image, box) for n in names}
    ref = results[names[0]].array()
    out = {}
    for n, r in results.items():
        m = r.array()
        union = np.logical_or(ref, m).sum()
        out[n] = float(np.logical_and(ref, m).sum() / union) if union else 1.0
    return out
