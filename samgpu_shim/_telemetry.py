"""Telemetry of every ``predict`` call: call site, counters, KPI events.

* Call-site attribution: each call is attributed to the frame that made it
  (module, function, line).
* Counters: ``stats()`` reports calls per mode, per device and per call site,
  with host latency percentiles over the last calls of each site and, when
  ``SAMGPU_KPI_DEVICE_TIME`` is on, device time measured with CUDA events and
  collected only once those events have completed (no sync).
* KPI events: one JSON object per call on the ``samgpu_shim.kpi`` logger.
  Nothing is built unless a handler would see the record, and the JSON text
  is only made when a handler formats it. Reading a tensor's ``.device`` is
  metadata: no event ever synchronises the GPU.
"""

from __future__ import annotations

import contextlib
import contextvars
import itertools
import json
import logging
import sys
import threading
import time
from collections import deque
from typing import Any, Deque, Dict, Iterator, List, Optional, Tuple

from . import _config

Site = Tuple[str, str, int]  # module, function, line

_WINDOW = 1024  # latencies kept per call site for the percentiles
# Frames that are not the application's: the shim, wrapt, and SAM 3's
# Sam3Image.predict_inst(_batch), which call the patched predict for the
# application (so module rules and KPI sites name the application's line).
_SKIP = ("samgpu_shim", "wrapt", "sam3.model.sam3_image")

_lock = threading.Lock()


def call_site() -> Site:
    """The application frame that called ``predict`` (cheap: a few attribute reads)."""
    frame = sys._getframe(2)
    while frame is not None:
        module = frame.f_globals.get("__name__", "?")
        if not module.startswith(_SKIP):
            return module, frame.f_code.co_name, frame.f_lineno
        frame = frame.f_back
    return "?", "?", 0


class _SiteStats:
    __slots__ = ("calls", "numpy", "tensor", "devices", "host_ms", "device_ms")

    def __init__(self) -> None:
        self.calls = 0
        self.numpy = 0
        self.tensor = 0
        self.devices: Dict[str, int] = {}
        self.host_ms: Deque[float] = deque(maxlen=_WINDOW)
        self.device_ms: Deque[float] = deque(maxlen=_WINDOW)


_sites: Dict[Site, _SiteStats] = {}
# (start event, end event, site) of GPU-mode calls whose device time is pending
_pending: Deque[Tuple[Any, Any, Site]] = deque()
_MAX_PENDING = 4096


def record(site: Site, as_numpy: bool, outputs: Any, host_ms: float) -> None:
    device = device_of(outputs[0])
    with _lock:
        entry = _sites.get(site)
        if entry is None:
            entry = _sites[site] = _SiteStats()
        entry.calls += 1
        if as_numpy:
            entry.numpy += 1
        else:
            entry.tensor += 1
        entry.devices[device] = entry.devices.get(device, 0) + 1
        entry.host_ms.append(host_ms)


class DeviceTimer:
    """CUDA events around one GPU-mode call; read later, never waited on."""

    __slots__ = ("start", "device")

    def __init__(self, device: Any) -> None:
        import torch

        self.device = device
        self.start = torch.cuda.Event(enable_timing=True)
        self.start.record(torch.cuda.current_stream(device))

    def stop(self, site: Site) -> None:
        import torch

        end = torch.cuda.Event(enable_timing=True)
        end.record(torch.cuda.current_stream(self.device))
        with _lock:
            if len(_pending) >= _MAX_PENDING:
                _pending.popleft()  # a consumer that never lets the GPU finish: drop the oldest
            _pending.append((self.start, end, site))


def device_timer(predictor: Any, as_numpy: bool) -> Optional[DeviceTimer]:
    if as_numpy or not _config.kpi_device_time():
        return None
    device = predictor.device
    if getattr(device, "type", None) != "cuda":
        return None
    return DeviceTimer(device)


# called with (site, ms) for every device time collected (the metrics backends)
device_time_listeners: List[Any] = []


def collect_device_times() -> List[Tuple[Site, float]]:
    """Device times of calls whose events have completed (``query()`` only, no wait)."""
    done: List[Tuple[Site, float]] = []
    with _lock:
        while _pending and _pending[0][1].query():
            start, end, site = _pending.popleft()
            ms = start.elapsed_time(end)
            entry = _sites.get(site)
            if entry is not None:
                entry.device_ms.append(ms)
            done.append((site, ms))
    for listener in device_time_listeners:
        for site, ms in done:
            listener(site, ms)
    return done


