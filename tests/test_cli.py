"""The console commands run end to end on the CPU."""

from __future__ import annotations

import json
import subprocess
import sys


def test_bench_tiny_json(tmp_path):
    out = tmp_path / "bench.json"
    proc = subprocess.run(
        [sys.executable, "-m", "samgpu_shim", "bench", "--calls", "3", "--warmup", "1",
         "--image", "120x160", "--device", "cpu", "--json", str(out)],
        capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    assert "upstream predict (numpy out)" in proc.stdout
    report = json.loads(out.read_text())
    result = report["results"][0]
    assert result["identical_to_upstream"] is True
    rows = {r["path"]: r for r in result["rows"]}
    assert rows["upstream predict (numpy out)"]["syncs_per_call"] == 9
    assert rows["shim predict (tensors out)"]["syncs_per_call"] == 0
    assert len(rows["shim predict (tensors out)"]["samples_ms"]) == 3


def test_doctor():
    proc = subprocess.run([sys.executable, "-m", "samgpu_shim", "doctor"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "segment-anything: installed yes, patched" in proc.stdout
    assert "SAMGPU_AS_NUMPY" in proc.stdout and "wrapt:" in proc.stdout
