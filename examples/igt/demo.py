"""Run the OpenIGTLink loop end to end and measure it, frame by frame.

Starts the synthetic ultrasound source (``source.py``, in its own process, so
that it does not share the interpreter lock with the loop; its frames are
rendered and packed before streaming starts), connects the orchestrator to
it, streams ``--frames`` frames at ``--fps``, and reports per mode: frames
sent, answered, dropped, late; end-to-end latency (frame sent -> both replies
received, measured by the source) p50/p99 and p99/p50; and, with ``--out``,
a JSON file with every frame's latency split into the loop's stages and a
latency-over-time plot per mode. Examples::

    python examples/igt/demo.py                      # tiny SAM, CPU or GPU
    python examples/igt/demo.py --model vit_b --size 480x640 --fps 60 --frames 600 \\
        --objects 4 --modes graphs fast --out results/

Modes: ``numpy`` (the legacy numpy code, upstream's path), ``gpu`` (the
shim, fp32), ``bf16`` (plus the bf16 encoder opt-in), ``graphs`` (bf16 plus
graph mode for predict), ``fast`` (the fast encoder, replayed as a CUDA
graph, plus graph mode), ``fast-compile`` (the compiled encoder plus graph
mode; with ``--compile-dir`` its ahead-of-time package).

``--warm-start``: one mode, no warm-up before the clock: the time from this
process's start to its first answered frame, and that frame's latency
against the steady state, is the measurement (a loop restarted beside a
patient). The loop primes itself on ``--prime`` synthetic frames of the
stream's size before it connects, as a deployed loop would.
"""

from __future__ import annotations

import time

T0 = time.perf_counter()  # before the heavy imports: process start is measured from here (and /proc)

import argparse  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import platform  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any, Dict, List, Optional, Tuple  # noqa: E402

import numpy as np  # noqa: E402

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import torch  # noqa: E402
from orchestrator import STAGES, Frame, Orchestrator  # noqa: E402
from source import Phantom  # noqa: E402

import samgpu_shim  # noqa: E402
from samgpu_shim.tools.models import build_sam  # noqa: E402

MODES = ("numpy", "gpu", "bf16", "graphs", "fast", "fast-compile")
SETTINGS = {
    "numpy": {},
    "gpu": {},
    "bf16": {"encoder_precision": "bf16"},
    "graphs": {"encoder_precision": "bf16", "cuda_graphs": True},
    "fast": {"encoder": "fast", "cuda_graphs": True},
    "fast-compile": {"encoder": "fast-compile", "cuda_graphs": True},
}
RESET = {"encoder_precision": None, "encoder": None, "cuda_graphs": None}


def process_age_s() -> float:
    """How long this process had been running at ``T0`` (Linux; else 0)."""
    try:
        with open("/proc/self/stat") as fh:
            start_ticks = int(fh.read().rsplit(")", 1)[1].split()[19])
        with open("/proc/uptime") as fh:
            uptime = float(fh.read().split()[0])
        age = uptime - start_ticks / os.sysconf("SC_CLK_TCK") - (time.perf_counter() - T0)
        return max(0.0, age)
    except (OSError, ValueError, IndexError):
        return 0.0


PROCESS_START = T0 - process_age_s()


def percentile(values: List[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q)) if values else float("nan")


def seed_points(objects: int, size: Tuple[int, int]) -> List[Tuple[float, float]]:
    """K prompts across the frame: the first at the centre (where the phantom's
    structure starts), the others spread on a circle around it."""
    h, w = size
    points = [(w / 2, h / 2)]
    for k in range(1, objects):
        angle = 2 * np.pi * (k - 1) / max(objects - 1, 1)
        points.append((w / 2 + 0.3 * w * float(np.cos(angle)), h / 2 + 0.3 * h * float(np.sin(angle))))
    return points


