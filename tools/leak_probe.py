"""Graph mode's cache alone, without the IGT loop: is device memory flat once the cache is full?

One predictor (SAM 1, tiny widths by default), one 480x640 frame, graph mode
with a cache of ``--cache`` graphs, ``--signatures`` prompt shapes (1 to N
points, with and without ``mask_input``), prompted as the IGT soak does
(device tensors, the last result's low-res logits as ``mask_input``) or with
numpy prompts (``--host``). Each call prints one JSON line: captures,
evictions, ``memory_allocated`` / ``memory_reserved`` (MB) after a
synchronize, the same after ``gc.collect()`` (a difference means reference
cycles held device memory), and the private pools (CUDA graph pools) that
still hold allocated blocks. With ``--old`` the cache evicts as before the
fix (the entry is dropped, nothing released). At the end it lists, for the
private pools that belong to no cached graph, where their live blocks were
allocated (``--history`` records allocation stacks)::

    PYTHONPATH=. python tools/leak_probe.py --old --history
    PYTHONPATH=. python tools/leak_probe.py --history

Needs CUDA; a few seconds on an H100/H200.
"""

from __future__ import annotations

import argparse
import gc
import json
import sys
from collections import defaultdict
from typing import Any, Dict, List

import torch

MB = 2**20


def _old_evict(state: Any) -> None:
    """Eviction as it was before the fix (samgpu_shim 9c99020)."""
    from samgpu_shim import _config
    from samgpu_shim.gpu import graphs

    limit = _config.graph_cache_size()
    while sum(1 for v in state.graphs.values() if v is not graphs._FAILED) > limit:
        for old_key, old in state.graphs.items():
            if old is not graphs._FAILED:
                del state.graphs[old_key]
                graphs._counters["evictions"] += 1
                break


def _pools(cached: set) -> Dict[str, Any]:
    """Private pools with allocated blocks: how many, their bytes, those of no cached graph."""
    live: Dict[tuple, int] = defaultdict(int)
    for segment in torch.cuda.memory_snapshot():
        pool = tuple(segment.get("segment_pool_id") or (0, 0))
        if pool == (0, 0):
            continue
        for block in segment.get("blocks", []):
            if block.get("state") == "active_allocated":
                live[pool] += block["size"]
    orphans = {p: n for p, n in live.items() if p not in cached}
    return {"pools_live": len(live), "pools_mb": round(sum(live.values()) / MB, 2),
            "orphan_pools": len(orphans), "orphan_mb": round(sum(orphans.values()) / MB, 2)}


def _orphan_frames(cached: set, limit: int = 6) -> List[Dict[str, Any]]:
    """Where the live blocks of pools of no cached graph were allocated (needs --history)."""
    out = []
    for segment in torch.cuda.memory_snapshot():
        pool = tuple(segment.get("segment_pool_id") or (0, 0))
        if pool == (0, 0) or pool in cached:
            continue
        for block in segment.get("blocks", []):
            if block.get("state") != "active_allocated":
                continue
            frames = [f"{f.get('filename', '?').split('site-packages/')[-1]}:{f.get('line')} {f.get('name')}"
                      for f in block.get("frames", []) if ".py" in f.get("filename", "")]
            out.append({"pool": list(pool), "size": block["size"], "frames": frames[:12]})
            if len(out) >= limit:
                return out
    return out


def _cached_pools(predictor: Any) -> set:
    from samgpu_shim.gpu import graphs

    state = graphs._state_for(predictor)
    pools = set()
    for entry in state.graphs.values():
        if entry is not graphs._FAILED and entry.graph is not None:
            pools.add(tuple(entry.graph.pool()))
    return pools


def main(argv: List[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="tiny")
    parser.add_argument("--size", default="480x640")
    parser.add_argument("--signatures", type=int, default=30)
    parser.add_argument("--cache", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--host", action="store_true", help="numpy prompts (packed upload) instead of device tensors")
    parser.add_argument("--old", action="store_true", help="evict as before the fix")
    parser.add_argument("--history", action="store_true", help="record allocation stacks (slower)")
    parser.add_argument("--gc-each", action="store_true", help="gc.collect() after each call (default: at the end)")
    args = parser.parse_args(argv)

    import numpy as np
    from segment_anything import SamPredictor

    import samgpu_shim
    from samgpu_shim.gpu import graphs
    from samgpu_shim.tools.models import build_sam, synthetic_image

    if args.old:
        graphs._evict = _old_evict
    device = torch.device("cuda")
    if args.history:
        torch.cuda.memory._record_memory_history(max_entries=100000)
    samgpu_shim.configure(cuda_graphs=True, graph_cache_size=args.cache)
    h, w = (int(v) for v in args.size.split("x"))
    predictor = SamPredictor(build_sam(args.model, device=device))
    predictor.set_image(torch.from_numpy(synthetic_image(h, w, seed=1)).to(device))
    half = (args.signatures + 1) // 2
    signatures = [(n, mask) for mask in (False, True) for n in range(1, half + 1)][: args.signatures]
    rng = np.random.default_rng(0)
    logits = None
    gc.disable()  # as between the loop's automatic collections: only what refcounting frees is freed
    first = None
    for round_ in range(args.rounds):
        for n, mask in signatures:
            coords = np.column_stack([rng.uniform(8, w - 8, n), rng.uniform(8, h - 8, n)])
            labels = np.array([1] + [0] * (n - 1))
            if args.host:
                kw = {"point_coords": coords, "point_labels": labels,
                      "mask_input": None if (not mask or logits is None) else logits.cpu().numpy()}
            else:
                kw = {"point_coords": torch.as_tensor(coords, device=device),
                      "point_labels": torch.as_tensor(labels, dtype=torch.int, device=device),
                      "mask_input": logits if mask else None}
            masks, scores, low = predictor.predict(**kw, multimask_output=True)
            logits = low[:1]
            del masks, scores, low
            torch.cuda.synchronize()
            allocated = torch.cuda.memory_allocated(device)
            reserved = torch.cuda.memory_reserved(device)
            collected = gc.collect() if args.gc_each else 0
            after_gc = torch.cuda.memory_allocated(device)
            stats = samgpu_shim.graph_stats()
            row = {"round": round_, "points": n, "mask": mask, "cached": stats["cached_graphs"],
                   "captures": stats["captures"], "evictions": stats["evictions"],
                   "allocated_mb": round(allocated / MB, 2), "gc_objects": collected,
                   "after_gc_mb": round(after_gc / MB, 2), "reserved_mb": round(reserved / MB, 1),
                   **_pools(_cached_pools(predictor))}
            if first is None and stats["cached_graphs"] >= args.cache:
                first = after_gc
            print(json.dumps(row), flush=True)
    torch.cuda.synchronize()
    last = torch.cuda.memory_allocated(device)
    collected = gc.collect()
    torch.cuda.synchronize()
    last_gc = torch.cuda.memory_allocated(device)
    summary = {"summary": True, "old_eviction": args.old, "host_prompts": args.host, "gc_each": args.gc_each,
               "allocated_when_cache_full_mb": round((first or 0) / MB, 2), "allocated_at_end_mb": round(last / MB, 2),
               "growth_mb": round((last - (first or 0)) / MB, 2), "gc_objects_at_end": collected,
               "allocated_after_final_gc_mb": round(last_gc / MB, 2), **_pools(_cached_pools(predictor)),
               **samgpu_shim.graph_stats()}
    print(json.dumps(summary), flush=True)
    if args.history:
        for row in _orphan_frames(_cached_pools(predictor)):
            print(json.dumps(row), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
