"""Per-module rollback, call-site attribution, counters and KPI sampling."""

from __future__ import annotations

import importlib
import json
import logging
import sys

import numpy as np
import pytest
import torch

import samgpu_shim

from conftest import run_python
from prompts import PC, PL

CALLER = '''
def call(predictor, **kwargs):
    return predictor.predict({pc!r}, {pl!r}, **kwargs)
'''


@pytest.fixture()
def two_modules(tmp_path, monkeypatch):
    pkg = tmp_path / "clientapp"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    for name in ("orchestrator", "tracker"):
        (pkg / f"{name}.py").write_text(
            "import numpy as np\n\n"
            "def call(predictor, **kwargs):\n"
            "    return predictor.predict(np.array([[50.0, 60.0], [100.0, 30.0]]), np.array([1, 0]), **kwargs)\n"
        )
    monkeypatch.syspath_prepend(str(tmp_path))
    mods = [importlib.import_module(f"clientapp.{n}") for n in ("orchestrator", "tracker")]
    yield mods
    for n in ("clientapp.orchestrator", "clientapp.tracker", "clientapp"):
        sys.modules.pop(n, None)
    samgpu_shim.configure(as_numpy_modules=None, kpi_sample=None)
    samgpu_shim.reset_stats()


def test_two_modules_get_different_defaults(predictor, two_modules):
    orchestrator, tracker = two_modules
    samgpu_shim.configure(as_numpy_modules=["clientapp.orchestrator"])
    assert isinstance(orchestrator.call(predictor)[0], np.ndarray)
    assert isinstance(tracker.call(predictor)[0], torch.Tensor)
    # the keyword still wins over the module rule
    assert isinstance(orchestrator.call(predictor, as_numpy=False)[0], torch.Tensor)
    samgpu_shim.configure(as_numpy_modules=["clientapp.*"])
    assert isinstance(tracker.call(predictor)[0], np.ndarray)
    samgpu_shim.configure(as_numpy_modules=["clientapp"])  # a plain name covers submodules
    assert isinstance(tracker.call(predictor)[0], np.ndarray)
    samgpu_shim.configure(as_numpy_modules=None)
    assert isinstance(orchestrator.call(predictor)[0], torch.Tensor)
    with pytest.raises(TypeError):
        samgpu_shim.configure(as_numpy_modules="clientapp")


def test_module_rollback_from_environment(tmp_path):
    (tmp_path / "legacy_mod.py").write_text(
        "import numpy as np\n"
        "def call(p):\n    return p.predict(np.array([[5, 5]]), np.array([1]))\n"
    )
    (tmp_path / "new_mod.py").write_text(
        "import numpy as np\n"
        "def call(p):\n    return p.predict(np.array([[5, 5]]), np.array([1]))\n"
    )
    proc = run_python(
        f"import sys; sys.path.insert(0, {str(tmp_path)!r})\n"
        """
import samgpu_shim, numpy as np, legacy_mod, new_mod
from samgpu_shim.tools.models import build_sam
from segment_anything import SamPredictor
p = SamPredictor(build_sam("tiny")); p.set_image(np.zeros((32, 48, 3), np.uint8))
print(type(legacy_mod.call(p)[0]).__name__, type(new_mod.call(p)[0]).__name__)
""",
        env={"SAMGPU_AS_NUMPY_MODULES": "legacy_*, other.pkg"},
    )
    assert proc.stdout.split() == ["ndarray", "Tensor"]


def test_call_site_in_kpi_and_stats(predictor, two_modules):
    orchestrator, tracker = two_modules
    samgpu_shim.reset_stats()
    samgpu_shim.configure(as_numpy_modules=["clientapp.orchestrator"])
    logger = logging.getLogger("samgpu_shim.kpi")
    records = []

    class Keep(logging.Handler):
        def emit(self, record):
            records.append(json.loads(record.getMessage()))

    handler = Keep(level=logging.INFO)
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        for _ in range(3):
            orchestrator.call(predictor)
        tracker.call(predictor)
    finally:
        logger.removeHandler(handler)
        logger.setLevel(logging.NOTSET)
    assert [(r["module"], r["function"], r["line"]) for r in records] == [("clientapp.orchestrator", "call", 4)] * 3 + [
        ("clientapp.tracker", "call", 4)
    ]
    assert records[0]["as_numpy_source"] == "module" and records[0]["as_numpy"] == 1
    stats = samgpu_shim.stats()
    assert stats["calls"] == 4
    assert stats["by_mode"] == {"numpy": 3, "tensor": 1}
    assert stats["by_device"] == {"cpu": 4}
    top = stats["call_sites"][0]
    assert (top["module"], top["function"], top["line"], top["calls"], top["numpy"]) == (
        "clientapp.orchestrator", "call", 4, 3, 3,
    )
    assert top["host_latency_ms"]["n"] == 3 and top["host_latency_ms"]["p50"] > 0
    assert top["device_ms"] is None


def test_call_site_of_a_direct_call(predictor):
    samgpu_shim.reset_stats()
    predictor.predict(PC, PL)
    site = samgpu_shim.stats()["call_sites"][0]
    assert (site["module"], site["function"]) == (__name__, "test_call_site_of_a_direct_call")


def test_kpi_sampling(predictor):
    logger = logging.getLogger("samgpu_shim.kpi")
    seen = []

    class Keep(logging.Handler):
        def emit(self, record):
            seen.append(json.loads(record.getMessage()))

    handler = Keep(level=logging.INFO)
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    samgpu_shim.reset_stats()
    samgpu_shim.configure(kpi_sample=0.25)
    try:
        for _ in range(20):
            predictor.predict(PC, PL)
    finally:
        samgpu_shim.configure(kpi_sample=None)
        logger.removeHandler(handler)
        logger.setLevel(logging.NOTSET)
    assert len(seen) == 5 and all(e["sample_every"] == 4 for e in seen)
    assert samgpu_shim.stats()["calls"] == 20  # counters see every call
    with pytest.raises(ValueError):
        samgpu_shim.configure(kpi_sample=0)


def test_invalid_sampling_env_warns():
    proc = run_python("import samgpu_shim; print(samgpu_shim._config.kpi_sample_every())",
                      env={"SAMGPU_KPI_SAMPLE": "often"})
    assert proc.stdout.strip() == "1"
    assert "SAMGPU_KPI_SAMPLE='often' is not a number" in proc.stderr
