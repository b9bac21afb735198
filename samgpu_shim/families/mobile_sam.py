"""MobileSAM (``mobile_sam`` from mobilesam-mirror, ``mobilesam_lite.mobile_sam``).

Both ship SAM 1's predictor, prompt encoder and ViT image encoder unchanged
under their own package: the SAM 1 GPU path serves them as it is, image half
included (MobileSAM's own TinyViT encoder has no relative-position table and
its own attention, so the fused attention of the fast encoder does not
apply to it; bfloat16 does).
"""

from __future__ import annotations

from typing import Tuple

from . import Family, Target, signatures
from .sam1 import copy_targets, image_targets, predict_resident


def targets(family: Family) -> Tuple[Target, ...]:
    return copy_targets(family, family.hook_module, signatures.SAM1_PREDICT, predict_resident) + image_targets(
        family.hook_module
    )
