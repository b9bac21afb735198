"""Metrics where operators look: OpenTelemetry and Prometheus.

``SAMGPU_METRICS=otel,prometheus`` (or ``configure(metrics=[...])``) records
every predict call as metrics, next to the KPI log events:

* a counter of calls and a histogram of host latency in milliseconds, with
  the attributes family, mode (``gpu``/``numpy``), mode source, device and
  the call site (module and function);
* a histogram of device time when ``SAMGPU_KPI_DEVICE_TIME`` is on (CUDA
  events, collected without waiting);
* graph mode counters (captures, replays, fallbacks), read when scraped.

OpenTelemetry goes through the global ``MeterProvider``: whatever exporter the
application configures receives the series, and without an SDK the API's
no-op meter makes it free. Prometheus uses ``prometheus_client``'s default
registry (multi-process servers: ``PROMETHEUS_MULTIPROC_DIR``, see
docs/kpi.rst); :func:`start_metrics_server` serves it for applications that
expose none. A backend whose package is missing is one warning, never an
error. Nothing here touches tensor data, so no host sync is added.

Call sites are bounded: after :data:`MAX_SITES` distinct (module, function)
pairs, further ones are recorded as ``other``.

The hot path only appends to a bounded in-memory buffer (about a
microsecond); a daemon thread hands the buffer to the backends every
:data:`FLUSH_SECONDS` (their own recording costs tens of microseconds per
call with the OpenTelemetry SDK), and :func:`flush` does it at once. So
exported series lag the calls by at most that interval; if the buffer ever
fills (the thread starved), the oldest measurements are dropped.
"""

from __future__ import annotations

import atexit
import logging
import sys
import threading
import time
from collections import deque
from typing import Any, Callable, Deque, Dict, List, Optional, Tuple

from . import _config

_logger = logging.getLogger("samgpu_shim")
_lock = threading.Lock()

MAX_SITES = 200
# Host latency buckets, 0.5 ms to 500 ms (SAM calls on a GPU: about 1 to 200 ms).
BUCKETS_MS = (0.5, 1.0, 2.0, 3.0, 5.0, 7.5, 10.0, 15.0, 20.0, 30.0, 50.0, 75.0, 100.0, 200.0, 500.0)

FLUSH_SECONDS = 0.5
BUFFER = 100_000

Key = Tuple[str, str, str, str, str, str]  # family, mode, source, device, module, function

# The backends' recording functions, run by flush(); empty when no backend is on
# (the dispatcher tests this list before calling observe()).
recorders: List[Callable[[Key, float], None]] = []
device_recorders: List[Callable[[Tuple[str, str], float], None]] = []
_pending: Deque[Tuple[Key, float]] = deque(maxlen=BUFFER)
_pending_device: Deque[Tuple[Tuple[str, str], float]] = deque(maxlen=BUFFER)
_flush_lock = threading.Lock()
_thread: Optional[threading.Thread] = None
_active: Tuple[str, ...] = ()
_sites: Dict[Tuple[str, str], Tuple[str, str]] = {}
_warned: set = set()


def _site(module: str, function: str) -> Tuple[str, str]:
    key = (module, function)
    got = _sites.get(key)
    if got is None:
        got = key if len(_sites) < MAX_SITES else ("other", "other")
        _sites[key] = got
    return got


def observe(family: str, as_numpy: bool, source: str, device: str, site: Tuple[str, str, int],
            host_ms: float) -> None:
    """One predict call (called by the dispatcher only when a backend is on)."""
    module, function = _site(site[0], site[1])
    _pending.append(((family, "numpy" if as_numpy else "gpu", source, device, module, function), host_ms))
    if device_recorders and _config.kpi_device_time():
        from ._telemetry import collect_device_times

        collect_device_times()  # completed timings reach on_device_time below


def on_device_time(site: Tuple[str, str, int], ms: float) -> None:
    """Listener of :func:`samgpu_shim._telemetry.collect_device_times`."""
    if device_recorders:
        _pending_device.append((_site(site[0], site[1]), ms))


def flush() -> None:
    """Hand every buffered measurement to the backends now."""
    with _flush_lock:
        record_all = list(recorders)
        record_devices = list(device_recorders)
        while _pending:
            key, ms = _pending.popleft()
            for record in record_all:
                record(key, ms)
        while _pending_device:
            site, ms = _pending_device.popleft()
            for record in record_devices:
                record(site, ms)


