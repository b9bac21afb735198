"""The worked example: its GPU-resident packet equals its numpy twin's."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import numpy as np

from conftest import upstream

EXAMPLE = Path(__file__).parent.parent / "examples" / "frame_loop.py"


def _load():
    spec = importlib.util.spec_from_file_location("frame_loop", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_packets_match(predictor):
    loop = _load()
    point, label = np.array([[80, 60]]), np.array([1])
    masks_np, scores_np, _ = upstream(predictor, point, label)
    masks, scores, _ = predictor.predict(point, label)
    gpu = json.loads(loop.packet_gpu(masks, scores, 0))
    ref = json.loads(loop.packet_numpy(masks_np, scores_np, 0))
    assert {k: gpu[k] for k in ("frame", "mask", "area_px", "bbox_xyxy")} == {
        k: ref[k] for k in ("frame", "mask", "area_px", "bbox_xyxy")
    }
    assert np.allclose(gpu["centroid_xy"], ref["centroid_xy"]) and np.isclose(gpu["score"], ref["score"])


def test_example_runs_both_ways():
    for extra in ([], ["--numpy"]):
        proc = subprocess.run(
            [sys.executable, str(EXAMPLE), "--frames", "2", "--size", "96x128", *extra],
            capture_output=True, text=True, timeout=300,
        )
        assert proc.returncode == 0, proc.stderr
        assert '"frame": 0' in proc.stdout and "median" in proc.stdout
