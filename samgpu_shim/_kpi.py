"""KPI events: one JSON object per ``predict`` call on ``samgpu_shim.kpi``.

Nothing is built or serialised unless a handler would see the record, and the
JSON text itself is only made when a handler formats the record. Reading a
tensor's ``.device`` is metadata: no event ever synchronises the GPU.
"""

from __future__ import annotations

import itertools
import json
import logging
import time
from typing import Any, Dict, Optional, Tuple

from . import _config

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

_counter = itertools.count()


def emit_predict(
    predictor: Any,
    outputs: Any,
    as_numpy: bool,
    source: str,
    latency_ms: float,
    family: str,
    site: Tuple[str, str, int] = ("?", "?", 0),
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
        kpi_logger.info(KpiEvent(fields), extra={"samgpu_kpi": fields})
        if _config.kpi_device_time():
            from ._stats import collect_device_times

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
