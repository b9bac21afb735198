"""Metrics backends with the real OpenTelemetry SDK and a real prometheus_client registry."""

from __future__ import annotations

import threading
import urllib.request

import numpy as np
import pytest
from segment_anything import SamPredictor

import samgpu_shim
from samgpu_shim import _metrics

from conftest import run_python
from prompts import PC, PL

otel_sdk = pytest.importorskip("opentelemetry.sdk.metrics", reason="the otel extra is not installed")
prometheus_client = pytest.importorskip("prometheus_client", reason="the prometheus extra is not installed")

from opentelemetry import metrics as otel_api  # noqa: E402
from opentelemetry.sdk.metrics.export import InMemoryMetricReader  # noqa: E402

READER = InMemoryMetricReader()
otel_api.set_meter_provider(otel_sdk.MeterProvider(metric_readers=[READER]))


@pytest.fixture()
def both():
    samgpu_shim.configure(metrics=["otel", "prometheus"])
    yield
    samgpu_shim.configure(metrics=None)


def _otel_points(name):
    _metrics.flush()
    data = READER.get_metrics_data()
    out = []
    for rm in data.resource_metrics if data else []:
        for sm in rm.scope_metrics:
            for m in sm.metrics:
                if m.name == name:
                    out.extend(m.data.data_points)
    return out


def _otel_calls(**attrs):
    return sum(p.value for p in _otel_points("samgpu.predict.calls")
               if all(p.attributes.get(k) == v for k, v in attrs.items()))


def _prom_calls(**labels):
    _metrics.flush()
    total = 0.0
    for metric in prometheus_client.REGISTRY.collect():
        if metric.name == "samgpu_predict_calls":
            for s in metric.samples:
                if s.name.endswith("_total") and all(s.labels.get(k) == v for k, v in labels.items()):
                    total += s.value
    return total


def test_both_backends_count_modes_and_call_sites(predictor, both):
    site = {"code.function": "test_both_backends_count_modes_and_call_sites"}
    before_gpu = _otel_calls(**{"samgpu.mode": "gpu", **site})
    before_np = _otel_calls(**{"samgpu.mode": "numpy", **site})
    p_before = _prom_calls(mode="gpu", function=site["code.function"])
    for _ in range(3):
        predictor.predict(PC, PL)
    predictor.predict(PC, PL, as_numpy=True)
    assert _otel_calls(**{"samgpu.mode": "gpu", **site}) - before_gpu == 3
    assert _otel_calls(**{"samgpu.mode": "numpy", **site}) - before_np == 1
    assert _prom_calls(mode="gpu", function=site["code.function"]) - p_before == 3
    point = next(p for p in _otel_points("samgpu.predict.duration")
                 if p.attributes.get("code.function") == site["code.function"])
    assert point.attributes["samgpu.family"] == "segment-anything"
    assert point.attributes["samgpu.device"] == "cpu" and point.attributes["code.namespace"] == __name__
    assert point.sum > 0 and point.count >= 3
    assert list(point.explicit_bounds) == list(_metrics.BUCKETS_MS)
    # the Prometheus histogram, its buckets and the mode source label
    _metrics.flush()
    hist = prometheus_client.REGISTRY.get_sample_value(
        "samgpu_predict_latency_ms_count",
        {"family": "segment-anything", "mode": "numpy", "mode_source": "keyword", "device": "cpu",
         "module": __name__, "function": site["code.function"]},
    )
    assert hist == 1


def test_threads_add_up(tiny_sam, image, both):
    def work():
        p = SamPredictor(tiny_sam)
        p.set_image(image)
        for _ in range(5):
            p.predict(PC, PL)

    before = _prom_calls(function="work")
    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert _prom_calls(function="work") - before == 20


