"""Predictor construction + an embedding cache keyed by image content.

The interactive benchmark calls ``set_image`` once per click round on the
same image; re-encoding with ViT-H costs ~0.45 s each time, so we keep the
image embeddings of the last few images around.
"""
from __future__ import annotations

import hashlib
import logging
from collections import OrderedDict
from pathlib import Path
from typing import Any, Dict, Optional, Tuple, Union

import cv2
import numpy as np
import torch

log = logging.getLogger(__name__)

CHECKPOINTS = {
    "sam": ("vit_h", "checkpoints/sam_vit_h_4b8939.pth"),
    "hq": ("vit_h", "checkpoints/sam_hq_vit_h.pth"),
    "mobile": ("vit_t", "checkpoints/mobile_sam.pt"),
    "effvit": ("efficientvit-sam-l0", "checkpoints/efficientvit_sam_l0.pt"),
    "sam2": ("facebook/sam2.1-hiera-large", None),
}


def to_numpy(x: Any) -> np.ndarray:
    """Accept whatever a predictor gives back and return a host array."""
    if isinstance(x, torch.Tensor):
        return x.detach().cpu().numpy()
    return np.asarray(x)


class _ContentKeyMixin:
    @staticmethod
    def image_key(image: np.ndarray) -> str:
        digest = hashlib.blake2b(np.ascontiguousarray(image).tobytes(), digest_size=12)
        return "{}x{}:{}".format(image.shape[0], image.shape[1], digest.hexdigest())


class _LRUMixin:
    max_entries: int = 4

    def _lru_init(self) -> None:
        self._lru: "OrderedDict[str, Tuple]" = OrderedDict()

    def _lru_get(self, key: str):
        item = self._lru.get(key)
        if item is not None:
            self._lru.move_to_end(key)
        return item

    def _lru_put(self, key: str, value) -> None:
        self._lru[key] = value
        self._lru.move_to_end(key)
        while len(self._lru) > self.max_entries:
            self._lru.popitem(last=False)


class CachedPredictor(_ContentKeyMixin, _LRUMixin):
    """Thin wrapper: same ``predict`` signature as the wrapped predictor."""

    def __init__(self, predictor, family: str = "sam", max_entries: int = 4):
        self.inner = predictor
        self.family = family
        self.max_entries = max_entries
        self._lru_init()
        self.hits = 0
        self.misses = 0

    # -- embedding cache ------------------------------------------------ #
    def _snapshot(self):
        p = self.inner
        if self.family == "sam2":
            return (p._features, p._orig_hw)
        return (p.features, p.original_size, p.input_size)

    def _restore(self, snap) -> None:
        p = self.inner
        if self.family == "sam2":
            p._features, p._orig_hw = snap
            p._is_image_set = True
        else:
            p.features, p.original_size, p.input_size = snap
            p.is_image_set = True

    def set_image(self, image: Union[np.ndarray, str, Path]) -> str:
        if isinstance(image, (str, Path)):
            image = cv2.cvtColor(cv2.imread(str(image)), cv2.COLOR_BGR2RGB)
        key = self.image_key(image)
        snap = self._lru_get(key)
        if snap is not None:
            self.hits += 1
            self._restore(snap)
            return key
        self.misses += 1
        self.inner.set_image(image)
        self._lru_put(key, self._snapshot())
        return key

    # -- prediction ------------------------------------------------------ #
    def predict(self, *args, **kwargs):
        return self.inner.predict(*args, **kwargs)

    def refine(self, point_coords, point_labels, rounds: int = 2, **kwargs):
        """Iterative refinement: feed the best low-res logits back in."""
        masks, scores, logits = self.inner.predict(
            point_coords=point_coords, point_labels=point_labels,
            multimask_output=True, **kwargs)
        for _ in range(rounds - 1):
            best = scores.argmax()
            masks, scores, logits = self.inner.predict(
                point_coords=point_coords, point_labels=point_labels,
                mask_input=logits[best][None, :, :], multimask_output=False, **kwargs)
        return masks, scores, logits

    def stats(self) -> Dict[str, int]:
        return {"hits": self.hits, "misses": self.misses, "cached": len(self._lru)}


def build_predictor(kind: str = "sam", device: Optional[str] = None,
                    checkpoint: Optional[str] = None, cache: int = 4) -> CachedPredictor:
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    arch, default_ckpt = CHECKPOINTS[kind]
    ckpt = checkpoint or default_ckpt
    log.info("building %s (%s) from %s on %s", kind, arch, ckpt, device)

    if kind == "sam":
        from segment_anything import SamPredictor, sam_model_registry
        inner = SamPredictor(sam_model_registry[arch](checkpoint=ckpt).to(device).eval())
    elif kind == "hq":
        from segment_anything_hq import SamPredictor as HQPredictor, sam_model_registry as hq_registry
        inner = HQPredictor(hq_registry[arch](checkpoint=ckpt).to(device).eval())
    elif kind == "mobile":
        from mobile_sam import SamPredictor as MobilePredictor, sam_model_registry as mobile_registry
        inner = MobilePredictor(mobile_registry[arch](checkpoint=ckpt).to(device).eval())
    elif kind == "effvit":
        from efficientvit.models.efficientvit.sam import EfficientViTSamPredictor
        from efficientvit.sam_model_zoo import create_efficientvit_sam_model
        model = create_efficientvit_sam_model(arch, True, ckpt).to(device).eval()
        inner = EfficientViTSamPredictor(model)
    elif kind == "sam2":
        from sam2.sam2_image_predictor import SAM2ImagePredictor
        inner = SAM2ImagePredictor.from_pretrained(arch, device=device)
    else:
        raise ValueError(f"unknown predictor kind {kind!r}")
    return CachedPredictor(inner, family="sam2" if kind == "sam2" else "sam", max_entries=cache)
