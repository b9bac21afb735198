"""Call-site attribution, counters, latency percentiles and device time.

Every ``predict`` call is attributed to the frame that called it (module,
function, line). ``stats()`` reports counters per mode, per device and per
call site, with host latency percentiles over the last calls of each site
and, when ``SAMGPU_KPI_DEVICE_TIME`` is on, device time measured with CUDA
events and collected only once those events have completed (no sync).
"""

from __future__ import annotations

import sys
import threading
from collections import deque
from typing import Any, Deque, Dict, List, Optional, Tuple

import numpy as np

from . import _config
from ._kpi import device_of

Site = Tuple[str, str, int]  # module, function, line

_WINDOW = 1024  # latencies kept per call site for the percentiles
_SKIP = ("samgpu_shim", "wrapt")

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
    return done


def _percentiles(samples: Deque[float]) -> Optional[Dict[str, float]]:
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
