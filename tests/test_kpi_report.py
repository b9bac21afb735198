"""``samgpu-shim kpi``: reports from KPI files, bad lines, gzip, rotation, streaming."""

from __future__ import annotations

import gzip
import json
import subprocess
import sys
import tracemalloc

import pytest

from samgpu_shim.tools import cli, kpi


def _event(ts, mode="gpu", latency=5.0, module="app.loop", function="step", family="segment-anything",
           source="default"):
    return json.dumps({"ts": ts, "event": "sam_predict_output", "as_numpy": int(mode == "numpy"),
                       "as_numpy_source": source, "mask_device": "cuda:0", "family": family,
                       "latency_ms": latency, "module": module, "function": function, "line": 3})


def test_report_per_site_share_and_percentiles(tmp_path, capsys):
    f = tmp_path / "kpi.jsonl"
    lines = [_event(1_700_000_000 + i, latency=float(i % 10 + 1)) for i in range(100)]
    lines += [_event(1_700_000_100 + i, mode="numpy", latency=30.0, module="legacy.x", source="module")
              for i in range(25)]
    lines += [json.dumps({"ts": 1_700_000_050, "event": "sam_predict_device_time", "device_ms": 1.5,
                          "module": "app.loop", "function": "step", "line": 3})]
    f.write_text("\n".join(lines) + "\n")
    assert cli.main(["kpi", str(f), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["calls"] == 125 and data["gpu_share"] == 0.8
    step = next(s for s in data["sites"] if s["function"] == "step")
    assert step["gpu_share"] == 1.0 and step["sources"] == {"default": 100}
    # the 50th of 100 values is 5.0; buckets are about 6% wide
    assert step["latency"]["gpu"]["p50_ms"] == pytest.approx(5.0, rel=0.06) and step["latency"]["gpu"]["max_ms"] == 10.0
    assert step["device"]["p50_ms"] == pytest.approx(1.5, rel=0.05)
    legacy = next(s for s in data["sites"] if s["module"] == "legacy.x")
    assert legacy["gpu_share"] == 0.0 and legacy["sources"] == {"module": 25}
    assert len(data["per_minute"]) >= 2


def test_bad_lines_are_counted_not_fatal(tmp_path, capsys):
    f = tmp_path / "kpi.jsonl"
    f.write_text(_event(1.0) + "\n{not json\n" + _event(2.0) + '\n[1, 2]\n{"ts": 3, "event": "sam_pre')
    assert cli.main(["kpi", str(f)]) == 0
    out = capsys.readouterr().out
    assert "3 line(s) skipped" in out and f"{f}:2" in out


def test_gzip_and_rotation_in_time_order(tmp_path, capsys):
    old = tmp_path / "app.log.1.gz"
    with gzip.open(old, "wt") as g:
        g.write("\n".join(_event(1_700_000_000 + i, mode="numpy") for i in range(10)) + "\n")
    new = tmp_path / "app.log"
    new.write_text("\n".join(_event(1_700_000_600 + i) for i in range(10)) + "\n")
    assert cli.main(["kpi", str(new), str(old), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["calls"] == 20 and data["from"] == 1_700_000_000 and data["to"] == 1_700_000_609
    assert kpi.order([str(new), str(old)]) == [str(old), str(new)]
    minutes = data["per_minute"]
    assert minutes[0]["numpy"] == 10 and minutes[-1]["gpu"] == 10


def test_truncated_gzip_is_reported(tmp_path, capsys):
    f = tmp_path / "cut.gz"
    full = gzip.compress(("\n".join(_event(1.0 + i) for i in range(2000)) + "\n").encode())
    f.write_bytes(full[: len(full) // 2])
    assert cli.main(["kpi", str(f), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert 0 < data["calls"] < 2000 and data["skipped_lines"] >= 1


def test_since_until(tmp_path, capsys):
    f = tmp_path / "kpi.jsonl"
    f.write_text("\n".join(_event(1_700_000_000 + 60 * i) for i in range(10)) + "\n")
    assert cli.main(["kpi", str(f), "--json", "--since", "1700000120", "--until", "2023-11-14T22:19:00"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["from"] == 1_700_000_120 and data["to"] <= 1_700_000_340


def test_missing_empty_and_bad_arguments_are_errors(tmp_path, capsys):
    assert cli.main(["kpi", str(tmp_path / "nope.jsonl")]) == 2
    assert "no such file" in capsys.readouterr().err
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    assert cli.main(["kpi", str(empty)]) == 2
    assert "no sam_predict_output event" in capsys.readouterr().err
    assert cli.main(["kpi", str(empty), "--since", "yesterday"]) == 2
    assert "ISO 8601" in capsys.readouterr().err


def test_plot(tmp_path):
    pytest.importorskip("matplotlib")
    f = tmp_path / "kpi.jsonl"
    f.write_text("\n".join(_event(1_700_000_000 + 30 * i, mode="gpu" if i % 3 else "numpy") for i in range(40)))
    png = tmp_path / "kpi.png"
    proc = subprocess.run([sys.executable, "-m", "samgpu_shim", "kpi", str(f), "--plot", str(png)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.slow
def test_a_million_lines_stream_in_bounded_memory(tmp_path):
    f = tmp_path / "big.jsonl"
    line = _event(1_700_000_000.5, latency=4.2) + "\n"
    with open(f, "w") as out:
        for _ in range(100):
            out.write(line * 10_000)
    tracemalloc.start()
    report = kpi.build([str(f)])
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert report.events == 1_000_000
    assert peak < 20 * 2**20, f"peak {peak / 2**20:.1f} MB for a {f.stat().st_size / 2**20:.0f} MB file"