def _percentiles(samples: Deque[float]) -> Optional[Dict[str, float]]:
    import numpy as np

    if not samples:
        return None
    values = np.fromiter(samples, dtype=np.float64)
    return {
        "p50": round(float(np.percentile(values, 50)), 4),
        "p99": round(float(np.percentile(values, 99)), 4),
        "max": round(float(values.max()), 4),
        "n": int(values.size),
    }


def stats() -> Dict[str, Any]:
    """Counters per mode, device and call site, with latency percentiles (ms)."""
    collect_device_times()
    with _lock:
        items = [(site, e.calls, e.numpy, e.tensor, dict(e.devices), deque(e.host_ms), deque(e.device_ms))
                 for site, e in _sites.items()]
        pending = len(_pending)
    by_device: Dict[str, int] = {}
    all_host: Deque[float] = deque()
    sites = []
    for (module, function, line), calls, n_numpy, n_tensor, devices, host, device in items:
        for name, n in devices.items():
            by_device[name] = by_device.get(name, 0) + n
        all_host.extend(host)
        sites.append(
            {
                "module": module,
                "function": function,
                "line": line,
                "calls": calls,
                "numpy": n_numpy,
                "tensor": n_tensor,
                "devices": devices,
                "host_latency_ms": _percentiles(host),
                "device_ms": _percentiles(device),
            }
        )
    sites.sort(key=lambda s: -s["calls"])
    return {
        "calls": sum(s["calls"] for s in sites),
        "by_mode": {"numpy": sum(s["numpy"] for s in sites), "tensor": sum(s["tensor"] for s in sites)},
        "by_device": by_device,
        "host_latency_ms": _percentiles(all_host),
        "device_time_pending": pending,
        "call_sites": sites,
    }


def reset() -> None:
    with _lock:
        _sites.clear()
        _pending.clear()


# -- KPI events ------------------------------------------------------------

KPI_LOGGER_NAME = "samgpu_shim.kpi"
EVENT_PREDICT = "sam_predict_output"

kpi_logger = logging.getLogger(KPI_LOGGER_NAME)
_logger = logging.getLogger("samgpu_shim")

_warned_failure = False


class KpiEvent:
    """A log message that turns into JSON only when it is formatted."""

    __slots__ = ("fields",)

    def __init__(self, fields: Dict[str, Any]) -> None:
        self.fields = fields

    def __str__(self) -> str:
        return json.dumps(self.fields, separators=(",", ":"))


def device_of(obj: Any) -> str:
    if isinstance(obj, (list, tuple)):  # predict_batch: one result per image
        return device_of(obj[0]) if obj else "none"
    device = getattr(obj, "device", None)
    # numpy arrays have no ``device`` before numpy 2 and ``"cpu"`` from 2.0 on.
    return "cpu" if device is None else str(device)


def enabled() -> bool:
    """True when an INFO record on the KPI logger would reach a handler."""
    return kpi_logger.isEnabledFor(logging.INFO) and kpi_logger.hasHandlers()


EVENT_DEVICE_TIME = "sam_predict_device_time"

# Fields the application adds to the KPI events of the calls it makes inside
# ``kpi_fields(...)`` (a frame id, a request id): empty by default.
_extra_fields: contextvars.ContextVar[Optional[Dict[str, Any]]] = contextvars.ContextVar(
    "samgpu_shim_kpi_fields", default=None
)

_RESERVED = frozenset({"ts", "event", "as_numpy", "as_numpy_source", "mask_device", "iou_device", "low_device",
                       "predictor", "family", "latency_ms", "module", "function", "line", "sample_every"})


@contextlib.contextmanager
def kpi_fields(**fields: Any) -> Iterator[None]:
    """Add ``fields`` to the KPI event of every ``predict`` called inside.

    Values must be JSON-serialisable; nested blocks add to the outer ones.
    The event's own fields cannot be replaced.
    """
    clash = _RESERVED.intersection(fields)
    if clash:
        raise ValueError(f"kpi_fields cannot set the event's own field(s): {', '.join(sorted(clash))}")
    token = _extra_fields.set({**(_extra_fields.get() or {}), **fields})
    try:
        yield
    finally:
        _extra_fields.reset(token)

