"""EfficientViT-SAM (PyPI ``efficientsam``).

Its own predictor class, which is its own transform (tensor prompts scale to
its ``input_size``, see :func:`samgpu_shim.gpu.prompts.scale_coords_torch`),
over a copy of SAM 1's prompt encoder and decoder.
"""

from __future__ import annotations

from typing import Tuple

from . import Family, Target, signatures
from .sam1 import copy_targets, predict_resident


def targets(family: Family) -> Tuple[Target, ...]:
    return copy_targets(
        family,
        "efficientsam",
        signatures.SAM1_PREDICT,
        predict_resident,
        predictor=("models.efficientvit.sam", "EfficientViTSamPredictor"),
        encoder_module="segment_anything.modeling.prompt_encoder",
    )
