"""``samgpu-shim soak``: many calls, memory sampled as they go.

Reports resident host memory, CUDA memory (allocated and reserved), pinned
host memory held by PyTorch's caching host allocator where this torch exposes
it, and the number of log handlers and cached graphs, every tenth of the run.
"""

from __future__ import annotations

import logging
import time
from typing import Any, Dict, List

import numpy as np
import torch

from .bench import environment, pick_device
from .models import build_sam, synthetic_image


def _rss_mb() -> float:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")


def _pinned_mb() -> float:
    stats = getattr(torch.cuda, "host_memory_stats", None)
    if stats is None or not torch.cuda.is_available():
        return float("nan")
    try:
        values = stats()
    except Exception:
        return float("nan")
    # The key's name has changed across torch releases; take the current
    # allocated bytes under whichever name this release uses.
    for key in ("allocated_bytes.all.current", "allocated_bytes.current"):
        if key in values:
            return values[key] / 2**20
    return float("nan")


def run(args: Any) -> Dict[str, Any]:
    from segment_anything import SamPredictor

    import samgpu_shim

    device = pick_device(args.device)
    h, w = (int(v) for v in args.image.lower().split("x"))
    predictor = SamPredictor(build_sam(args.model, device=device))
    predictor.set_image(synthetic_image(h, w))
    coords = np.array([[w // 2, h // 2], [w // 3, h // 3]], dtype=np.float64)
    labels = np.array([1, 0])
    if args.cuda_graphs:
        samgpu_shim.configure(cuda_graphs=True)
    kpi = logging.getLogger("samgpu_shim.kpi")
    samples: List[Dict[str, Any]] = []
    step = max(args.calls // 10, 1)
    started = time.perf_counter()
    try:
        for i in range(args.calls + 1):
            masks, scores, logits = predictor.predict(coords, labels)
            # Feed the best logits back, as a refinement loop would, on the device.
            predictor.predict(coords, labels, mask_input=logits[scores.argmax(dim=0, keepdim=True)])
            if i % step == 0:
                if device.type == "cuda":
                    torch.cuda.synchronize(device)
                samples.append(
                    {
                        "calls": 2 * i,
                        "seconds": round(time.perf_counter() - started, 2),
                        "rss_mb": round(_rss_mb(), 1),
                        "cuda_allocated_mb": round(torch.cuda.memory_allocated(device) / 2**20, 1)
                        if device.type == "cuda"
                        else None,
                        "cuda_reserved_mb": round(torch.cuda.memory_reserved(device) / 2**20, 1)
                        if device.type == "cuda"
                        else None,
                        "pinned_mb": round(_pinned_mb(), 3),
                        "kpi_handlers": len(kpi.handlers),
                        "cached_graphs": samgpu_shim.graph_stats()["cached_graphs"],
                    }
                )
    finally:
        if args.cuda_graphs:
            samgpu_shim.configure(cuda_graphs=None)
    return {
        "environment": environment(device),
        "model": args.model,
        "image_hw": [h, w],
        "cuda_graphs": bool(args.cuda_graphs),
        "samples": samples,
    }


def format_table(report: Dict[str, Any]) -> str:
    env = report["environment"]
    lines = [
        f"soak: {report['model']} on {env['device']} ({env['device_name']}), "
        f"graph mode {'on' if report['cuda_graphs'] else 'off'}",
        f"{'calls':>7} {'s':>7} {'rss MB':>8} {'cuda alloc MB':>14} {'cuda resv MB':>13} {'pinned MB':>10} "
        f"{'handlers':>8} {'graphs':>6}",
    ]
    for s in report["samples"]:
        lines.append(
            f"{s['calls']:>7} {s['seconds']:>7.1f} {s['rss_mb']:>8.1f} {str(s['cuda_allocated_mb']):>14} "
            f"{str(s['cuda_reserved_mb']):>13} {s['pinned_mb']:>10} {s['kpi_handlers']:>8} {s['cached_graphs']:>6}"
        )
    return "\n".join(lines)
