"""An in-house copy of SAM 1's predictor: ``samgpu_shim.patch("pkg.mod:Class")``.

Only ``predict`` is wrapped; the fork's prompt encoder is its own, so the
sync-free point embedding is not installed for it.
"""

from __future__ import annotations

from typing import Tuple

from .._dispatch import resident
from . import Family, Target, params_check, signatures
from .sam1 import predict_resident


def targets(family: Family) -> Tuple[Target, ...]:
    module, _, cls = (family.spec or "").partition(":")
    return (
        Target(
            module=module,
            attribute=f"{cls}.predict",
            make_wrapper=resident(family.name, predict_resident),
            check=params_check(signatures.SAM1_PREDICT),
            adds_as_numpy=True,
        ),
    )