def start_source(args: argparse.Namespace, size: Tuple[int, int], out: Path) -> Tuple[subprocess.Popen, int]:
    command = [sys.executable, str(HERE / "source.py"), "--port", "0", "--fps", str(args.fps), "--frames",
               str(args.frames), "--size", f"{size[0]}x{size[1]}", "--json", str(out), "--print-port"]
    if args.live_source:
        command.append("--live")
    source = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
    return source, int(source.stdout.readline().split()[-1])


def allocator_counters(device: torch.device) -> Dict[str, int]:
    if device.type != "cuda":
        return {}
    stats = torch.cuda.memory_stats(device)
    keys = ("num_alloc_retries", "num_device_alloc", "num_device_free", "num_ooms")
    return {k: int(stats[k]) for k in keys if k in stats}


def summarise(latencies: Dict[int, float], loop: Orchestrator, args: argparse.Namespace, sent: int,
              wall_s: float) -> Dict[str, Any]:
    values = [latencies[k] for k in sorted(latencies)]
    p50, p99 = percentile(values, 50), percentile(values, 99)
    c = loop.counters
    return {
        "frames_sent": sent,
        "answered": len(values),
        "dropped": c.dropped,
        "late_over_deadline": sum(v > args.deadline_ms for v in values),
        "errors": c.errors,
        "stale": c.stale,
        "e2e_p50_ms": round(p50, 3),
        "e2e_p90_ms": round(percentile(values, 90), 3),
        "e2e_p99_ms": round(p99, 3),
        "e2e_max_ms": round(max(values), 3) if values else None,
        "p99_over_p50": round(p99 / p50, 3) if values and p50 > 0 else None,
        "loop_p50_ms": round(percentile(loop.latencies_ms, 50), 3) if loop.latencies_ms else None,
        "loop_p99_ms": round(percentile(loop.latencies_ms, 99), 3) if loop.latencies_ms else None,
        "answered_per_s": round(len(values) / wall_s, 2) if wall_s > 0 else None,
    }


def frame_rows(latencies: Dict[int, float], loop: Orchestrator, first_sent: Dict[int, float]) -> List[Dict]:
    """Every answered frame: end to end, the loop's share, its stages."""
    timing = {t["frame_id"]: t for t in loop.timings}
    rows = []
    for k in sorted(latencies):
        row: Dict[str, Any] = {"frame_id": k, "e2e_ms": round(latencies[k], 3)}
        t = timing.get(k)
        if t is not None:
            row.update(loop_ms=t["loop_ms"], outside_loop_ms=round(latencies[k] - t["loop_ms"], 3),
                       stages_ms=t["stages_ms"], device_ms=t["device_ms"], gc_ms=t["gc_ms"])
        rows.append(row)
    return rows


def tail_causes(frames: List[Dict[str, Any]]) -> Dict[str, Any]:
    """Which stages grow in the tail: for the frames above the 95th percentile
    of end-to-end latency, each stage's mean minus its median over all frames."""
    timed = [f for f in frames if "stages_ms" in f]
    if len(timed) < 20:
        return {}
    cut = percentile([f["e2e_ms"] for f in timed], 95)
    tail = [f for f in timed if f["e2e_ms"] >= cut]
    parts: Dict[str, List[float]] = {}
    for f in timed:
        for name, value in list(f["stages_ms"].items()) + [("outside_loop", f["outside_loop_ms"]),
                                                            ("gc", f["gc_ms"])]:
            parts.setdefault(name, []).append(value)
        for name, value in f["device_ms"].items():
            parts.setdefault(f"device_{name}", []).append(value)
    excess = {}
    for name, values in parts.items():
        in_tail = [v for f, v in zip(timed, values) if f["e2e_ms"] >= cut] if len(values) == len(timed) else []
        if in_tail:
            excess[name] = round(float(np.mean(in_tail)) - float(np.median(values)), 3)
    ranked = sorted(excess.items(), key=lambda kv: -kv[1])
    return {"tail_from_ms": round(cut, 3), "tail_frames": len(tail), "excess_ms": dict(ranked)}


