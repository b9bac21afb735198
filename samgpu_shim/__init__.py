"""samgpu-shim: GPU-resident ``SamPredictor.predict`` with one import.

``import samgpu_shim`` arms the patch; ``SAMGPU_AS_NUMPY=1`` rolls the default
back to numpy and ``SAMGPU_DISABLE=1`` installs nothing at all.
"""

from __future__ import annotations

import logging
from typing import Any

from ._config import (
    ENV_AS_NUMPY,
    ENV_AS_NUMPY_MODULES,
    ENV_COMPILE_DIR,
    ENV_CUDA_GRAPHS,
    ENV_DISABLE,
    ENV_ENCODER,
    ENV_ENCODER_PRECISION,
    ENV_KPI_DEVICE_TIME,
    ENV_KPI_FILE,
    ENV_KPI_SAMPLE,
    ENV_METRICS,
    ENV_STRICT,
    ENV_TRANSFER_GUARD,
    configure,
)
from ._convert import json_default, to_numpy
from ._lifecycle import get_original, is_patched, patch, status, unpatch
from ._metrics import start_metrics_server
from ._streams import ready_event
from ._telemetry import EVENT_DEVICE_TIME, EVENT_PREDICT, KPI_LOGGER_NAME, kpi_fields
from ._version import __version__

__all__ = [
    "ENV_AS_NUMPY",
    "ENV_AS_NUMPY_MODULES",
    "ENV_COMPILE_DIR",
    "ENV_CUDA_GRAPHS",
    "ENV_DISABLE",
    "ENV_ENCODER",
    "ENV_ENCODER_PRECISION",
    "ENV_KPI_DEVICE_TIME",
    "ENV_KPI_FILE",
    "ENV_KPI_SAMPLE",
    "ENV_METRICS",
    "ENV_STRICT",
    "ENV_TRANSFER_GUARD",
    "EVENT_DEVICE_TIME",
    "EVENT_PREDICT",
    "ImageError",
    "PromptError",
    "StrictConversionError",
    "TransferGuardError",
    "KPI_LOGGER_NAME",
    "clear_graphs",
    "configure",
    "get_original",
    "graph_stats",
    "is_patched",
    "json_default",
    "kpi_fields",
    "patch",
    "ready_event",
    "reset_stats",
    "start_metrics_server",
    "stats",
    "status",
    "to_numpy",
    "transfer_guard",
    "unpatch",
    "__version__",
]


def stats() -> dict:
    """Counters per mode, device and call site, with latency percentiles.

    Host latency is kept for the last 1024 calls of each call site; device
    time too when ``SAMGPU_KPI_DEVICE_TIME`` is on (collected without waiting).
    """
    import sys

    from ._telemetry import stats as _stats

    out = _stats()
    guard = sys.modules.get("samgpu_shim.gpu.guard")
    out["implicit_copies"] = guard.stats() if guard is not None else {"total": 0, "sites": [], "sites_not_kept": 0}
    return out


def reset_stats() -> None:
    """Forget every counter and pending device time."""
    import sys

    from ._telemetry import reset

    reset()
    guard = sys.modules.get("samgpu_shim.gpu.guard")
    if guard is not None:
        guard.reset()


def transfer_guard(mode: str) -> Any:
    """Context manager setting the transfer guard's mode for a scope.

    ``with samgpu_shim.transfer_guard("disallow"): ...`` (``off``, ``allow``,
    ``log`` or ``disallow``); it also works as a decorator. Outside any scope
    the mode is ``SAMGPU_TRANSFER_GUARD`` or ``configure(transfer_guard=...)``.
    """
    from .gpu.guard import transfer_guard as _scope

    return _scope(mode)


def graph_stats() -> dict:
    """Graph mode counters: captures, replays, fallbacks, evictions, cached graphs and their memory."""
    from .gpu.graphs import stats

    return stats()


def clear_graphs() -> None:
    """Drop every captured CUDA graph (after replacing a model's parameters, say)."""
    from .gpu.graphs import clear

    clear()


_LAZY = {
    # errors a caller may catch; their modules import torch, so on first use
    "PromptError": "samgpu_shim.gpu.prompts",
    "ImageError": "samgpu_shim.gpu.image",
    "StrictConversionError": "samgpu_shim.gpu.strict",
    "TransferGuardError": "samgpu_shim.gpu.guard",
}


def __getattr__(name: str) -> object:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'samgpu_shim' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(module), name)


def _autopatch() -> None:
    # The one line an application adds must never take it down.
    try:
        patch()
    except Exception:
        logging.getLogger("samgpu_shim").warning(
            "samgpu_shim: could not install the patch; upstream left untouched", exc_info=True
        )


_autopatch()
