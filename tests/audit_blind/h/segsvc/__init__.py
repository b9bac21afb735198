"""segsvc: small HTTP service around SAM-HQ used by the labelling frontend.

This module holds model loading and prompt execution; see app.py for the routes.
"""
from __future__ import annotations

import functools
import os
import time
from typing import Optional, Sequence

import numpy as np
import samgpu_shim  # noqa: F401  (patches the predictors; keep before model creation)
from segment_anything_hq import SamPredictor, sam_model_registry

__version__ = "0.4.2"

CHECKPOINT = os.environ.get("SAM_HQ_CKPT", "/models/sam_hq_vit_l.pth")
MODEL_TYPE = os.environ.get("SAM_HQ_TYPE", "vit_l")


def timed(fn):
    """Remember the wall time of the last call on the wrapper (read by the API)."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        t0 = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            wrapper.last_ms = (time.perf_counter() - t0) * 1e3

    wrapper.last_ms = 0.0
    return wrapper


@functools.lru_cache(maxsize=1)
def get_predictor() -> SamPredictor:
    sam = sam_model_registry[MODEL_TYPE](checkpoint=CHECKPOINT)
    sam.to(device="cuda").eval()
    return SamPredictor(sam)


def _as_f32(x: Optional[Sequence]) -> Optional[np.ndarray]:
    return None if x is None else np.asarray(x, dtype=np.float32)


@timed
def segment(
    image: np.ndarray,
    points: Optional[Sequence[Sequence[float]]] = None,
    labels: Optional[Sequence[int]] = None,
    box: Optional[Sequence[float]] = None,
):
    predictor = get_predictor()
    predictor.set_image(image)
    return predictor.predict(
        point_coords=_as_f32(points),
        point_labels=None if labels is None else np.asarray(labels, dtype=np.int32),
        box=_as_f32(box),
        multimask_output=box is None,
        hq_token_only=False,
    )
