"""Time one replica's request path on this machine, without Ray or HTTP.

What a Serve replica does per request (``app.py``), called in a loop: decode
the JPEG (on the GPU where torchvision can), ``set_image``, ``predict``, the
packet and the packed mask on the device, one copy, the RLE, the JSON. GPU
mode against numpy mode (the fleet's rollback, ``SAMGPU_AS_NUMPY=1``, here
``configure(as_numpy=True)``), interleaved. A second loop sends 8 prompts per
frame, as batched requests on one frame share one ``set_image``::

    python examples/serve/bench_replica.py --model vit_h hiera_t --json serving.json
"""

from __future__ import annotations

import argparse
import io
import json
import platform
import sys
import time
from pathlib import Path
from typing import Any, Dict, List

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402
from PIL import Image  # noqa: E402
from segment import answer, as_arrays, decode_frame, make_predictor  # noqa: E402

import samgpu_shim  # noqa: E402
from samgpu_shim.tools.models import synthetic_image  # noqa: E402


def _jpeg(frame: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(frame).save(buffer, "JPEG", quality=90)
    return buffer.getvalue()


def run(model: str, requests: int, size: tuple) -> Dict[str, Any]:
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    predictor = make_predictor(model, 1024, device)
    frames = [_jpeg(synthetic_image(*size, seed=s)) for s in range(4)]
    h, w = size

    def wait() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize()

    def request(i: int, as_numpy: bool, per_frame: int = 1) -> str:
        samgpu_shim.configure(as_numpy=True if as_numpy else None)
        try:
            predictor.set_image(decode_frame(frames[i % 4], device))
            out = ""
            for k in range(per_frame):
                point = as_arrays({"point_coords": [[w // 2 + 7 * k, h // 2]], "point_labels": [1]})
                masks, scores, _ = predictor.predict(**point)
                out = json.dumps(answer(masks, scores))
            return out
        finally:
            samgpu_shim.configure(as_numpy=None)

    for i in range(3):
        request(i, False), request(i, True)
    rows = []
    for per_frame in (1, 8):
        samples: Dict[str, List[float]] = {"gpu": [], "numpy": []}
        for i in range(requests):
            for mode in ("gpu", "numpy"):
                wait()
                t0 = time.perf_counter()
                request(i, mode == "numpy", per_frame)
                samples[mode].append((time.perf_counter() - t0) * 1e3 / per_frame)
        for mode, values in samples.items():
            rows.append({
                "model": model, "mode": mode, "prompts_per_frame": per_frame, "requests": requests * per_frame,
                "p50_ms": round(float(np.percentile(values, 50)), 3),
                "p99_ms": round(float(np.percentile(values, 99)), 3),
                "requests_per_s": round(1e3 / float(np.mean(values)), 2),
            })
    return {"model": model, "rows": rows}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", nargs="+", default=["tiny"])
    parser.add_argument("--requests", type=int, default=100)
    parser.add_argument("--size", default="1080x1920", help="frame HEIGHTxWIDTH")
    parser.add_argument("--json")
    args = parser.parse_args()
    size = tuple(int(v) for v in args.size.lower().split("x"))
    results = [run(m, args.requests, size) for m in args.model]
    device = "cuda" if torch.cuda.is_available() else "cpu"
    env = {"device": device, "device_name": torch.cuda.get_device_name() if device == "cuda" else
           platform.processor() or platform.machine(), "torch": torch.__version__, "frame": list(size)}
    print(f"one replica's request path on {env['device_name']}, JPEG {size[0]}x{size[1]} frames")
    print(f"{'model':<8} {'mode':<6} {'prompts/frame':>13} {'p50 ms':>8} {'p99 ms':>8} {'req/s':>8}")
    for result in results:
        for r in result["rows"]:
            print(f"{r['model']:<8} {r['mode']:<6} {r['prompts_per_frame']:>13} {r['p50_ms']:>8.2f} "
                  f"{r['p99_ms']:>8.2f} {r['requests_per_s']:>8.1f}")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"environment": env, "results": results}, fh, indent=1)


if __name__ == "__main__":
    main()