def _drain_forever() -> None:
    while True:
        time.sleep(FLUSH_SECONDS)
        try:
            flush()
        except Exception:  # a backend that raises must not kill the thread
            _logger.warning("samgpu_shim: a metrics backend raised; measurements dropped", exc_info=True)


def _start_thread() -> None:
    global _thread
    if _thread is None or not _thread.is_alive():
        _thread = threading.Thread(target=_drain_forever, name="samgpu-shim-metrics", daemon=True)
        _thread.start()
        atexit.register(flush)


def _copy_sites() -> List[Tuple[str, str, int]]:
    """(site, operation, count) of the transfer guard's implicit copies; none before its first use."""
    import sys

    guard = sys.modules.get("samgpu_shim.gpu.guard")
    if guard is None:
        return []
    return [(r["site"], r["operation"], r["count"]) for r in guard.stats()["sites"]]


def _graph_stats() -> Optional[Dict[str, Any]]:
    graphs = sys.modules.get("samgpu_shim.gpu.graphs")
    return graphs.stats() if graphs is not None else None


# -- OpenTelemetry ------------------------------------------------------------


class _Otel:
    def __init__(self) -> None:
        from opentelemetry import metrics

        from ._version import __version__

        meter = metrics.get_meter("samgpu_shim", __version__)
        self.calls = meter.create_counter(
            "samgpu.predict.calls", unit="{call}", description="predict calls, by mode and call site"
        )
        self.latency = meter.create_histogram(
            "samgpu.predict.duration",
            unit="ms",
            description="host time spent in predict (the device may still be working when it returns)",
            explicit_bucket_boundaries_advisory=list(BUCKETS_MS),
        )
        self.device = meter.create_histogram(
            "samgpu.predict.device_duration", unit="ms", description="device time of GPU-mode predict calls",
            explicit_bucket_boundaries_advisory=list(BUCKETS_MS),
        )
        meter.create_observable_counter(
            "samgpu.graph.events", callbacks=[self._graph_events], unit="{event}",
            description="graph mode captures, replays and fallbacks",
        )
        meter.create_observable_counter(
            "samgpu.guard.implicit_copies", callbacks=[self._copies], unit="{copy}",
            description="implicit host copies of GPU-mode results made by the transfer guard, by line",
        )
        self._attrs: Dict[Key, Dict[str, str]] = {}
        self._device_attrs: Dict[Tuple[str, str], Dict[str, str]] = {}

    def _graph_events(self, options: Any) -> Any:
        from opentelemetry.metrics import Observation

        stats = _graph_stats()
        if not stats:
            return []
        return [Observation(stats[k], {"samgpu.graph.event": k}) for k in ("captures", "replays", "fallbacks")]

    def _copies(self, options: Any) -> Any:
        from opentelemetry.metrics import Observation

        return [Observation(n, {"code.lineno.site": site, "samgpu.operation": op}) for site, op, n in _copy_sites()]

    def record(self, key: Key, ms: float) -> None:
        attrs = self._attrs.get(key)
        if attrs is None:
            family, mode, source, device, module, function = key
            attrs = self._attrs[key] = {
                "samgpu.family": family,
                "samgpu.mode": mode,
                "samgpu.mode_source": source,
                "samgpu.device": device,
                "code.namespace": module,
                "code.function": function,
            }
        self.calls.add(1, attrs)
        self.latency.record(ms, attrs)

    def record_device(self, site: Tuple[str, str], ms: float) -> None:
        attrs = self._device_attrs.get(site)
        if attrs is None:
            attrs = self._device_attrs[site] = {"code.namespace": site[0], "code.function": site[1]}
        self.device.record(ms, attrs)


# -- Prometheus -----------------------------------------------------------------


_LABELS = ("family", "mode", "mode_source", "device", "module", "function")
_prom: Optional[_Prometheus] = None  # one set of series per process: the registry refuses duplicates


