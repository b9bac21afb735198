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
    assert rows["frame pipeline, shim on device"]["syncs_per_call"] == 1  # its one copy, as on CUDA
    # progress from the start: the first line before torch, then the device
    assert proc.stderr.startswith("samgpu-shim bench: sam tiny, random weights; importing torch")
    assert proc.stderr.splitlines()[1].startswith("device: cpu")
    assert len(rows["shim predict (tensors out)"]["samples_ms"]) == 3


def test_doctor():
    proc = subprocess.run([sys.executable, "-m", "samgpu_shim", "doctor"], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "segment-anything: installed, patched" in proc.stdout
    assert "SAMGPU_AS_NUMPY" in proc.stdout and "wrapt:" in proc.stdout
    # every settings row has a name; the SAM packages' import-time warnings are not shown
    assert "(configure() only)" not in proc.stdout and "configure(graph_cache_size=)" in proc.stdout
    assert "Warning" not in proc.stderr, proc.stderr
    assert "problems: none found" in proc.stdout
