"""``samgpu-shim kpi FILE...``: a report of KPI JSON-lines files.

Reads the files ``SAMGPU_KPI_FILE`` (or any handler writing the events'
JSON) produced: plain or ``.gz``, several at once, rotated logs put in time
order by their first event. One pass, streaming: memory does not grow with
the file (latency percentiles come from fixed log-spaced buckets, about 6%
wide; maxima are exact). Malformed or truncated lines are counted and
reported with the first line number, never fatal.

Per call site and family: calls, the share in numpy and GPU mode and why
(``as_numpy_source``), host latency p50/p99/max, device time where present;
and the modes over time (per minute). ``--plot`` draws the GPU share over time
and the latency distribution per mode in one figure.
"""

from __future__ import annotations

import datetime as _dt
import gzip
import io
import json
import math
import os
from dataclasses import dataclass, field
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple

# Latency buckets: 10 us to 1000 s, 40 per decade (each about 5.9% wide; the
# percentile reported is the bucket's geometric middle, within about 3%).
_LOW_MS = 0.01
_PER_DECADE = 40
_BUCKETS = _PER_DECADE * 8


class KpiError(Exception):
    """A file that cannot be read at all, or no event in any file."""


def _bucket(ms: float) -> int:
    if ms <= _LOW_MS:
        return 0
    return min(_BUCKETS - 1, int(math.log10(ms / _LOW_MS) * _PER_DECADE) + 1)


def _bucket_value(index: int) -> float:
    if index == 0:
        return _LOW_MS
    return _LOW_MS * 10 ** ((index - 0.5) / _PER_DECADE)


class Latency:
    """A streaming latency distribution: log buckets, exact count and max."""

    __slots__ = ("counts", "n", "max")

    def __init__(self) -> None:
        self.counts = [0] * _BUCKETS
        self.n = 0
        self.max = 0.0

    def add(self, ms: float) -> None:
        self.counts[_bucket(ms)] += 1
        self.n += 1
        if ms > self.max:
            self.max = ms

    def percentile(self, q: float) -> Optional[float]:
        if not self.n:
            return None
        target = q / 100 * self.n
        seen = 0
        for index, count in enumerate(self.counts):
            seen += count
            if seen >= target and count:
                return min(_bucket_value(index), self.max)
        return self.max

    def summary(self) -> Dict[str, Optional[float]]:
        p50, p99 = self.percentile(50), self.percentile(99)
        return {
            "n": self.n,
            "p50_ms": None if p50 is None else round(p50, 3),
            "p99_ms": None if p99 is None else round(p99, 3),
            "max_ms": round(self.max, 3) if self.n else None,
        }


@dataclass
class Site:
    calls: int = 0
    numpy: int = 0
    gpu: int = 0
    sources: Dict[str, int] = field(default_factory=dict)
    latency: Dict[str, Latency] = field(default_factory=lambda: {"gpu": Latency(), "numpy": Latency()})
    device: Latency = field(default_factory=Latency)


@dataclass
class Report:
    sites: Dict[Tuple[str, str, str], Site] = field(default_factory=dict)
    device_by_site: Dict[Tuple[str, str], Latency] = field(default_factory=dict)
    minutes: Dict[int, List[int]] = field(default_factory=dict)  # minute -> [gpu, numpy]
    modes: Dict[str, Latency] = field(default_factory=lambda: {"gpu": Latency(), "numpy": Latency()})
    skipped: int = 0
    first_bad: Optional[Tuple[str, int, str]] = None
    lines: int = 0
    events: int = 0
    first_ts: Optional[float] = None
    last_ts: Optional[float] = None
    copy_sites: Dict[str, Dict[str, Any]] = field(default_factory=dict)  # transfer guard, by line
    implicit_copies: int = 0  # the largest running total seen in predict events


def _open(path: str) -> io.TextIOBase:
    with open(path, "rb") as f:
        magic = f.read(2)
    if magic == b"\x1f\x8b":
        return io.TextIOWrapper(gzip.open(path, "rb"), encoding="utf-8", errors="replace")
    return open(path, encoding="utf-8", errors="replace")


def _first_ts(path: str) -> float:
    try:
        with _open(path) as f:
            for line in f:
                try:
                    return float(json.loads(line)["ts"])
                except (ValueError, KeyError, TypeError):
                    continue
    except (OSError, EOFError):
        pass
    return math.inf


def order(paths: Sequence[str]) -> List[str]:
    """Files in time order (rotated logs: app.log.2.gz, app.log.1, app.log), by their first event."""
    for path in paths:
        if not os.path.exists(path):
            raise KpiError(f"{path}: no such file")
        if os.path.isdir(path):
            raise KpiError(f"{path}: is a folder; give the KPI files")
    return sorted(paths, key=lambda p: (_first_ts(p), p))