class _Prometheus:
    def __init__(self) -> None:
        import prometheus_client as pc

        self.calls = pc.Counter("samgpu_predict_calls", "predict calls, by mode and call site", _LABELS)
        self.latency = pc.Histogram(
            "samgpu_predict_latency_ms", "host time spent in predict, milliseconds", _LABELS, buckets=BUCKETS_MS
        )
        self.device = pc.Histogram(
            "samgpu_predict_device_ms", "device time of GPU-mode predict calls, milliseconds",
            ("module", "function"), buckets=BUCKETS_MS,
        )
        self._children: Dict[Key, Tuple[Any, Any]] = {}
        self._device_children: Dict[Tuple[str, str], Any] = {}
        # Graph counters are read at scrape time; a custom collector does not
        # work in prometheus_client's multi-process mode, where it is skipped.
        import os

        if not os.environ.get("PROMETHEUS_MULTIPROC_DIR") and not os.environ.get("prometheus_multiproc_dir"):
            pc.REGISTRY.register(_GraphCollector())
            pc.REGISTRY.register(_CopiesCollector())

    def record(self, key: Key, ms: float) -> None:
        pair = self._children.get(key)
        if pair is None:
            pair = self._children[key] = (self.calls.labels(*key), self.latency.labels(*key))
        pair[0].inc()
        pair[1].observe(ms)

    def record_device(self, site: Tuple[str, str], ms: float) -> None:
        child = self._device_children.get(site)
        if child is None:
            child = self._device_children[site] = self.device.labels(*site)
        child.observe(ms)


class _GraphCollector:
    def collect(self) -> Any:
        from prometheus_client.core import CounterMetricFamily

        stats = _graph_stats()
        family = CounterMetricFamily("samgpu_graph_events", "graph mode captures, replays and fallbacks",
                                     labels=["event"])
        if stats:
            for k in ("captures", "replays", "fallbacks"):
                family.add_metric([k], stats[k])
        yield family


class _CopiesCollector:
    def collect(self) -> Any:
        from prometheus_client.core import CounterMetricFamily

        family = CounterMetricFamily("samgpu_guard_implicit_copies",
                                     "implicit host copies of GPU-mode results (transfer guard), by line",
                                     labels=["site", "operation"])
        for site, op, n in _copy_sites():
            family.add_metric([site, op], n)
        yield family


# -- switching backends on and off ---------------------------------------------

_otel: Optional[_Otel] = None


def _make(name: str) -> Optional[Any]:
    global _otel, _prom
    try:
        if name == "otel":
            if _otel is None:
                _otel = _Otel()
            return _otel
        if _prom is None:
            _prom = _Prometheus()
        return _prom
    except ImportError as exc:
        if name not in _warned:
            _warned.add(name)
            package = "opentelemetry-api" if name == "otel" else "prometheus-client"
            _logger.warning(
                "samgpu_shim: metrics backend %r asked for but %s is not installed (%s); "
                "pip install 'samgpu-shim[%s]'. Predict goes on without it.",
                name, package, exc, "otel" if name == "otel" else "prometheus",
            )
        return None


def apply(backends: Tuple[str, ...]) -> None:
    """Make ``backends`` the active ones (called at patch time and by configure)."""
    global _active
    flush()  # what was measured goes to the backends it was measured for
    with _lock:
        made = [b for b in (_make(name) for name in backends) if b is not None]
        if made:
            _start_thread()
        recorders[:] = [b.record for b in made]
        device_recorders[:] = [b.record_device for b in made]
        _active = tuple(backends)
        from . import _telemetry

        if made and on_device_time not in _telemetry.device_time_listeners:
            _telemetry.device_time_listeners.append(on_device_time)


def active() -> Tuple[str, ...]:
    return _active


def start_metrics_server(port: int = 9464, addr: str = "127.0.0.1") -> Any:
    """Serve Prometheus metrics over HTTP (``/metrics``) from a background thread.

    For applications that expose no metrics endpoint of their own. In
    prometheus_client's multi-process mode (``PROMETHEUS_MULTIPROC_DIR`` set)
    it serves the aggregate of every process. Returns the HTTP server (its
    ``server_port`` is the port actually bound; ``port=0`` picks a free one).
    Listens on 127.0.0.1 unless told otherwise.
    """
    import os

    import prometheus_client as pc

    flush()
    if "prometheus" not in _active:
        _logger.warning("samgpu_shim: start_metrics_server() with the prometheus backend off: "
                        "set SAMGPU_METRICS=prometheus or configure(metrics=['prometheus'])")
    registry = pc.REGISTRY
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        registry = pc.CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
    started = pc.start_http_server(port, addr=addr, registry=registry)
    return started[0] if isinstance(started, tuple) else started
