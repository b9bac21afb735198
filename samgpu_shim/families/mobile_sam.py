"""MobileSAM (``mobile_sam`` from mobilesam-mirror, ``mobilesam_lite.mobile_sam``).

Both ship SAM 1's predictor and prompt encoder unchanged under their own
package: the SAM 1 GPU path serves them as it is.
"""

from __future__ import annotations

from typing import Tuple

from . import Family, Target, signatures
from .sam1 import copy_targets, predict_resident


def targets(family: Family) -> Tuple[Target, ...]:
    return copy_targets(family, family.hook_module, signatures.SAM1_PREDICT, predict_resident)