def plot_row(path: Path, title: str, frames: List[Dict[str, Any]], dropped: List[int], deadline_ms: float) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(10, 3.6), dpi=110)
    ids = [f["frame_id"] for f in frames]
    ax.plot(ids, [f["e2e_ms"] for f in frames], ".", ms=3, label="end to end")
    if frames and "loop_ms" in frames[0]:
        ax.plot(ids, [f.get("loop_ms", np.nan) for f in frames], ".", ms=2, alpha=0.6, label="in the loop")
    values = [f["e2e_ms"] for f in frames]
    if values:
        for q, style in ((50, ":"), (99, "--")):
            ax.axhline(percentile(values, q), color="k", ls=style, lw=0.8, label=f"p{q} {percentile(values, q):.1f} ms")
    ax.axhline(deadline_ms, color="r", lw=0.8, label=f"deadline {deadline_ms:g} ms")
    if dropped:
        ax.plot(dropped, [0] * len(dropped), "|", color="r", ms=8, label=f"dropped ({len(dropped)})")
    ax.set_xlabel("frame")
    ax.set_ylabel("ms")
    ax.set_ylim(bottom=-2)
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7, ncol=6, loc="upper center", bbox_to_anchor=(0.5, -0.2), frameon=False)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def prime(loop: Orchestrator, size: Tuple[int, int], count: int) -> None:
    """Frames of the stream's size before the clock: lazy CUDA init, kernel
    choices, graph captures, compiled encoders happen here."""
    h, w = size
    warm = Phantom(h, w, seed=1)
    for k in range(count):
        loop.process(Frame(warm.frame(k)[0], -1, 0.0, time.perf_counter(), 0))
    if loop.device.type == "cuda":
        torch.cuda.synchronize(loop.device)
    loop._reset_tracking()


def run_mode(mode: str, objects: int, predictor: Any, args: argparse.Namespace, size: Tuple[int, int],
             source: Optional[Tuple[subprocess.Popen, int, Path]] = None) -> Dict[str, Any]:
    samgpu_shim.configure(**{**RESET, **SETTINGS[mode]})
    if source is None:
        out = Path(tempfile.mkdtemp()) / "source.json"
        process, port = start_source(args, size, out)
    else:
        process, port, out = source
    seeds = seed_points(objects, size)
    loop = Orchestrator(predictor, port=port, deadline_ms=args.deadline_ms, legacy=(mode == "numpy"),
                        instrument=True, gc_mode=args.gc, switch_interval_ms=args.switch_interval_ms,
                        **({"seed_point": seeds[0]} if objects == 1 and not args.batched_one
                           else {"seed_points": seeds}))
    started_prime = time.perf_counter()
    prime(loop, size, args.prime)
    ready = time.perf_counter()
    before = allocator_counters(loop.device)
    loop.start()
    try:
        process.wait(timeout=args.frames / args.fps + 180)
    finally:
        loop.stop()
        samgpu_shim.configure(**RESET)
    data = json.loads(out.read_text())
    latencies = {int(k): v for k, v in data["latency_ms"].items()}
    sent = args.frames - len(data["unsent"])
    row: Dict[str, Any] = {"mode": mode, "objects": objects, "fps": args.fps, "frames": args.frames}
    row.update(summarise(latencies, loop, args, sent, args.frames / args.fps))
    frames = frame_rows(latencies, loop, {})
    row["prime_s"] = round(ready - started_prime, 3)
    row["allocator"] = {k: v - before.get(k, 0) for k, v in allocator_counters(loop.device).items()}
    pauses = [(e - s) * 1e3 for s, e, _ in loop.gc_pauses]
    row["gc"] = {"mode": args.gc, "collections": len(pauses), "total_ms": round(sum(pauses), 3),
                 "max_ms": round(max(pauses), 3) if pauses else 0.0,
                 "over_1ms": sum(p > 1 for p in pauses)}
    row["tail"] = tail_causes(frames)
    stage_names = ["receive", "queue", *STAGES, "reply_pack", "send"]
    row["stage_p50_ms"] = {n: round(percentile([f["stages_ms"][n] for f in frames if n in f.get("stages_ms", {})],
                                               50), 3) for n in stage_names}
    row["stage_p99_ms"] = {n: round(percentile([f["stages_ms"][n] for f in frames if n in f.get("stages_ms", {})],
                                               99), 3) for n in stage_names}
    row["dropped_ids"] = list(loop.counters.dropped_ids)
    row["frames_detail"] = frames
    if args.warm_start:
        first = min(latencies) if latencies else None
        steady = [latencies[k] for k in sorted(latencies)[10:]]
        first_answer = loop.timings[0]["arrived"] + loop.timings[0]["loop_ms"] / 1e3 if loop.timings else None
        row["warm_start"] = {
            "process_to_ready_s": round(ready - PROCESS_START, 3),
            "process_to_first_answer_s": round(first_answer - PROCESS_START, 3) if first_answer else None,
            "first_frame_ms": round(latencies[first], 3) if first is not None else None,
            "first_10_ms": [round(latencies[k], 3) for k in sorted(latencies)[:10]],
            "steady_p50_ms": round(percentile(steady, 50), 3) if steady else None,
            "first_at_steady": bool(first is not None and steady and latencies[first] <= 1.3 * percentile(steady, 50)),
        }
    return row


