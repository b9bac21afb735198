"""Prompt engines: the only place that talks to a SAM predictor directly.

``PromptEngine`` normalises prompts (lists in, float32 arrays out) and returns
a dict; ``CachedPromptEngine`` re-sorts the candidates by predicted IoU and
feeds the best low-res logits back on the next click, which is what the
interactive tools want. ``SamForward`` lets the serving stack treat a
predictor like any other ``nn.Module``.
"""

from __future__ import annotations

import logging
import os
from typing import Any, Dict, Optional, Sequence

import numpy as np
import torch
from torch import nn

from segment_anything import SamPredictor, sam_model_registry

log = logging.getLogger(__name__)

DEFAULT_CKPTS = {
    "vit_h": "sam_vit_h_4b8939.pth",
    "vit_l": "sam_vit_l_0b3195.pth",
    "vit_b": "sam_vit_b_01ec64.pth",
}


class PromptEngine:
    """Stateful wrapper: one image at a time, prompts in pixel coordinates."""

    def __init__(self, predictor: SamPredictor, multimask: bool = True):
        self.sam = predictor
        self.multimask = multimask
        self._image_key: Optional[str] = None

    @property
    def has_image(self) -> bool:
        return self._image_key is not None

    def set_image(self, image: np.ndarray, key: Optional[str] = None) -> None:
        if key is not None and key == self._image_key:
            return
        self.sam.set_image(image)
        self._image_key = key or str(id(image))

    def _prompt_kwargs(self, points, labels, box, mask_input) -> Dict[str, Any]:
        kwargs: Dict[str, Any] = {"multimask_output": self.multimask}
        if points is not None and len(points):
            kwargs["point_coords"] = np.asarray(points, dtype=np.float32).reshape(-1, 2)
            if labels is None:
                labels = [1] * len(kwargs["point_coords"])
            kwargs["point_labels"] = np.asarray(labels, dtype=np.int32)
        if box is not None:
            kwargs["box"] = np.asarray(box, dtype=np.float32)
        if mask_input is not None:
            kwargs["mask_input"] = mask_input
        return kwargs

    def predict(
        self,
        points: Optional[Sequence[Sequence[float]]] = None,
        labels: Optional[Sequence[int]] = None,
        box: Optional[Sequence[float]] = None,
        mask_input=None,
    ) -> Dict[str, Any]:
        if not self.has_image:
            raise RuntimeError("set_image() must be called before predict()")
        kwargs = self._prompt_kwargs(points, labels, box, mask_input)
        masks, scores, logits = self.sam.predict(**kwargs)
        return {"masks": masks, "scores": scores, "logits": logits}

    def best(self, **prompt) -> tuple:
        """Highest-scoring mask and its score as a python float."""
        out = self.predict(**prompt)
        i = int(out["scores"].argmax())
        return out["masks"][i], float(out["scores"][i])


class CachedPromptEngine(PromptEngine):
    """Sorts candidates by IoU and reuses the previous best logits."""

    def __init__(self, predictor: SamPredictor, multimask: bool = True):
        super().__init__(predictor, multimask)
        self._prev_logits = None

    def set_image(self, image: np.ndarray, key: Optional[str] = None) -> None:
        if key is None or key != self._image_key:
            self._prev_logits = None
        super().set_image(image, key)

    def reset(self) -> None:
        self._prev_logits = None

    def predict(self, points=None, labels=None, box=None, mask_input=None):
        if mask_input is None and self._prev_logits is not None:
            mask_input = self._prev_logits
        out = super().predict(points, labels, box, mask_input)
        order = np.argsort(-out["scores"])  # expect: np.argsort
        out = {key: value[order] for key, value in out.items()}
        self._prev_logits = out["logits"][:1]
        log.debug("candidates: %s", ", ".join("%.3f" % s for s in out["scores"]))
        return out


class SamForward(nn.Module):
    """``nn.Module`` facade so the predictor can be registered with the model
    server like the other heads. ``forward(image, box) -> (mask, score)``."""

    def __init__(self, predictor: SamPredictor):
        super().__init__()
        self.predictor = predictor
        self.model = predictor.model  # registers the SAM weights as a submodule

    @torch.no_grad()
    def forward(self, image: np.ndarray, box: Sequence[float]):
        self.predictor.set_image(image)
        predict = getattr(self.predictor, "predict")
        masks, scores, _ = predict(box=np.asarray(box, np.float32), multimask_output=False)
        return masks[0], scores[0]


def build_engine(
    model_type: str = "vit_h",
    checkpoint: Optional[str] = None,
    device: Optional[str] = None,
    cached: bool = True,
) -> PromptEngine:
    checkpoint = checkpoint or os.path.join(
        os.environ.get("SAM_CKPT_DIR", "/models/sam"), DEFAULT_CKPTS[model_type]
    )
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    sam = sam_model_registry[model_type](checkpoint=checkpoint)
    sam.to(device=device).eval()
    predictor = SamPredictor(sam)
    log.info("SAM %s loaded from %s on %s", model_type, checkpoint, device)
    return (CachedPromptEngine if cached else PromptEngine)(predictor)