def _events(paths: Sequence[str], report: Report) -> Iterator[Dict[str, Any]]:
    for path in paths:
        try:
            with _open(path) as f:
                number = 0
                try:
                    for number, line in enumerate(f, start=1):  # noqa: B007 - read after the loop
                        report.lines += 1
                        text = line.strip()
                        if not text:
                            continue
                        try:
                            event = json.loads(text)
                            if not isinstance(event, dict) or "event" not in event:
                                raise ValueError("not a KPI event")
                        except ValueError:
                            report.skipped += 1
                            if report.first_bad is None:
                                report.first_bad = (path, number, text[:60])
                            continue
                        yield event
                except (EOFError, OSError) as exc:  # a gzip cut off mid-write
                    report.skipped += 1
                    if report.first_bad is None:
                        report.first_bad = (path, number + 1, f"unreadable from here: {exc}")
        except OSError as exc:
            raise KpiError(f"{path}: cannot read: {exc}") from None


def _parse_time(text: Optional[str]) -> Optional[float]:
    if text is None:
        return None
    try:
        return float(text)
    except ValueError:
        pass
    try:
        when = _dt.datetime.fromisoformat(text)
    except ValueError:
        raise KpiError(f"{text!r}: give a time as epoch seconds or ISO 8601 (2026-11-27T13:00:00)") from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=_dt.timezone.utc)
    return when.timestamp()


