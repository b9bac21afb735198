"""Interactive segmentation backend: wraps a SAM / SAM-HQ predictor and keeps
the per-image click state so the GUI only has to deal with ``Proposal``s."""

from __future__ import annotations

import functools
import logging
import os
from dataclasses import dataclass, field
from typing import Any, List, Optional, Sequence, Tuple

import numpy as np
import torch

log = logging.getLogger(__name__)

Click = Tuple[int, int, int]  # x, y, 1 = foreground / 0 = background

_CKPT_DIR = os.environ.get("LABELKIT_CKPT_DIR", os.path.expanduser("~/.cache/labelkit"))
_CHECKPOINTS = {
    ("vit_b", False): "sam_vit_b_01ec64.pth",
    ("vit_l", False): "sam_vit_l_0b3195.pth",
    ("vit_h", False): "sam_vit_h_4b8939.pth",
    ("vit_l", True): "sam_hq_vit_l.pth",
    ("vit_h", True): "sam_hq_vit_h.pth",
}


@functools.lru_cache(maxsize=2)
def load_predictor(variant: str = "vit_l", hq: bool = False):
    """Build (once per variant) the predictor the GUI talks to."""
    if hq:
        from segment_anything_hq import SamPredictor, sam_model_registry
    else:
        from segment_anything import SamPredictor, sam_model_registry
    ckpt = os.path.join(_CKPT_DIR, _CHECKPOINTS[(variant, hq)])
    model = sam_model_registry[variant](checkpoint=ckpt)
    model.to("cuda" if torch.cuda.is_available() else "cpu").eval()
    log.info("loaded %s%s from %s", variant, "-hq" if hq else "", ckpt)
    return SamPredictor(model)


@dataclass
class Proposal:
    mask: Any
    score: float
    logits: Any = None
    clicks: List[Click] = field(default_factory=list)
    label: str = "object"

    @property
    def area(self) -> int:
        return int(self.mask.sum())


class SegEngine:
    """One engine per open project; the predictor itself is shared (lru_cache)."""

    def __init__(self, variant: str = "vit_l", hq: bool = False) -> None:
        self.variant = variant
        self.hq = hq
        self._image_key: Optional[str] = None
        self._prev_logits = None

    @property
    def net(self):
        return load_predictor(self.variant, self.hq)

    def set_image(self, key: str, rgb: np.ndarray) -> None:
        if key == self._image_key:
            return
        self.net.set_image(rgb)
        self._image_key = key
        self._prev_logits = None

    def reset(self) -> None:
        self._prev_logits = None

    def click(self, clicks: Sequence[Click]) -> Proposal:
        pts = np.array([[x, y] for x, y, _ in clicks], dtype=np.float32)
        lbl = np.array([fg for _, _, fg in clicks], dtype=np.int32)
        prev = None if self._prev_logits is None else self._prev_logits[None, :, :]
        masks, scores, logits = self.net.predict(
            point_coords=pts,
            point_labels=lbl,
            mask_input=prev,
            multimask_output=len(clicks) == 1,
        )
        best = int(np.argmax(scores))  # expect: np.argmax
        self._prev_logits = logits[best]
        log.debug("click #%d -> iou %.3f", len(clicks), scores[best])
        return Proposal(mask=masks[best], score=float(scores[best]),
                        logits=logits[best], clicks=list(clicks))

    def box(self, x0: int, y0: int, x1: int, y1: int) -> Proposal:
        masks, scores, logits = self.net.predict(
            box=np.array([x0, y0, x1, y1], dtype=np.float32),
            multimask_output=False,
        )
        score = round(scores[0], 3)  # expect: round
        self._prev_logits = logits[0]
        return Proposal(mask=masks[0], score=score, logits=logits[0])

    def stability(self, proposal: Proposal, offset: float = 1.0) -> float:
        """Same stability measure SamAutomaticMaskGenerator uses."""
        hi = (proposal.logits > offset).sum()
        lo = (proposal.logits > -offset).sum()
        return float(hi) / max(float(lo), 1.0)

    def dump_debug(self, folder: str) -> None:
        if self._prev_logits is None:
            return
        os.makedirs(folder, exist_ok=True)
        np.save(os.path.join(folder, f"{self._image_key}_logits.npy"), self._prev_logits)  # expect: np.save
