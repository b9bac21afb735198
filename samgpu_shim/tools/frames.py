"""``samgpu-shim bench --frames``: the whole frame loop, upstream against the shim.

Per frame: a new frame, ``set_image``, one point prompt, the best mask's
statistics, a small JSON packet. Upstream gets numpy frames (PIL resize on
the host, blocking upload); the shim gets frames already on the GPU as uint8
tensors (a GPU decoder or camera pipeline) and is also run with the encoder
precision opt-ins. Quality is reported next to speed: the mask IoU of each
shim variant against upstream's masks, and the embedding difference.
"""

from __future__ import annotations

import time
from typing import Any, Callable, Dict, List

import numpy as np
import torch

from .. import _config
from ..syncs import count_cuda_syncs
from . import pipeline as _pipeline
from .bench import environment, pick_device, summary
from .models import build_sam, synthetic_image


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    union = np.logical_or(a, b).sum()
    return 1.0 if union == 0 else float(np.logical_and(a, b).sum() / union)


def run_model(model: str, device: torch.device, image_hw: tuple, frames: int) -> Dict[str, Any]:
    from segment_anything import SamPredictor

    import samgpu_shim

    original_set = samgpu_shim.get_original(SamPredictor, "set_image")
    original_predict = samgpu_shim.get_original(SamPredictor, "predict")
    predictor = SamPredictor(build_sam(model, device=device))
    h, w = image_hw
    host_frames = [synthetic_image(h, w, seed=s) for s in range(4)]
    device_frames = [torch.from_numpy(f).to(device) for f in host_frames]
    coords = np.array([[w // 2, h // 2]], dtype=np.float64)
    labels = np.array([1])

    def wait() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    def upstream(i: int) -> str:
        # Rolled back, so the encoder's relative-position gathers are
        # upstream's too (the patch is module-wide): a pure upstream baseline.
        _config.configure(as_numpy=True)
        try:
            original_set(predictor, host_frames[i % 4])
            masks, scores, _ = original_predict(predictor, coords, labels)
        finally:
            _config.configure(as_numpy=None)
        return _pipeline.packet_numpy(masks, scores)

    def shim(precision: str) -> Callable[[int], str]:
        def run(i: int) -> str:
            _config.configure(encoder_precision=precision)
            try:
                predictor.set_image(device_frames[i % 4])
            finally:
                _config.configure(encoder_precision=None)
            masks, scores, _ = predictor.predict(coords, labels)
            return _pipeline.packet_torch(masks, scores)

        return run

    paths: Dict[str, Callable[[int], str]] = {"upstream (numpy frame, PIL resize)": upstream,
                                              "shim, CUDA frame, fp32": shim("fp32")}
    if device.type == "cuda":
        paths["shim, CUDA frame, tf32"] = shim("tf32")
        paths["shim, CUDA frame, bf16 autocast"] = shim("bf16")

    # Quality against upstream on frame 0, before timing.
    _config.configure(as_numpy=True)
    try:
        original_set(predictor, host_frames[0])
    finally:
        _config.configure(as_numpy=None)
    ref_features = predictor.features.clone()
    ref_masks = original_predict(predictor, coords, labels)[0]
    quality = {}
    for name, run in list(paths.items())[1:]:
        run(0)
        masks = predictor.predict(coords, labels, as_numpy=True)[0]
        quality[name] = {
            "mask_iou_vs_upstream": round(float(np.mean([_iou(a, b) for a, b in zip(masks, ref_masks)])), 4),
            "embedding_max_abs_diff_vs_upstream": round(float((predictor.features - ref_features).abs().max()), 5),
        }
    syncs = {}
    for name, run in paths.items():
        for i in range(2):
            run(i)  # warm-up
        wait()
        if device.type == "cuda":
            syncs[name] = count_cuda_syncs(lambda run=run: run(1))[0]
    samples: Dict[str, List[float]] = {name: [] for name in paths}
    for i in range(frames):
        for name, run in paths.items():
            wait()
            t0 = time.perf_counter()
            run(i)
            samples[name].append((time.perf_counter() - t0) * 1e3)
    # set_image alone against the encoder alone, on the same frame, fp32.
    encoder_ms: List[float] = []
    set_image_ms: List[float] = []
    frame = device_frames[0]
    predictor.set_image(frame)
    encoder_input = predictor.model.preprocess(
        torch.nn.functional.interpolate(
            frame.permute(2, 0, 1)[None].float(), size=tuple(predictor.input_size), mode="bilinear",
            align_corners=False, antialias=True,
        ).round().clamp(0, 255)
    )
    with torch.no_grad():
        for _ in range(max(frames // 2, 3)):
            wait()
            t0 = time.perf_counter()
            predictor.model.image_encoder(encoder_input)
            wait()
            encoder_ms.append((time.perf_counter() - t0) * 1e3)
            t0 = time.perf_counter()
            predictor.set_image(frame)
            wait()
            set_image_ms.append((time.perf_counter() - t0) * 1e3)
    rows = []
    for name in paths:
        figures = summary(samples[name])
        rows.append({
            "path": name,
            "frames": frames,
            "syncs_per_frame": syncs.get(name),
            "fps": round(1e3 / figures["mean_ms"], 2),
            **figures,
            **quality.get(name, {}),
            "samples_ms": [round(s, 3) for s in samples[name]],
        })
    return {
        "model": model,
        "image_hw": list(image_hw),
        "encoder_alone_ms": summary(encoder_ms),
        "shim_set_image_fp32_ms": summary(set_image_ms),
        "rows": rows,
    }


def run(args: Any) -> Dict[str, Any]:
    device = pick_device(args.device)
    h, w = (int(v) for v in args.image.lower().split("x"))
    frames = args.calls if args.calls is not None else (40 if device.type == "cuda" else 5)
    return {
        "environment": environment(device),
        "results": [run_model(m, device, (h, w), frames) for m in args.model],
    }


def format_table(report: Dict[str, Any]) -> str:
    env = report["environment"]
    lines = [f"frame loop on {env['device']} ({env['device_name']}), torch {env['torch']}"]
    for result in report["results"]:
        lines.append("")
        lines.append(
            f"{result['model']}: frames {result['image_hw'][0]}x{result['image_hw'][1]}; fp32 p50: encoder alone "
            f"{result['encoder_alone_ms']['p50_ms']:.2f} ms, shim set_image(CUDA frame) "
            f"{result['shim_set_image_fp32_ms']['p50_ms']:.2f} ms"
        )
        lines.append(f"{'path':<36} {'syncs':>5} {'fps':>7} {'p50 ms':>8} {'p99 ms':>8} {'IoU':>7} {'emb diff':>9}")
        for r in result["rows"]:
            syncs = "-" if r["syncs_per_frame"] is None else str(r["syncs_per_frame"])
            iou = r.get("mask_iou_vs_upstream", "")
            diff = r.get("embedding_max_abs_diff_vs_upstream", "")
            lines.append(f"{r['path']:<36} {syncs:>5} {r['fps']:>7.2f} {r['p50_ms']:>8.2f} {r['p99_ms']:>8.2f} "
                         f"{iou!s:>7} {diff!s:>9}")
    return "\n".join(lines)