def test_sam2_family_too(both):
    pytest.importorskip("sam2", reason="sam2 is not installed")
    from sam2.sam2_image_predictor import SAM2ImagePredictor

    from samgpu_shim.tools.models import synthetic_image

    import family_models

    p = SAM2ImagePredictor(family_models.tiny_sam2())
    p.set_image(synthetic_image(64, 80, seed=1))
    before = _prom_calls(family="sam2")
    p.predict(point_coords=PC, point_labels=PL)
    assert _prom_calls(family="sam2") - before == 1


def test_http_scrape(predictor, both):
    server = samgpu_shim.start_metrics_server(port=0)
    try:
        predictor.predict(PC, PL)
        body = urllib.request.urlopen(f"http://127.0.0.1:{server.server_port}/metrics", timeout=10).read().decode()
    finally:
        server.shutdown()
    assert "samgpu_predict_calls_total{" in body and "samgpu_predict_latency_ms_bucket{" in body
    assert 'le="0.5"' in body and 'le="500.0"' in body
    assert "samgpu_graph_events" in body


def test_off_by_default_and_configure_checks(predictor):
    assert _metrics.recorders == []
    with pytest.raises(ValueError, match="unknown backend"):
        samgpu_shim.configure(metrics=["statsd"])
    samgpu_shim.configure(metrics="prometheus")
    try:
        assert len(_metrics.recorders) == 1
    finally:
        samgpu_shim.configure(metrics=None)
    assert _metrics.recorders == []


def test_missing_package_is_one_warning_and_predict_goes_on():
    proc = run_python(
        """
        import sys
        sys.modules["prometheus_client"] = None
        import numpy as np, samgpu_shim
        from samgpu_shim.tools.models import build_sam
        from segment_anything import SamPredictor
        p = SamPredictor(build_sam("tiny")); p.set_image(np.zeros((32, 48, 3), np.uint8))
        for _ in range(3):
            p.predict(point_coords=np.array([[5.0, 5.0]]), point_labels=np.array([1]))
        samgpu_shim.configure(metrics=["prometheus"])
        print("ok", type(p.predict(point_coords=np.array([[5.0, 5.0]]), point_labels=np.array([1]))[0]).__name__)
        """,
        env={"SAMGPU_METRICS": "prometheus,bogus"},
    )
    assert "ok Tensor" in proc.stdout
    assert proc.stderr.count("prometheus-client is not installed") == 1
    assert "unknown backend(s) bogus" in proc.stderr


def test_otel_api_without_sdk_is_silent_and_free():
    proc = run_python(
        """
        import numpy as np, samgpu_shim
        from samgpu_shim.tools.models import build_sam
        from segment_anything import SamPredictor
        p = SamPredictor(build_sam("tiny")); p.set_image(np.zeros((32, 48, 3), np.uint8))
        print("ok", type(p.predict(point_coords=np.array([[5.0, 5.0]]), point_labels=np.array([1]))[0]).__name__)
        """,
        env={"SAMGPU_METRICS": "otel"},
    )
    assert "ok Tensor" in proc.stdout and proc.stderr == ""


def test_call_sites_are_bounded(monkeypatch):
    monkeypatch.setattr(_metrics, "_sites", {})
    for i in range(_metrics.MAX_SITES + 5):
        _metrics._site(f"m{i}", "f")
    assert _metrics._site("m_new", "f") == ("other", "other")
    assert _metrics._site("m1", "f") == ("m1", "f")
    assert np.unique([v for v in _metrics._sites.values()], axis=0).shape[0] == _metrics.MAX_SITES + 1


def test_the_call_only_buffers_and_the_thread_drains(predictor, both):
    import time

    seen = []
    spy = lambda key, ms: seen.append((threading.current_thread().name, key[-1]))  # noqa: E731
    _metrics.recorders.append(spy)
    try:
        predictor.predict(PC, PL)
        deadline = time.monotonic() + 10 * _metrics.FLUSH_SECONDS
        while not seen and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        _metrics.recorders.remove(spy)
    # recorded by the metrics thread, not in the caller's thread
    assert ("samgpu-shim-metrics", "test_the_call_only_buffers_and_the_thread_drains") in seen
    assert all(name == "samgpu-shim-metrics" for name, _ in seen)