def build_predictor(model: str, size: Tuple[int, int], device: torch.device) -> Any:
    if model.startswith("hiera_"):  # SAM 2.1
        from sam2.sam2_image_predictor import SAM2ImagePredictor

        from samgpu_shim.tools.models import build_sam2

        return SAM2ImagePredictor(build_sam2(model, device=device, init_on_device=True))
    from segment_anything import SamPredictor

    # tiny runs at the frame's own size on a CPU; the real models at 1024.
    image_size = max(size) if model == "tiny" else 1024
    return SamPredictor(build_sam(model, device=device, image_size=image_size, init_on_device=True))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="tiny",
                        help="tiny (default), vit_b, vit_l, vit_h, or SAM 2.1 hiera_t ... hiera_l; random weights")
    parser.add_argument("--size", default="192x256", help="frame HEIGHTxWIDTH (default 192x256)")
    parser.add_argument("--fps", "--rate", type=float, default=30.0, help="frames per second sent")
    parser.add_argument("--frames", type=int, default=300)
    parser.add_argument("--objects", type=int, nargs="+", default=[1],
                        help="structures followed per frame, one prompt each (several values: one row each)")
    parser.add_argument("--batched-one", action="store_true",
                        help="with --objects 1, take the batched path anyway (as for several structures)")
    parser.add_argument("--deadline-ms", type=float, default=33.0)
    parser.add_argument("--modes", nargs="+", default=["numpy", "gpu"], choices=MODES)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--gc", default="freeze", choices=("freeze", "default"),
                        help="freeze (default): gc.freeze() after warm-up, automatic collection off in the loop, "
                             "young generations collected between frames; default: Python's own")
    parser.add_argument("--switch-interval-ms", type=float, default=None,
                        help="sys.setswitchinterval while the loop runs (Python's default is 5 ms)")
    parser.add_argument("--prime", type=int, default=5, help="synthetic frames before the clock (default 5)")
    parser.add_argument("--warm-start", action="store_true",
                        help="measure process start -> first answered frame (one mode)")
    parser.add_argument("--compile-dir", help="fast-compile: ahead-of-time encoder packages here "
                                              "(built when missing or stale; sets SAMGPU_COMPILE_DIR)")
    parser.add_argument("--build-only", action="store_true",
                        help="with --compile-dir: build (or check) the encoder package for this model and size, "
                             "then exit")
    parser.add_argument("--live-source", action="store_true", help="the source renders frames as it sends them")
    parser.add_argument("--json", help="save the summary table as JSON")
    parser.add_argument("--out", help="directory for the full JSON (every frame) and one plot per mode")
    parser.add_argument("--tag", default="", help="prefix of the files written under --out")
    args = parser.parse_args()
    if min(args.objects) < 1:
        parser.error("--objects must be at least 1")
    if args.warm_start and (len(args.modes) != 1 or len(args.objects) != 1):
        parser.error("--warm-start measures one mode and one --objects value")
    size = tuple(int(v) for v in args.size.lower().split("x"))
    device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available() else
                          ("cpu" if args.device == "auto" else args.device))
    if args.compile_dir:
        samgpu_shim.configure(compile_dir=args.compile_dir)
    source = None
    if args.warm_start:  # the source renders its frames while the model is built
        out = Path(tempfile.mkdtemp()) / "source.json"
        process, port = start_source(args, size, out)
        source = (process, port, out)
    predictor = build_predictor(args.model, size, device)
    if args.build_only:
        from samgpu_shim.gpu import aot

        samgpu_shim.configure(encoder="fast-compile")
        started = time.perf_counter()
        report = aot.prepare(predictor, size)
        print(json.dumps({**report, "seconds": round(time.perf_counter() - started, 1)}))
        os._exit(0)
    rows = [run_mode(mode, k, predictor, args, size, source) for k in args.objects for mode in args.modes]
    env = {"device": str(device), "device_name": torch.cuda.get_device_name(device) if device.type == "cuda"
           else platform.processor() or platform.machine(), "torch": torch.__version__,
           "cuda": torch.version.cuda, "python": platform.python_version(), "shim": samgpu_shim.__version__,
           "model": args.model, "frame": list(size), "fps": args.fps, "frames": args.frames,
           "objects": args.objects, "deadline_ms": args.deadline_ms, "gc": args.gc,
           "switch_interval_ms": args.switch_interval_ms,
           "alloc_conf": os.environ.get("PYTORCH_CUDA_ALLOC_CONF", "")}
    print(f"{env['model']} on {env['device_name']}, frames {size[0]}x{size[1]} at {args.fps:g}/s, "
          f"deadline {args.deadline_ms:g} ms")
    print(f"{'mode':<12} {'K':>2} {'sent':>5} {'answered':>8} {'dropped':>7} {'late':>5} {'p50 ms':>8} {'p99 ms':>8} "
          f"{'p99/p50':>7}  tail grows in")
    for r in rows:
        causes = ", ".join(f"{k} +{v:.1f}" for k, v in list(r["tail"].get("excess_ms", {}).items())[:3])
        print(f"{r['mode']:<12} {r['objects']:>2} {r['frames_sent']:>5} {r['answered']:>8} {r['dropped']:>7} "
              f"{r['late_over_deadline']:>5} {r['e2e_p50_ms']:>8.2f} {r['e2e_p99_ms']:>8.2f} "
              f"{r['p99_over_p50'] or float('nan'):>7.2f}  {causes}")
        if "warm_start" in r:
            print(f"  warm start: {json.dumps(r['warm_start'])}")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        with open(args.json, "w") as fh:
            json.dump({"environment": env, "rows": [{k: v for k, v in r.items() if k != "frames_detail"}
                                                    for r in rows]}, fh, indent=1)
        print(f"saved {args.json}")
    if args.out:
        directory = Path(args.out)
        directory.mkdir(parents=True, exist_ok=True)
        stem = f"{args.tag}{args.model}-{args.fps:g}fps"
        with open(directory / f"{stem}.json", "w") as fh:
            json.dump({"environment": env, "rows": rows}, fh)
        for r in rows:
            title = (f"{args.model}, {size[0]}x{size[1]} at {args.fps:g}/s, {r['objects']} structure(s), {r['mode']}: "
                     f"{r['answered']}/{r['frames_sent']} answered, p50 {r['e2e_p50_ms']:.1f} ms, "
                     f"p99 {r['e2e_p99_ms']:.1f} ms")
            plot_row(directory / f"{stem}-{r['objects']}obj-{r['mode']}.png", title, r["frames_detail"],
                     r["dropped_ids"], args.deadline_ms)
        print(f"saved {directory / stem}.json and {len(rows)} plot(s)")
    sys.stdout.flush()
    os._exit(0)  # daemon threads of the last loop: leave without waiting for them


if __name__ == "__main__":
    main()