_counter = itertools.count()


def emit_predict(
    predictor: Any,
    outputs: Any,
    as_numpy: bool,
    source: str,
    latency_ms: float,
    family: str,
    site: Site = ("?", "?", 0),
) -> None:
    """Log one ``sam_predict_output`` event (and any completed device times); never raises."""
    global _warned_failure
    try:
        if not enabled():
            return
        every = _config.kpi_sample_every()
        if every > 1 and next(_counter) % every:
            return
        module, function, line = site
        masks, iou, low = outputs
        fields = {
            "ts": time.time(),
            "event": EVENT_PREDICT,
            "as_numpy": int(as_numpy),
            "as_numpy_source": source,
            "mask_device": device_of(masks),
            "iou_device": device_of(iou),
            "low_device": device_of(low),
            "predictor": type(predictor).__qualname__,
            "family": family,
            "latency_ms": round(latency_ms, 4),
            "module": module,
            "function": function,
            "line": line,
        }
        if every > 1:
            fields["sample_every"] = every
        guard = sys.modules.get("samgpu_shim.gpu.guard")
        if guard is not None:
            fields["implicit_copies"] = guard.total()
        extra = _extra_fields.get()
        if extra:
            fields.update(extra)
        kpi_logger.info(KpiEvent(fields), extra={"samgpu_kpi": fields})
        if _config.kpi_device_time():
            for (d_module, d_function, d_line), ms in collect_device_times():
                timed = {
                    "ts": time.time(),
                    "event": EVENT_DEVICE_TIME,
                    "device_ms": round(ms, 4),
                    "module": d_module,
                    "function": d_function,
                    "line": d_line,
                }
                kpi_logger.info(KpiEvent(timed), extra={"samgpu_kpi": timed})
    except Exception:  # a broken handler must never break predict
        if not _warned_failure:
            _warned_failure = True
            _logger.warning("a KPI handler raised; predict goes on (shown once)", exc_info=True)


EVENT_IMPLICIT_COPY = "sam_implicit_copy"


def on_implicit_copy(record: Dict[str, Any], first: bool) -> None:
    """Transfer guard listener: one ``sam_implicit_copy`` event for each line's first copy."""
    if first and enabled():
        fields = {"ts": time.time(), "event": EVENT_IMPLICIT_COPY, **record}
        kpi_logger.info(KpiEvent(fields), extra={"samgpu_kpi": fields})


class JsonLinesHandler(logging.Handler):
    """Writes each KPI record's JSON message as one line of a file."""

    def __init__(self, path: str) -> None:
        super().__init__(level=logging.INFO)
        # Opened now so that an unwritable path is reported once, at patch time.
        self.path = path
        self._stream = open(path, "a", encoding="utf-8", buffering=1)

    def emit(self, record: logging.LogRecord) -> None:
        try:
            line = record.getMessage()
            with self.lock:  # type: ignore[union-attr]
                self._stream.write(line + "\n")
        except Exception:
            self.handleError(record)

    def close(self) -> None:
        with self.lock:  # type: ignore[union-attr]
            if not self._stream.closed:
                self._stream.close()
        super().close()


_file_handler: Optional[JsonLinesHandler] = None
_level_set_by_us = False


def install_file_handler(path: Optional[str]) -> None:
    """Attach the ``SAMGPU_KPI_FILE`` handler (at most one); log, never raise."""
    global _file_handler, _level_set_by_us
    remove_file_handler()
    if not path:
        return
    try:
        handler = JsonLinesHandler(path)
    except OSError as exc:
        _logger.warning("cannot write KPI events to SAMGPU_KPI_FILE=%r: %s", path, exc)
        return
    _file_handler = handler
    kpi_logger.addHandler(handler)
    if kpi_logger.level == logging.NOTSET:
        # Without this the root's WARNING level would drop every INFO event.
        kpi_logger.setLevel(logging.INFO)
        _level_set_by_us = True


def remove_file_handler() -> None:
    global _file_handler, _level_set_by_us
    if _file_handler is not None:
        kpi_logger.removeHandler(_file_handler)
        _file_handler.close()
        _file_handler = None
    if _level_set_by_us:
        kpi_logger.setLevel(logging.NOTSET)
        _level_set_by_us = False
