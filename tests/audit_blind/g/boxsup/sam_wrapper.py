"""Thin wrapper around SAM-HQ for box prompts.

One predictor is kept per process; the image embedding is cached by an id so
that pseudo_labels and coco_export can prompt the same image twice cheaply.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Hashable, List, Optional, Sequence, Tuple

import numpy as np
import torch
from segment_anything_hq import SamPredictor, sam_model_registry

log = logging.getLogger(__name__)

CHECKPOINTS = {
    "vit_tiny": "pretrained/sam_hq_vit_tiny.pth",
    "vit_b": "pretrained/sam_hq_vit_b.pth",
    "vit_l": "pretrained/sam_hq_vit_l.pth",
    "vit_h": "pretrained/sam_hq_vit_h.pth",
}


@dataclass
class PromptResult:
    box: np.ndarray
    mask: torch.Tensor
    score: float
    logits: Optional[torch.Tensor] = None
    refined: bool = False

    @property
    def area(self) -> int:
        return int(self.mask.sum())


class BoxPrompter:
    """Box -> best SAM-HQ mask, with optional self-refinement through mask_input."""

    def __init__(self, model_type: str = "vit_l", device: str = "cuda", hq_token_only: bool = False):
        sam = sam_model_registry[model_type](checkpoint=CHECKPOINTS[model_type])
        sam.to(device=device)
        sam.eval()
        self._engine = SamPredictor(sam)
        self.hq_token_only = hq_token_only
        self._image_key: Optional[Hashable] = None

    def set_image(self, image: np.ndarray, image_id: Optional[Hashable] = None) -> None:
        if image_id is not None and image_id == self._image_key:
            return
        self._engine.set_image(image)
        self._image_key = image_id

    @torch.inference_mode()
    def _predict_box(self, box: np.ndarray, mask_input=None, multimask: bool = True):
        return self._engine.predict(
            point_coords=None,
            point_labels=None,
            box=box[None, :],
            mask_input=mask_input,
            multimask_output=multimask,
            hq_token_only=self.hq_token_only,
        )

    def prompt_boxes(self, boxes: Sequence[Sequence[float]], refine_iters: int = 1) -> List[PromptResult]:
        results: List[PromptResult] = []
        for raw in boxes:
            box = np.asarray(raw, dtype=np.float32)
            masks, scores, logits = self._predict_box(box)
            best = scores.argmax()
            mask, score, low_res = masks[best], scores[best], logits[best]
            refined = False
            for _ in range(refine_iters):
                masks2, scores2, logits2 = self._predict_box(box, mask_input=low_res[None, :, :], multimask=False)
                if scores2[0] >= score:
                    mask, score, low_res = masks2[0], scores2[0], logits2[0]
                    refined = True
            results.append(PromptResult(box=box, mask=mask, score=float(score), logits=low_res, refined=refined))
        if results:
            log.debug("prompted %d boxes (%d refined)", len(results), sum(r.refined for r in results))
        return results

    def best_of_multimask(self, box: Sequence[float]) -> Tuple[torch.Tensor, float]:
        """No refinement, just the top scoring of the three multimask outputs."""
        masks, scores, _ = self._predict_box(np.asarray(box, dtype=np.float32))
        order = np.argsort(scores)[::-1]  # expect: np.argsort
        log.debug("multimask scores %s", scores.tolist())
        return masks[order[0]], float(scores[order[0]])
