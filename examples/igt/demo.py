"""Run the OpenIGTLink loop end to end and measure it.

Starts the synthetic ultrasound source (``source.py``, in its own process by
default, so that it does not share the interpreter lock with the loop),
connects the orchestrator to it, streams ``--frames`` frames at ``--fps``,
and prints, per mode: frames sent, answered, dropped, late; end-to-end latency
(frame sent -> both replies received, measured by the source) p50/p99; and
the rate achieved. Examples::

    python examples/igt/demo.py                      # tiny SAM, CPU or GPU
    python examples/igt/demo.py --model vit_b --size 480x640 --fps 30 --modes numpy gpu bf16 graphs

Modes: ``numpy`` (the legacy numpy code, upstream's path), ``gpu`` (the
shim, fp32), ``bf16`` (plus the bf16 encoder opt-in), ``graphs`` (bf16 plus
graph mode for predict).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, List

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import torch  # noqa: E402
from orchestrator import Orchestrator  # noqa: E402

import samgpu_shim  # noqa: E402
from samgpu_shim.tools.models import build_sam  # noqa: E402

MODES = ("numpy", "gpu", "bf16", "graphs")


def percentile(values: List[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q)) if values else float("nan")


def run_mode(mode: str, predictor: Any, args: argparse.Namespace, size: tuple) -> Dict[str, Any]:
    samgpu_shim.configure(
        encoder_precision="bf16" if mode in ("bf16", "graphs") else None,
        cuda_graphs=True if mode == "graphs" else None,
    )
    out = Path(tempfile.mkdtemp()) / "source.json"
    source = subprocess.Popen(
        [sys.executable, str(HERE / "source.py"), "--port", "0", "--fps", str(args.fps), "--frames",
         str(args.frames), "--size", f"{size[0]}x{size[1]}", "--json", str(out), "--print-port"],
        stdout=subprocess.PIPE, text=True,
    )
    port = int(source.stdout.readline().split()[-1])
    h, w = size
    loop = Orchestrator(predictor, port=port, seed_point=(w / 2, h / 2), deadline_ms=args.deadline_ms,
                        legacy=(mode == "numpy"))
    # Warm-up on a frame of the stream's size: lazy CUDA init, cuDNN choices,
    # graph capture happen before the clock starts.
    from orchestrator import Frame
    from source import Phantom

    warm = Phantom(h, w, seed=1)
    for k in range(5):
        loop.process(Frame(warm.frame(k)[0], -1, 0.0, time.perf_counter(), 0))
    loop._reset_tracking()
    started = time.perf_counter()
    loop.start()
    try:
        source.wait(timeout=args.frames / args.fps + 120)
    finally:
        loop.stop()
        samgpu_shim.configure(encoder_precision=None, cuda_graphs=None)
    wall = time.perf_counter() - started
    data = json.loads(out.read_text())
    latencies = list(data["latency_ms"].values())
    c = loop.counters
    return {
        "mode": mode,
        "frames_sent": args.frames - len(data["unsent"]),
        "answered": len(latencies),
        "dropped": c.dropped,
        "late_over_deadline": sum(v > args.deadline_ms for v in latencies),
        "errors": c.errors,
        "e2e_p50_ms": round(percentile(latencies, 50), 3),
        "e2e_p99_ms": round(percentile(latencies, 99), 3),
        "e2e_max_ms": round(max(latencies), 3) if latencies else None,
        "loop_p50_ms": round(statistics.median(loop.latencies_ms), 3) if loop.latencies_ms else None,
        "answered_per_s": round(len(latencies) / wall, 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="tiny",
                        help="tiny (default), vit_b, vit_l, vit_h, or SAM 2.1 hiera_t ... hiera_l; random weights")
    parser.add_argument("--size", default="192x256", help="frame HEIGHTxWIDTH (default 192x256)")
    parser.add_argument("--fps", type=float, default=30.0)
    parser.add_argument("--frames", type=int, default=300)
    parser.add_argument("--deadline-ms", type=float, default=33.0)
    parser.add_argument("--modes", nargs="+", default=["numpy", "gpu"], choices=MODES)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--json", help="save the table as JSON")
    args = parser.parse_args()
    size = tuple(int(v) for v in args.size.lower().split("x"))
    device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available() else
                          ("cpu" if args.device == "auto" else args.device))
    if args.model.startswith("hiera_"):  # SAM 2.1
        from sam2.sam2_image_predictor import SAM2ImagePredictor

        from samgpu_shim.tools.models import build_sam2

        predictor = SAM2ImagePredictor(build_sam2(args.model, device=device))
    else:
        from segment_anything import SamPredictor

        # tiny runs at the frame's own size on a CPU; the real models at 1024.
        image_size = max(size) if args.model == "tiny" else 1024
        predictor = SamPredictor(build_sam(args.model, device=device, image_size=image_size))
    rows = [run_mode(mode, predictor, args, size) for mode in args.modes]
    env = {"device": str(device), "device_name": torch.cuda.get_device_name(device) if device.type == "cuda"
           else platform.processor() or platform.machine(), "torch": torch.__version__, "model": args.model,
           "frame": list(size), "fps": args.fps, "frames": args.frames, "deadline_ms": args.deadline_ms}
    print(f"{env['model']} on {env['device_name']}, frames {size[0]}x{size[1]} at {args.fps:g}/s, "
          f"deadline {args.deadline_ms:g} ms")
    print(f"{'mode':<7} {'sent':>5} {'answered':>8} {'dropped':>7} {'late':>5} {'p50 ms':>8} {'p99 ms':>8} "
          f"{'per s':>7}")
    for r in rows:
        print(f"{r['mode']:<7} {r['frames_sent']:>5} {r['answered']:>8} {r['dropped']:>7} "
              f"{r['late_over_deadline']:>5} {r['e2e_p50_ms']:>8.2f} {r['e2e_p99_ms']:>8.2f} "
              f"{r['answered_per_s']:>7.1f}")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"environment": env, "rows": rows}, fh, indent=1)
        print(f"saved {args.json}")
    os._exit(0)  # daemon threads of the last loop: leave without waiting for them


if __name__ == "__main__":
    main()