def build(paths: Sequence[str], since: Optional[str] = None, until: Optional[str] = None) -> Report:
    start, stop = _parse_time(since), _parse_time(until)
    report = Report()
    for event in _events(order(paths), report):
        ts = event.get("ts")
        if not isinstance(ts, (int, float)):
            report.skipped += 1
            continue
        if (start is not None and ts < start) or (stop is not None and ts > stop):
            continue
        kind = event["event"]
        site_key = (str(event.get("module", "?")), str(event.get("function", "?")))
        if kind == "sam_predict_device_time":
            ms = event.get("device_ms")
            if isinstance(ms, (int, float)):
                report.device_by_site.setdefault(site_key, Latency()).add(float(ms))
            continue
        if kind == "sam_implicit_copy":
            where = str(event.get("site", "?"))
            report.copy_sites.setdefault(where, {"site": where, "operation": event.get("operation"),
                                                 "origin": event.get("origin"), "first_ts": ts})
            continue
        if kind != "sam_predict_output":
            continue
        copies = event.get("implicit_copies")
        if isinstance(copies, int) and copies > report.implicit_copies:
            report.implicit_copies = copies
        report.events += 1
        report.first_ts = ts if report.first_ts is None else min(report.first_ts, ts)
        report.last_ts = ts if report.last_ts is None else max(report.last_ts, ts)
        mode = "numpy" if event.get("as_numpy") else "gpu"
        weight = int(event.get("sample_every", 1) or 1)
        key = (*site_key, str(event.get("family", "?")))
        site = report.sites.get(key)
        if site is None:
            site = report.sites[key] = Site()
        site.calls += weight
        if mode == "gpu":
            site.gpu += weight
        else:
            site.numpy += weight
        source = str(event.get("as_numpy_source", "?"))
        site.sources[source] = site.sources.get(source, 0) + weight
        latency = event.get("latency_ms")
        if isinstance(latency, (int, float)):
            site.latency[mode].add(float(latency))
            report.modes[mode].add(float(latency))
        minute = report.minutes.setdefault(int(ts // 60), [0, 0])
        minute[0 if mode == "gpu" else 1] += weight
    if report.events == 0:
        where = f"; {report.skipped} malformed line(s), first at {report.first_bad[0]}:{report.first_bad[1]}" \
            if report.first_bad else ""
        raise KpiError(f"no sam_predict_output event in {', '.join(paths)}{where}")
    for (module, function), latency in report.device_by_site.items():
        for (m, f, _), site in report.sites.items():
            if (m, f) == (module, function):
                site.device = latency
    return report


def to_dict(report: Report) -> Dict[str, Any]:
    sites = []
    for (module, function, family), s in sorted(report.sites.items(), key=lambda kv: -kv[1].calls):
        sites.append({
            "module": module,
            "function": function,
            "family": family,
            "calls": s.calls,
            "gpu_share": round(s.gpu / s.calls, 4) if s.calls else None,
            "numpy": s.numpy,
            "gpu": s.gpu,
            "sources": dict(sorted(s.sources.items())),
            "latency": {mode: lat.summary() for mode, lat in s.latency.items() if lat.n},
            "device": s.device.summary() if s.device.n else None,
        })
    total_gpu = sum(s.gpu for s in report.sites.values())
    total = sum(s.calls for s in report.sites.values())
    return {
        "events": report.events,
        "lines": report.lines,
        "skipped_lines": report.skipped,
        "first_bad_line": list(report.first_bad) if report.first_bad else None,
        "from": report.first_ts,
        "to": report.last_ts,
        "calls": total,
        "gpu_share": round(total_gpu / total, 4) if total else None,
        "latency_by_mode": {mode: lat.summary() for mode, lat in report.modes.items() if lat.n},
        "sites": sites,
        "implicit_copies": {"total": report.implicit_copies,
                            "lines": sorted(report.copy_sites.values(), key=lambda c: c["first_ts"])},
        "per_minute": [
            {"minute": _dt.datetime.fromtimestamp(m * 60, _dt.timezone.utc).strftime("%Y-%m-%dT%H:%MZ"),
             "gpu": g, "numpy": n}
            for m, (g, n) in sorted(report.minutes.items())
        ],
    }


def format_table(data: Dict[str, Any]) -> str:
    def when(ts: Optional[float]) -> str:
        return "?" if ts is None else _dt.datetime.fromtimestamp(ts, _dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%SZ")

    lines = [
        f"{data['events']} events ({data['calls']} calls with sampling) from {when(data['from'])} to "
        f"{when(data['to'])}; GPU share {data['gpu_share']:.1%}",
    ]
    if data["skipped_lines"]:
        path, number, text = data["first_bad_line"]
        lines.append(f"{data['skipped_lines']} line(s) skipped: malformed or truncated, first at {path}:{number} "
                     f"({text!r})")
    for mode, lat in data["latency_by_mode"].items():
        lines.append(f"  {mode:<5} host latency p50 {lat['p50_ms']} ms, p99 {lat['p99_ms']} ms, max {lat['max_ms']} ms")
    lines.append("")
    header = (f"{'call site':<40} {'family':<18} {'calls':>8} {'gpu':>6} {'why numpy / gpu':<28} "
              f"{'p50 ms':>8} {'p99 ms':>8} {'max ms':>8} {'dev p50':>8}")
    lines.append(header)
    for s in data["sites"]:
        lat = s["latency"].get("gpu") or s["latency"].get("numpy") or {}
        dev = (s["device"] or {}).get("p50_ms")
        why = ",".join(f"{k}:{v}" for k, v in s["sources"].items())
        site = f"{s['module']}.{s['function']}"
        lines.append(
            f"{site[:40]:<40} {s['family'][:18]:<18} {s['calls']:>8} {s['gpu_share']:>6.0%} {why[:28]:<28} "
            f"{lat.get('p50_ms', '-')!s:>8} {lat.get('p99_ms', '-')!s:>8} {lat.get('max_ms', '-')!s:>8} "
            f"{'-' if dev is None else dev!s:>8}"
        )
    copies = data.get("implicit_copies") or {}
    if copies.get("lines") or copies.get("total"):
        lines.append("")
        lines.append(f"implicit host copies by the transfer guard: {copies['total']} counted; lines that copy "
                     "(fix them, then run CI with SAMGPU_TRANSFER_GUARD=disallow):")
        for c in copies["lines"]:
            lines.append(f"  {c['site']}: {c['operation']} on a result of {c['origin']}")
    minutes = data["per_minute"]
    if len(minutes) > 1:
        lines.append("")
        lines.append("modes over time (GPU share per minute, first and last 5 minutes):")
        shown = minutes if len(minutes) <= 10 else minutes[:5] + [None] + minutes[-5:]
        for m in shown:
            if m is None:
                lines.append("  ...")
                continue
            total = m["gpu"] + m["numpy"]
            lines.append(f"  {m['minute']}  {m['gpu'] / total:6.1%} of {total}")
    return "\n".join(lines)


def plot(report: Report, data: Dict[str, Any], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (share, dist) = plt.subplots(1, 2, figsize=(12, 4))
    minutes = sorted(report.minutes.items())
    xs = [_dt.datetime.fromtimestamp(m * 60, _dt.timezone.utc) for m, _ in minutes]
    ys = [100.0 * g / (g + n) for _, (g, n) in minutes]
    share.plot(xs, ys, marker="." if len(xs) < 100 else None)
    share.set_ylim(-2, 102)
    share.set_ylabel("calls in GPU mode, %")
    share.set_title("GPU share over time (per minute)")
    share.tick_params(axis="x", labelrotation=30)
    for mode, lat in report.modes.items():
        if not lat.n:
            continue
        centers = [_bucket_value(i) for i, c in enumerate(lat.counts) if c]
        counts = [c for c in lat.counts if c]
        dist.step(centers, counts, where="mid", label=f"{mode} (n={lat.n})")
    dist.set_xscale("log")
    dist.set_xlabel("host latency per call, ms (log scale)")
    dist.set_ylabel("calls")
    dist.set_title("latency by mode")
    dist.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(paths: Sequence[str], since: Optional[str], until: Optional[str], as_json: bool,
         plot_path: Optional[str]) -> int:
    report = build(paths, since, until)
    data = to_dict(report)
    if as_json:
        print(json.dumps(data, indent=1))
    else:
        print(format_table(data))
    if plot_path:
        plot(report, data, plot_path)
        if not as_json:
            print(f"saved {plot_path}")
    return 0
