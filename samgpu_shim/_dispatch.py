"""The hot path: what a patched ``predict`` does on every call.

:func:`predict_wrapper` decides the mode of one call (keyword, module rule,
run-time override, environment), runs upstream's function (numpy) or the
family's GPU path (tensors), and records the call (counters, KPI event).
:func:`inside_gpu_calls` wraps a model-internal step so that its sync-free
replacement runs only inside GPU-mode calls.
"""

from __future__ import annotations

import contextvars
import sys
import time
from typing import Any, Callable, Tuple

from . import _config, _metrics, _telemetry
from .families import Wrapper

# True while upstream's own predict runs for a numpy-mode call: methods it calls
# internally (segment-anything's predict_torch) must stay upstream's too.
UPSTREAM_CALL = contextvars.ContextVar("samgpu_shim_upstream_call", default=False)


def predict_wrapper(family: str, resident: Callable[..., Any]) -> Wrapper:
    """The wrapper around a predictor's ``predict``: dispatch, count, KPI."""
    resolve = _config.resolve_as_numpy
    scoped_guard = None  # samgpu_shim.gpu.guard, imported on the first GPU-mode call (it needs torch)
    emit = _telemetry.emit_predict
    clock = time.perf_counter
    site_of = _telemetry.call_site
    record = _telemetry.record
    device_timer = _telemetry.device_timer
    metric_recorders = _metrics.recorders  # the list itself: filled and emptied in place
    observe = _metrics.observe
    device_of = _telemetry.device_of

    def wrapper(wrapped: Any, instance: Any, args: tuple, kwargs: dict) -> Any:
        nonlocal scoped_guard
        site = site_of()
        as_numpy, source = resolve(kwargs.pop("as_numpy", None), site[0])
        timer = device_timer(instance, as_numpy)
        started = clock()
        if as_numpy:
            args, kwargs = host_prompts(args, kwargs)
            token = UPSTREAM_CALL.set(True)
            try:
                out = wrapped(*args, **kwargs)
            finally:
                UPSTREAM_CALL.reset(token)
        else:
            out = resident(instance, *args, **kwargs)
            if scoped_guard is None:
                from .gpu import guard as scoped_guard
            if scoped_guard.mode() != "off":
                out = scoped_guard.guard(out, site)
        host_ms = (clock() - started) * 1e3
        if timer is not None:
            timer.stop(site)
        record(site, as_numpy, out, host_ms)
        if metric_recorders:
            observe(family, as_numpy, source, device_of(out), site, host_ms)
        emit(instance, out, as_numpy, source, host_ms, family, site)
        return out

    return wrapper


def host_prompts(args: tuple, kwargs: dict) -> Tuple[tuple, dict]:
    """Tensor prompts as numpy arrays, for upstream's numpy path.

    Code migrated to the GPU path feeds tensors back as prompts (the last
    low-res logits as ``mask_input``, a tracked point); upstream's numpy path
    cannot read them. Rolled back (``SAMGPU_AS_NUMPY=1``, ``as_numpy=True``),
    such code must keep working unchanged: its tensors, and tensors inside
    lists (``predict_batch``), are copied to numpy first. Anything else is
    passed through untouched.
    """
    torch = sys.modules.get("torch")
    if torch is None:
        return args, kwargs
    tensor = torch.Tensor

    def has(value: Any) -> bool:
        return isinstance(value, tensor) or (
            isinstance(value, (list, tuple)) and any(isinstance(v, tensor) for v in value)
        )

    if not any(has(v) for v in args) and not any(has(v) for v in kwargs.values()):
        return args, kwargs

    def host(value: Any) -> Any:
        if isinstance(value, tensor):
            return value.detach().cpu().numpy()
        if isinstance(value, (list, tuple)) and any(isinstance(v, tensor) for v in value):
            return type(value)(host(v) for v in value)
        return value

    return tuple(host(v) for v in args), {k: host(v) for k, v in kwargs.items()}


def resident(family: str, function: Callable[..., Any]) -> Callable[[Any], Wrapper]:
    """``Target.make_wrapper`` for a ``predict`` whose GPU path is ``function``."""

    def make(original: Any) -> Wrapper:
        return predict_wrapper(family, function)

    return make


def inside_gpu_calls(replacement: Callable[..., Any]) -> Callable[[Any], Wrapper]:
    """``Target.make_wrapper`` that runs ``replacement`` inside GPU-mode calls only.

    Everywhere else (numpy mode, rollback, callers of the model itself) the
    wrapped function runs unchanged.
    """

    def make(original: Any) -> Wrapper:
        from .gpu.sync_free import SYNC_FREE

        flag = SYNC_FREE.get

        def wrapper(wrapped: Any, instance: Any, args: tuple, kwargs: dict) -> Any:
            if flag():
                return replacement(instance, *args, **kwargs)
            return wrapped(*args, **kwargs)

        return wrapper

    return make
