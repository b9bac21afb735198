"""Strict mode, now the transfer guard's ``disallow`` (kept for existing imports).

``SAMGPU_STRICT=1`` and ``configure(strict=True)`` select
``SAMGPU_TRANSFER_GUARD=disallow`` (see :mod:`samgpu_shim.gpu.guard`).
"""

from __future__ import annotations

from .guard import FIX, GuardedTensor, TransferGuardError, guard

StrictConversionError = TransferGuardError
StrictTensor = GuardedTensor
make_strict = guard

__all__ = ["FIX", "StrictConversionError", "StrictTensor", "make_strict"]
