"""A long run of the OpenIGTLink loop: is it flat, and is every frame accounted for?

The frame source (``source.py``) runs in its own process and is restarted
every ``--restart-every`` seconds (it exits, a new one listens on the same
port, the loop reconnects). The prompts change shape every ``--shape-every``
frames (1 to 8 points, with or without a box and ``mask_input``: 20
signatures, more than graph mode's cache of 8, so graphs are evicted and
captured again all along). Every ``--sample-s`` seconds the run records
device memory (allocated, reserved), host RSS, the loop's latency (p50, p99
over the interval), the frames' fates so far and graph mode's cache, and
rewrites ``--out`` (JSON, written whole then renamed), so that a run started
detached (``setsid``) can be read while it runs and collected after it ends::

    setsid python examples/igt/soak.py --model vit_b --size 480x640 --fps 30 --minutes 16 \\
        --encoder bf16 --graphs --out /tmp/soak/soak.json > /tmp/soak/soak.log 2>&1 < /dev/null &

At the end ``--out`` holds ``"status": "done"``, every sample, and a summary:
slopes per hour (least squares over the samples after the first
``--warmup-s`` seconds) of device memory, RSS and latency; the count of each
fate (answered on time or late, dropped, error, stale, unaccounted: sent but
none of these); graph cache size at most; and ``checks``, the conditions
that make the run a pass.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Dict, List, Optional

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import torch  # noqa: E402
from orchestrator import Frame, Orchestrator  # noqa: E402

import samgpu_shim  # noqa: E402

POINTS = (1, 2, 3, 5, 8)  # prompt points per signature (the tracked centroid, then negatives)


class SoakLoop(Orchestrator):
    """The loop with prompts whose shapes change every ``shape_every`` frames."""

    def __init__(self, *args: Any, shape_every: int = 150, size: tuple = (480, 640), **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.shape_every = shape_every
        h, w = size
        corners = torch.tensor([[8, 8], [w - 8, 8], [8, h - 8], [w - 8, h - 8], [w / 2, 8], [8, h / 2],
                                [w - 8, h / 2]], dtype=torch.float64)
        self._negatives = corners.to(self.device)
        self._labels = {n: torch.tensor([1] + [0] * (n - 1), dtype=torch.int, device=self.device) for n in POINTS}
        self._half_box = torch.tensor([-60.0, -60.0, 60.0, 60.0], dtype=torch.float64, device=self.device)
        self.signatures = [(n, box, mask) for n in POINTS for box in (False, True) for mask in (True, False)]
        self.used: Dict[tuple, int] = {}  # signature -> frames prompted with it

    def signature(self, frame_id: int) -> tuple:
        return self.signatures[(max(frame_id, 0) // self.shape_every) % len(self.signatures)]

    def prompts(self, frame: Frame) -> Dict[str, Any]:
        n, box, mask = self.signature(frame.frame_id)
        self.used[(n, box, mask)] = self.used.get((n, box, mask), 0) + 1
        point = torch.as_tensor(self._point, device=self.device, dtype=torch.float64)
        out: Dict[str, Any] = {
            "point_coords": torch.cat([point, self._negatives[: n - 1]]),
            "point_labels": self._labels[n],
            "mask_input": self._logits if mask else None,
        }
        if box:  # around the last centroid, on the device
            out["box"] = point[0].repeat(2) + self._half_box
        return out


def _rss_mb() -> float:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def _slope_per_hour(t: List[float], y: List[float]) -> Optional[float]:
    points = [(a, b) for a, b in zip(t, y) if b is not None and np.isfinite(b)]
    if len(points) < 3:
        return None
    x, v = np.array(points).T
    return round(float(np.polyfit(x / 3600.0, v, 1)[0]), 3)


def _percentile(values: List[float], q: float) -> Optional[float]:
    return round(float(np.percentile(values, q)), 3) if values else None


def _by_minute(per_frame: Dict[int, float], fps: float) -> List[Dict[str, Any]]:
    """p50 and p99 of a per-frame value, minute by minute of the schedule."""
    minutes: Dict[int, List[float]] = {}
    for k, v in per_frame.items():
        minutes.setdefault(int(k / (fps * 60)), []).append(v)
    return [{"minute": m, "frames": len(v), "p50": _percentile(v, 50), "p99": _percentile(v, 99)}
            for m, v in sorted(minutes.items())]


def _write(path: Path, data: Dict[str, Any]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=1))
    os.replace(tmp, path)


def stage_window(timings: List[Dict[str, Any]], shape_every: int) -> Dict[str, Any]:
    """One sample's share of the loop's stage timings (``instrument``).

    Frames next to a change of prompt shape (its first two frames: a capture
    or a replay of another graph) are kept apart: ``steady_*`` and the stage
    p50s are over the other frames, ``switch_*`` over those."""
    steady = [t for t in timings if t["frame_id"] % shape_every >= 2]
    switch = [t for t in timings if t["frame_id"] % shape_every < 2]
    out: Dict[str, Any] = {
        "steady_loop_p50_ms": _percentile([t["loop_ms"] for t in steady], 50),
        "steady_loop_p99_ms": _percentile([t["loop_ms"] for t in steady], 99),
        "switch_frames": len(switch),
        "switch_loop_max_ms": round(max(t["loop_ms"] for t in switch), 3) if switch else None,
        "gc_ms": round(sum(t["gc_ms"] for t in timings), 3),
    }
    for key, name in (("stages_ms", "stages"), ("device_ms", "device")):
        values: Dict[str, List[float]] = {}
        for t in steady:
            for stage, ms in t[key].items():
                values.setdefault(stage, []).append(ms)
        ordered = sorted(values.items())
        out[name + "_p50_ms"] = {n: _percentile(v, 50) for n, v in ordered}
        out[name + "_p99_ms"] = {n: _percentile(v, 99) for n, v in ordered}
    return out


GPU_FIELDS = ("timestamp", "clocks.sm", "clocks.mem", "temperature.gpu", "power.draw", "utilization.gpu")


def gpu_log_path(out: Path) -> Path:
    return out.with_name(out.stem + "-gpu.csv")


def start_gpu_log(out: Path) -> Optional[subprocess.Popen]:
    """nvidia-smi, a process apart, writing clocks, temperature, power and use every 5 s."""
    if shutil.which("nvidia-smi") is None:
        return None
    with open(gpu_log_path(out), "w") as fh:
        return subprocess.Popen(["nvidia-smi", "--query-gpu=" + ",".join(GPU_FIELDS), "--format=csv,noheader,nounits",
                                 "-l", "5"], stdout=fh, stderr=subprocess.DEVNULL)


def read_gpu_log(path: Path) -> Dict[str, Any]:
    """Range of each figure over the run (the whole log; first and last minute apart)."""
    rows = []
    try:
        lines = path.read_text().splitlines()
    except OSError:
        return {}
    for line in lines:
        parts = [p.strip() for p in line.split(",")]
        if len(parts) != len(GPU_FIELDS):
            continue
        try:
            rows.append([float(v) for v in parts[1:]])
        except ValueError:
            continue
    if not rows:
        return {}
    out: Dict[str, Any] = {"readings": len(rows)}
    for i, name in enumerate(GPU_FIELDS[1:]):
        values = [r[i] for r in rows]
        head, tail = values[: max(1, len(values) // 16)], values[-max(1, len(values) // 16):]
        out[name] = {"min": min(values), "median": float(np.median(values)), "max": max(values),
                     "first_sixteenth_median": float(np.median(head)), "last_sixteenth_median": float(np.median(tail))}
    return out


def build_predictor(model: str, device: torch.device, size: tuple) -> Any:
    if model.startswith("hiera_"):
        from sam2.sam2_image_predictor import SAM2ImagePredictor

        from samgpu_shim.tools.models import build_sam2

        return SAM2ImagePredictor(build_sam2(model, device=device))
    from segment_anything import SamPredictor

    from samgpu_shim.tools.models import build_sam

    image_size = 16 * ((max(size) + 15) // 16) if model == "tiny" else 1024
    return SamPredictor(build_sam(model, device=device, image_size=image_size))


class Sources:
    """source.py processes, one segment at a time, on one port."""

    def __init__(self, args: argparse.Namespace, workdir: Path) -> None:
        self.args, self.workdir = args, workdir
        self.port = 0
        self.segments: List[Dict[str, Any]] = []

    def start(self, first: int, frames: int) -> subprocess.Popen:
        path = self.workdir / f"segment-{len(self.segments):03d}.json"
        command = [sys.executable, str(HERE / "source.py"), "--port", str(self.port), "--fps", str(self.args.fps),
                   "--first", str(first), "--frames", str(frames), "--size", self.args.size, "--json", str(path),
                   "--wait-s", str(self.args.wait_s), "--print-port",
                   # Rendered by a process of its own, a few frames ahead: packed
                   # ahead, a 180 s segment of 480x640 would hold 1.7 GB and keep
                   # the stream silent for over a minute after every restart;
                   # rendered as sent (--live, run 38), the source's reply reader
                   # waits behind each render and CRC.
                   "--live" if self.args.source == "live" else "--render-process"]
        process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
        self.port = int(process.stdout.readline().split()[-1])
        self.segments.append({"first": first, "frames": frames, "json": str(path), "started": time.time()})
        return process

    def results(self) -> Dict[str, Any]:
        sent: List[int] = []
        latency: Dict[int, float] = {}
        lag: Dict[int, float] = {}
        unsent: List[int] = []
        for segment in self.segments:
            try:
                data = json.loads(Path(segment["json"]).read_text())
            except (OSError, ValueError):
                segment["lost"] = True  # the process died without writing: its frames stay unaccounted
                sent.extend(range(segment["first"], segment["first"] + segment["frames"]))
                continue
            sent.extend(data["sent"])
            unsent.extend(data["unsent"])
            latency.update({int(k): v for k, v in data["latency_ms"].items()})
            lag.update({int(k): v for k, v in data.get("send_lag_ms", {}).items()})
        return {"sent": sent, "latency_ms": latency, "unsent": unsent, "send_lag_ms": lag}


def run(args: argparse.Namespace) -> Dict[str, Any]:
    size = tuple(int(v) for v in args.size.lower().split("x"))
    device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available() else
                          ("cpu" if args.device == "auto" else args.device))
    samgpu_shim.configure(encoder_precision=args.encoder if args.encoder in ("tf32", "bf16") else None,
                          cuda_graphs=True if args.graphs else None)
    if args.encoder in ("fast", "fast-compile"):
        samgpu_shim.configure(encoder=args.encoder)
    if args.graph_cache_size is not None:
        samgpu_shim.configure(graph_cache_size=args.graph_cache_size)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    workdir = Path(tempfile.mkdtemp(prefix="soak-", dir=out.parent))
    predictor = build_predictor(args.model, device, size)
    sources = Sources(args, workdir)
    total_frames = int(args.minutes * 60 * args.fps)
    per_segment = max(1, int(args.restart_every * args.fps))
    process = sources.start(0, min(per_segment, total_frames))
    h, w = size
    loop = SoakLoop(predictor, port=sources.port, seed_point=(w / 2, h / 2), deadline_ms=args.deadline_ms,
                    shape_every=args.shape_every, size=size, gc_mode=args.gc, instrument=args.instrument)
    # Warm-up on frames of the stream's size (lazy init, cuDNN choices, the first captures).
    from source import Phantom

    warm = Phantom(h, w, seed=1)
    for k in range(5):
        loop.process(Frame(warm.frame(k)[0], -1, 0.0, time.perf_counter(), 0))
    loop._reset_tracking()
    environment = {
        "model": args.model, "frame": list(size), "fps": args.fps, "minutes": args.minutes,
        "restart_every_s": args.restart_every, "shape_every_frames": args.shape_every,
        "signatures": len(loop.signatures), "encoder": args.encoder, "graphs": bool(args.graphs),
        "graph_cache_size": samgpu_shim.graph_stats()["cache_size_per_predictor"], "deadline_ms": args.deadline_ms,
        "gc": args.gc, "instrument": bool(args.instrument), "source": args.source,
        "device": str(device), "device_name": torch.cuda.get_device_name(device) if device.type == "cuda"
        else platform.machine(), "torch": torch.__version__, "python": platform.python_version(),
        "started": time.strftime("%Y-%m-%d %H:%M:%S"),
    }
    samples: List[Dict[str, Any]] = []
    started = time.perf_counter()
    stop = threading.Event()
    done = threading.Event()

    def sampler() -> None:
        seen = 0
        while True:
            finished = stop.wait(args.sample_s)
            c = loop.counters
            window = loop.latencies_ms[seen:]
            seen += len(window)
            stats = samgpu_shim.graph_stats()
            sample = {
                "t_s": round(time.perf_counter() - started, 2),
                "received": c.received, "answered": c.processed, "dropped": c.dropped, "late": c.late,
                "errors": c.errors, "stale": c.stale, "reconnects": c.reconnects,
                "loop_p50_ms": _percentile(window, 50), "loop_p99_ms": _percentile(window, 99),
                "rss_mb": round(_rss_mb(), 1),
                "cached_graphs": stats["cached_graphs"], "captures": stats["captures"],
                "evictions": stats["evictions"], "graph_fallbacks": stats["fallbacks"],
            }
            if device.type == "cuda":
                sample["cuda_allocated_mb"] = round(torch.cuda.memory_allocated(device) / 2**20, 2)
                sample["cuda_reserved_mb"] = round(torch.cuda.memory_reserved(device) / 2**20, 2)
            sample["load_1min"] = os.getloadavg()[0]
            if args.instrument:
                # Taken out of the loop's list (it would otherwise grow for the whole run).
                taken = len(loop.timings)
                timings = loop.timings[:taken]
                del loop.timings[:taken]
                sample.update(stage_window(timings, args.shape_every))
            samples.append(sample)
            _write(out, {"status": "running", "environment": environment, "samples": samples})
            print(json.dumps(sample), flush=True)
            if finished:
                done.set()
                return

    gpu_log = start_gpu_log(out) if device.type == "cuda" and not args.no_gpu_log else None
    loop.start()
    threading.Thread(target=sampler, daemon=True, name="soak-sampler").start()
    sent_so_far = min(per_segment, total_frames)
    try:
        while True:
            try:
                process.wait(timeout=args.restart_every + args.wait_s + 120)
            except subprocess.TimeoutExpired:  # a source that hangs: its frames stay unaccounted
                process.kill()
                process.wait()
            if sent_so_far >= total_frames:
                break
            count = min(per_segment, total_frames - sent_so_far)
            process = sources.start(sent_so_far, count)  # the restart: same port, new process
            sent_so_far += count
    finally:
        if process.poll() is None:
            process.kill()
        stop.set()
        done.wait(args.sample_s + 30)
        loop.stop()
        if gpu_log is not None:
            gpu_log.terminate()
            gpu_log.wait()
    wall = time.perf_counter() - started
    result = summarise(args, environment, samples, loop, sources, wall)
    if gpu_log is not None:
        result["summary"]["gpu"] = read_gpu_log(gpu_log_path(out))
    return result


def summarise(args: argparse.Namespace, environment: Dict[str, Any], samples: List[Dict[str, Any]],
              loop: Orchestrator, sources: Sources, wall: float) -> Dict[str, Any]:
    results = sources.results()
    c = loop.counters
    sent = set(results["sent"])
    answered = set(results["latency_ms"])
    fates = {"answered": answered, "dropped": set(c.dropped_ids), "error": set(c.error_ids),
             "stale": set(c.stale_ids)}
    accounted = set().union(*fates.values())
    overlaps = sum(len(a & b) for i, a in enumerate(fates.values()) for b in list(fates.values())[i + 1:])
    latencies = list(results["latency_ms"].values())
    lags = list(results["send_lag_ms"].values())
    late = sum(v > args.deadline_ms for v in latencies)
    steady = [s for s in samples if s["t_s"] >= args.warmup_s] or samples
    t = [s["t_s"] for s in steady]
    slopes = {key + "_per_hour": _slope_per_hour(t, [s.get(key) for s in steady])
              for key in ("cuda_allocated_mb", "cuda_reserved_mb", "rss_mb", "loop_p50_ms", "loop_p99_ms",
                          "steady_loop_p50_ms", "steady_loop_p99_ms")}
    # Each stage's p50 (frames away from a prompt shape change), host and device clocks.
    for group in ("stages_p50_ms", "device_p50_ms"):
        names = sorted({n for s in steady for n in s.get(group, {})})
        for n in names:
            slopes[f"{group[:-7]}_{n}_p50_ms_per_hour"] = _slope_per_hour(t, [s.get(group, {}).get(n) for s in steady])
    cache_max = max((s["cached_graphs"] for s in samples), default=0)
    summary = {
        "wall_s": round(wall, 1), "frames_sent": len(sent), "unsent": len(results["unsent"]),
        "answered": len(answered), "answered_on_time": len(answered) - late, "answered_late": late,
        "dropped": len(fates["dropped"] & sent), "errors": len(fates["error"]), "stale": len(fates["stale"]),
        "unaccounted": len(sent - accounted), "counted_twice": overlaps,
        "errors_by_type": dict(c.errors_by_type), "reconnects": c.reconnects,
        "source_restarts": len(sources.segments) - 1,
        "bad_messages": c.bad_messages, "framing_lost": c.framing_lost,
        "e2e_p50_ms": _percentile(latencies, 50), "e2e_p99_ms": _percentile(latencies, 99),
        "e2e_max_ms": round(max(latencies), 3) if latencies else None,
        # Each minute's end-to-end p50/p99 (frames by id: the schedule's minute),
        # and how late the source itself sent (its own scheduling, not the loop).
        "e2e_by_minute": _by_minute(results["latency_ms"], args.fps),
        "source_send_lag_ms": {"p50": _percentile(lags, 50), "p99": _percentile(lags, 99),
                               "max": max(lags, default=None)},
        "source_send_lag_by_minute": _by_minute(results["send_lag_ms"], args.fps),
        "answered_per_s": round(len(answered) / wall, 2) if wall else None,
        "signatures_used": len(getattr(loop, "used", {})),
        "graph_cache_max": cache_max, "graph_captures": samples[-1]["captures"] if samples else 0,
        "graph_evictions": samples[-1]["evictions"] if samples else 0,
        "slopes": slopes, "steady_from_s": args.warmup_s,
        "first": {k: steady[0].get(k) for k in ("cuda_allocated_mb", "cuda_reserved_mb", "rss_mb")} if steady else {},
        "last": {k: steady[-1].get(k) for k in ("cuda_allocated_mb", "cuda_reserved_mb", "rss_mb")} if steady else {},
    }
    summary["checks"] = {
        "every_frame_accounted_for": summary["unaccounted"] == 0 and overlaps == 0,
        "graph_cache_within_bound": cache_max <= environment["graph_cache_size"],
        "ran_the_time_asked": wall >= args.minutes * 60 * 0.95,
    }
    return {"status": "done", "environment": environment, "summary": summary, "samples": samples,
            "segments": sources.segments}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="tiny", help="tiny (default), vit_b, vit_l, vit_h, hiera_t ...")
    parser.add_argument("--size", default="192x256", help="frame HEIGHTxWIDTH")
    parser.add_argument("--fps", type=float, default=30.0)
    parser.add_argument("--minutes", type=float, default=16.0)
    parser.add_argument("--restart-every", type=float, default=180.0, help="seconds between source restarts")
    parser.add_argument("--shape-every", type=int, default=150, help="frames between prompt shape changes")
    parser.add_argument("--sample-s", type=float, default=10.0)
    parser.add_argument("--warmup-s", type=float, default=60.0, help="samples before this are left out of slopes")
    parser.add_argument("--wait-s", type=float, default=2.0, help="each source waits this long for last answers")
    parser.add_argument("--deadline-ms", type=float, default=33.0)
    parser.add_argument("--encoder", default="fp32", choices=("fp32", "tf32", "bf16", "fast", "fast-compile"))
    parser.add_argument("--graphs", action="store_true", help="graph mode for predict")
    parser.add_argument("--graph-cache-size", type=int, help="graphs kept per predictor (default: the shim's, 8)")
    parser.add_argument("--gc", default="freeze", choices=("freeze", "default"),
                        help="the loop's collector policy (the demo's default, freeze; default: Python's own)")
    parser.add_argument("--instrument", action="store_true",
                        help="each sample gets the stages' p50/p99 (host and CUDA clocks), frames next to a "
                             "prompt shape change apart")
    parser.add_argument("--source", default="process", choices=("process", "live"),
                        help="the source renders frames in a process of its own (default) or as it sends them")
    parser.add_argument("--no-gpu-log", action="store_true", help="no nvidia-smi log beside --out")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--out", required=True, help="progress and final JSON (rewritten every sample)")
    args = parser.parse_args()
    result = run(args)
    _write(Path(args.out), result)
    s = result["summary"]
    print(json.dumps({k: s[k] for k in ("frames_sent", "answered", "answered_late", "dropped", "errors", "stale",
                                        "unaccounted", "graph_cache_max", "slopes", "checks")}), flush=True)
    os._exit(0 if all(s["checks"].values()) else 1)  # daemon threads of the loop: do not wait for them


if __name__ == "__main__":
    main()
