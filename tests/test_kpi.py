"""KPI events on the ``samgpu_shim.kpi`` logger."""

from __future__ import annotations

import json
import logging

import pytest

import samgpu_shim
from samgpu_shim import _telemetry
from samgpu_shim import _telemetry as _kpi

from conftest import run_python
from prompts import PC, PL


class Collect(logging.Handler):
    def __init__(self):
        super().__init__(level=logging.INFO)
        self.records = []

    def emit(self, record):
        self.records.append(record)


@pytest.fixture()
def kpi_records():
    logger = logging.getLogger("samgpu_shim.kpi")
    handler = Collect()
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    yield handler.records
    logger.removeHandler(handler)
    logger.setLevel(logging.NOTSET)


def test_event_schema(predictor, kpi_records):
    predictor.predict(PC, PL)
    predictor.predict(PC, PL, as_numpy=True)
    assert len(kpi_records) == 2
    gpu, host = (json.loads(r.getMessage()) for r in kpi_records)
    device = str(predictor.device)
    assert gpu["event"] == "sam_predict_output"
    assert isinstance(gpu["ts"], float)
    assert gpu["as_numpy"] == 0 and host["as_numpy"] == 1
    assert gpu["as_numpy_source"] == "default" and host["as_numpy_source"] == "keyword"
    assert (gpu["mask_device"], gpu["iou_device"], gpu["low_device"]) == (device, device, device)
    assert (host["mask_device"], host["iou_device"], host["low_device"]) == ("cpu", "cpu", "cpu")
    assert gpu["predictor"] == "SamPredictor"
    assert gpu["family"] == "segment-anything"
    assert gpu["latency_ms"] > 0
    assert kpi_records[0].levelno == logging.INFO
    assert kpi_records[0].samgpu_kpi["event"] == "sam_predict_output"  # structured copy


def test_nothing_built_without_a_handler(predictor, monkeypatch):
    built = []

    class Spy(_kpi.KpiEvent):
        def __init__(self, fields):
            built.append(fields)
            super().__init__(fields)

    monkeypatch.setattr(_kpi, "KpiEvent", Spy)
    predictor.predict(PC, PL)
    assert built == []
    logger = logging.getLogger("samgpu_shim.kpi")
    handler = Collect()
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        predictor.predict(PC, PL)
    finally:
        logger.removeHandler(handler)
        logger.setLevel(logging.NOTSET)
    assert len(built) == 1


def test_raising_handler_never_breaks_predict(predictor, caplog):
    class Broken(logging.Handler):
        def emit(self, record):
            raise RuntimeError("handler down")

        def handle(self, record):
            self.emit(record)

    logger = logging.getLogger("samgpu_shim.kpi")
    broken = Broken(level=logging.INFO)
    logger.addHandler(broken)
    logger.setLevel(logging.INFO)
    _telemetry._warned_failure = False
    try:
        with caplog.at_level(logging.WARNING, logger="samgpu_shim"):
            masks = predictor.predict(PC, PL)[0]
            for _ in range(3):
                predictor.predict(PC, PL)
    finally:
        logger.removeHandler(broken)
        logger.setLevel(logging.NOTSET)
    assert masks.shape == (3, 120, 160)
    # the docs say: one warning, however many calls
    warnings = [r for r in caplog.records if "a KPI handler raised" in r.getMessage()]
    assert len(warnings) == 1 and warnings[0].exc_info is not None


def test_kpi_file(tmp_path):
    path = tmp_path / "kpi.jsonl"
    run_python(
        """
import samgpu_shim, numpy as np
from samgpu_shim.tools.models import build_sam
from segment_anything import SamPredictor
p = SamPredictor(build_sam("tiny")); p.set_image(np.zeros((32, 48, 3), np.uint8))
for _ in range(3):
    p.predict(np.array([[5, 5]]), np.array([1]))
p.predict(np.array([[5, 5]]), np.array([1]), as_numpy=True)
""",
        env={"SAMGPU_KPI_FILE": str(path)},
    )
    events = [json.loads(line) for line in path.read_text().splitlines()]
    assert [e["as_numpy"] for e in events] == [0, 0, 0, 1]
    assert all(e["event"] == "sam_predict_output" for e in events)


def test_unwritable_kpi_file_is_a_warning(tmp_path):
    proc = run_python(
        """
import samgpu_shim, numpy as np
from samgpu_shim.tools.models import build_sam
from segment_anything import SamPredictor
p = SamPredictor(build_sam("tiny")); p.set_image(np.zeros((32, 48, 3), np.uint8))
print(type(p.predict(np.array([[5, 5]]), np.array([1]))[0]).__name__)
""",
        env={"SAMGPU_KPI_FILE": str(tmp_path / "missing-dir" / "kpi.jsonl")},
    )
    assert proc.stdout.strip() == "Tensor"
    assert "cannot write KPI events to SAMGPU_KPI_FILE" in proc.stderr


def test_repatching_does_not_stack_file_handlers(tmp_path, monkeypatch):
    monkeypatch.setenv("SAMGPU_KPI_FILE", str(tmp_path / "k.jsonl"))
    logger = logging.getLogger("samgpu_shim.kpi")
    before = len(logger.handlers)
    for _ in range(3):
        samgpu_shim.unpatch()
        samgpu_shim.patch()
    assert len(logger.handlers) == before + 1
    monkeypatch.delenv("SAMGPU_KPI_FILE")
    samgpu_shim.unpatch()
    samgpu_shim.patch()
    assert len(logger.handlers) == before


def test_kpi_fields_add_to_the_events_inside(predictor, kpi_records):
    with samgpu_shim.kpi_fields(frame_id=7, stream="probe-1"):
        with samgpu_shim.kpi_fields(frame_id=8):  # inner blocks add to, and win over, outer ones
            predictor.predict(PC, PL)
        predictor.predict(PC, PL, as_numpy=True)
    predictor.predict(PC, PL)
    events = [json.loads(r.getMessage()) for r in kpi_records if "sam_predict_output" in r.getMessage()]
    assert [(e.get("frame_id"), e.get("stream")) for e in events[-3:]] == [(8, "probe-1"), (7, "probe-1"), (None, None)]


def test_kpi_fields_cannot_replace_the_events_own():
    with pytest.raises(ValueError, match="latency_ms"):
        with samgpu_shim.kpi_fields(latency_ms=0):
            pass
