"""What the transfer guard costs GPU-native code: each mode against plain tensors.

One process, one predictor, the modes interleaved call by call (the order
rotates every round), the switch made outside the clock. Two workloads:

* ``frame``: ``predict`` (graph mode on CUDA) and the frame pipeline's
  statistics on the device with its one copy at the end
  (:func:`samgpu_shim.tools.pipeline.packet_torch`), the project's own loop;
* ``chain``: ``predict`` and a post-processing chain as code migrated to
  torch writes it (best mask, a dilation, the logits' probability map,
  area, box, a few comparisons), one ``to_numpy`` at the end.

Also counts the host syncs of a frame without its final copy in each mode
(zero is the target). Prints a table and writes every sample to JSON::

    python -m samgpu_shim.tools.guard_bench --model vit_h --calls 300 --out guard.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from typing import Any, Callable, Dict, List, Sequence

MODES = ("off", "allow", "log", "disallow")


def _percentile(samples: Sequence[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def migrated_chain(masks: Any, scores: Any, logits: Any) -> Dict[str, Any]:
    """A post-processing chain after migration to torch: everything on the device, one copy."""
    import samgpu_shim

    numbers = migrated_device_part(masks, scores, logits)
    return samgpu_shim.to_numpy({"numbers": numbers, "score": scores.max()})


def migrated_device_part(masks: Any, scores: Any, logits: Any) -> Any:
    """The device half of :func:`migrated_chain`: its numbers, still on the device."""
    import torch
    import torch.nn.functional as F

    index = scores.argmax(dim=0, keepdim=True)
    best = masks.index_select(0, index)[0]
    grown = F.max_pool2d(best[None, None].float(), 5, stride=1, padding=2)[0, 0] > 0
    ring = grown & ~best
    probability = torch.sigmoid(logits.index_select(0, index)[0])
    confident = (probability > 0.9).sum()
    rows = best.any(dim=1)
    cols = best.any(dim=0)
    area = best.sum()
    numbers = torch.stack([
        index[0].float(), scores.max(), area.float(), ring.sum().float(), confident.float(),
        rows.float().argmax().float(), cols.float().argmax().float(), probability.mean(),
    ])
    return numbers


def run(model: str, calls: int, warmup: int, height: int, width: int, device: str) -> Dict[str, Any]:
    import numpy as np
    import torch
    from segment_anything import SamPredictor

    import samgpu_shim
    from samgpu_shim.syncs import count_cuda_syncs
    from samgpu_shim.tools.models import build_sam, synthetic_image
    from samgpu_shim.tools.pipeline import packet_torch

    cuda = device.startswith("cuda")
    print(f"device: {torch.cuda.get_device_name(0) if cuda else 'cpu'}; building {model}...", flush=True)
    predictor = SamPredictor(build_sam(model, seed=0, device=device))
    predictor.set_image(synthetic_image(height, width, seed=1))
    points = np.array([[width * 0.4, height * 0.5]])
    labels = np.array([1])
    samgpu_shim.configure(cuda_graphs=cuda)
    sync = torch.cuda.synchronize if cuda else (lambda: None)

    def frame() -> Any:
        masks, scores, _ = predictor.predict(point_coords=points, point_labels=labels)
        return packet_torch(masks, scores)

    def chain() -> Any:
        return migrated_chain(*predictor.predict(point_coords=points, point_labels=labels))

    workloads: Dict[str, Callable[[], Any]] = {"frame": frame, "chain": chain}
    samples: Dict[str, Dict[str, List[float]]] = {w: {m: [] for m in MODES} for w in workloads}
    reference = {w: None for w in workloads}
    for name, fn in workloads.items():
        for mode in MODES:
            samgpu_shim.configure(transfer_guard=mode)
            for _ in range(warmup):
                out = fn()
            if reference[name] is None:
                reference[name] = json.dumps(out, default=samgpu_shim.json_default)
            elif json.dumps(out, default=samgpu_shim.json_default) != reference[name]:
                raise SystemExit(f"{name}: mode {mode} changed the result")
    clock = time.perf_counter
    for i in range(calls):
        order = MODES[i % len(MODES):] + MODES[:i % len(MODES)]
        for name, fn in workloads.items():
            for mode in order:
                samgpu_shim.configure(transfer_guard=mode)  # outside the clock
                sync()
                started = clock()
                fn()
                sync()
                samples[name][mode].append((clock() - started) * 1e3)
        if (i + 1) % max(1, calls // 10) == 0:
            print(f"  {i + 1}/{calls} rounds", flush=True)
    syncs: Dict[str, int] = {}
    if cuda:
        # prompts already on the device, statistics without the final copy:
        # any sync counted here would be the guard's
        device_points = torch.as_tensor(points, device=device, dtype=torch.float32)
        device_labels = torch.as_tensor(labels, device=device)
        for mode in MODES:
            samgpu_shim.configure(transfer_guard=mode)

            def device_only() -> Any:
                masks, scores, logits = predictor.predict(point_coords=device_points, point_labels=device_labels)
                best = masks.index_select(0, scores.argmax(dim=0, keepdim=True))[0]
                return best.sum() + logits.sigmoid().mean() + migrated_device_part(masks, scores, logits).sum()

            device_only()
            sync()
            syncs[mode] = count_cuda_syncs(device_only)[0]
    samgpu_shim.configure(transfer_guard=None, cuda_graphs=None)

    summary: Dict[str, Any] = {}
    noisy = False
    for name in workloads:
        base = statistics.median(samples[name]["off"])
        half = len(samples[name]["off"]) // 2
        drift = abs(statistics.median(samples[name]["off"][:half]) - statistics.median(samples[name]["off"][half:]))
        if base and drift / base > 0.05:
            noisy = True
        summary[name] = {
            mode: {
                "p50_ms": round(statistics.median(s), 4),
                "p99_ms": round(_percentile(s, 0.99), 4),
                "p50_vs_off_pct": round((statistics.median(s) / base - 1) * 100, 2),
            }
            for mode, s in samples[name].items()
        }
        summary[name]["off_p50_drift_pct"] = round(drift / base * 100, 2) if base else None
    return {
        "device": torch.cuda.get_device_name(0) if cuda else "cpu",
        "torch": torch.__version__,
        "numpy": np.__version__,
        "python": sys.version.split()[0],
        "model": model,
        "image_hw": [height, width],
        "graph_mode": cuda,
        "calls_per_mode": calls,
        "summary": summary,
        "syncs_without_final_copy": syncs,
        "noisy": noisy,
        "samples_ms": samples,
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m samgpu_shim.tools.guard_bench",
                                     description=__doc__.split("\n")[0])
    parser.add_argument("--model", default=None,
                        help="vit_h, vit_l, vit_b or tiny (default: vit_h on CUDA, tiny on CPU)")
    parser.add_argument("--calls", type=int, default=300, help="rounds; each times every mode once per workload")
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--size", default="1080x1920", help="HEIGHTxWIDTH of the synthetic image")
    parser.add_argument("--device", default=None)
    parser.add_argument("--out", default=None, help="JSON file for the samples and the summary")
    args = parser.parse_args(argv)
    try:
        height, width = (int(v) for v in args.size.lower().split("x"))
    except ValueError:
        parser.error(f"--size: expected HEIGHTxWIDTH, got {args.size!r}")
    if args.calls < 2:
        parser.error("--calls must be at least 2")
    import torch

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    model = args.model or ("vit_h" if device.startswith("cuda") else "tiny")
    result = run(model, args.calls, args.warmup, height, width, device)
    print(f"\n{result['device']}, {model}, {height}x{width}, graph mode {'on' if result['graph_mode'] else 'off'}, "
          f"{args.calls} calls per mode, interleaved")
    for name, rows in result["summary"].items():
        print(f"{name}: mode      p50 ms   p99 ms   p50 vs off")
        for mode in MODES:
            r = rows[mode]
            print(f"{'':7}{mode:9} {r['p50_ms']:7.3f}  {r['p99_ms']:7.3f}  {r['p50_vs_off_pct']:+6.2f}%")
    if result["syncs_without_final_copy"]:
        print("host syncs of a frame without its final copy:", result["syncs_without_final_copy"])
    if result["noisy"]:
        print("Noisy: the plain path's p50 moved by more than 5% between the halves of the run; rerun on a quiet "
              "machine before quoting these figures.")
    if args.out:
        with open(args.out, "w", encoding="utf-8") as f:
            json.dump(result, f, indent=1)
        print("written:", args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
